"""tools/labkit/docs_commands_test.py: every shell block a chapter shows is run here, or the
chapter says why it cannot be. A ```sh (or bash, console) block in README.md or docs/*.md must
follow one of these lines:
    <!-- docs-commands: run -->               the test runs the block with bash
    <!-- docs-commands: not run: REASON -->   and the reason, e.g. the test that covers it
A run block executes in a scratch directory that holds links to traces/ and tools/diff/testdata/
(its parent is scratch too), with `tools/run` meaning the stage diff (argv[1], what tools/run
execs after its build) and `tools/lab` this tree's lab script, so it must not need Bazel; it must
exit 0. `tools/lab handout` runs with --no-times: the reference's times it ships are measured
with Bazel (lab_handout_hang_test covers them).
A plain ``` block that shows what a command prints (a heap as the tools draw it) may follow
    <!-- docs-output: COMMAND -->
and COMMAND's output must then hold the block's lines in their order (whitespace runs count as
one space; a line `...` stands for lines left out). `tools/run --demo` is the demo (argv[2]),
`tools/run` the stage diff; COMMAND runs from the source root without address randomisation."""

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diff"))
from fixed_layout import fixed_layout  # noqa: E402

ROOT = lab.REFERENCE
STAGEDIFF = None
DEMO = None
FENCE = re.compile(r"^```(sh|bash|console)\s*$")
MARK = re.compile(r"^<!-- docs-commands: (run|not run: (.+)) -->$")
OUTPUT = re.compile(r"^<!-- docs-output: (.+) -->$")


def blocks(text):
    """[(line number, marker match or None, block text)] of every shell block."""
    lines = text.split("\n")
    out = []
    i = 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            start = i
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            mark = MARK.match(lines[start - 1].strip()) if start > 0 else None
            out.append((start + 1, mark, "\n".join(lines[start + 1:j])))
            i = j
        i += 1
    return out


def excerpts(text):
    """[(line number, command, [lines])] of every ``` block after a docs-output line."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines[:-1]):
        mark = OUTPUT.match(line.strip())
        if mark and lines[i + 1].startswith("```"):
            j = i + 2
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append((i + 2, mark.group(1), [" ".join(l.split()) for l in lines[i + 2:j] if l.strip()]))
    return out


def missing_from(output, shown):
    """The first line of `shown` that `output` does not hold in order ('...' skips), or None."""
    printed = [" ".join(l.split()) for l in output.split("\n")]
    at = 0
    for line in shown:
        if line == "...":
            continue
        try:
            at = printed.index(line, at) + 1
        except ValueError:
            return line
    return None


def documents():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


class DocsCommandsTest(unittest.TestCase):
    def test_every_shell_block_is_run_or_says_why_not(self):
        missing = []
        for doc in documents():
            for line, mark, _ in blocks(doc.read_text()):
                if not mark:
                    missing.append(f"{doc.relative_to(ROOT)}:{line}: a shell block with no "
                                   "'<!-- docs-commands: run -->' or '<!-- docs-commands: not run: REASON -->' before it")
        self.assertEqual(missing, [], "\n".join(missing))

    def test_the_runnable_blocks_run(self):
        ran = 0
        for doc in documents():
            for line, mark, text in blocks(doc.read_text()):
                if not mark or mark.group(1) != "run":
                    continue
                with self.subTest(block=f"{doc.relative_to(ROOT)}:{line}"):
                    self.assertNotIn("bazel", text, "a block that runs Bazel cannot run inside a test")
                    work = Path(tempfile.mkdtemp(prefix="docs-commands-"))
                    try:
                        repo = work / "repo"             # ../ of a command stays inside work
                        (repo / "tools" / "diff").mkdir(parents=True)
                        os.symlink(ROOT / "traces", repo / "traces")
                        os.symlink(ROOT / "tools" / "diff" / "testdata", repo / "tools" / "diff" / "testdata")
                        script = re.sub(r"(?<![\w/.])tools/run\b", f"'{STAGEDIFF}'", text)
                        script = re.sub(r"(?<![\w/.])tools/lab handout\b", "tools/lab handout --no-times", script)
                        script = re.sub(r"(?<![\w/.])tools/lab\b", f"'{sys.executable}' '{ROOT / 'tools/labkit/lab.py'}'", script)
                        r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo,
                                           capture_output=True, text=True, timeout=600)
                        self.assertEqual(r.returncode, 0, f"{doc.name}:{line}:\n{script}\n{r.stderr[-2000:]}")
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
                ran += 1
        self.assertGreater(ran, 0)

    def test_every_output_excerpt_is_what_its_command_prints(self):
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("a lab handout's stages stop at their parts' stubs")
        seen = 0
        for doc in documents():
            for line, command, shown in excerpts(doc.read_text()):
                with self.subTest(block=f"{doc.relative_to(ROOT)}:{line}"):
                    argv = shlex.split(command)
                    self.assertEqual(argv[0], "tools/run", f"{doc.name}:{line}: only tools/run commands are checked")
                    argv = [DEMO] + argv[2:] if argv[1:2] == ["--demo"] else [STAGEDIFF] + argv[1:]
                    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=fixed_layout)
                    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
                    lost = missing_from(r.stdout, shown)
                    self.assertIsNone(lost, f"{doc.name}:{line}: `{command}` no longer prints (in this order): {lost}")
                seen += 1
        self.assertGreater(seen, 0)

    def test_every_picture_is_shown_and_regenerated_by_tools_pictures(self):
        # docs/pictures/ holds what tools/pictures writes (tools/diff/pictures.py names each file):
        # each is shown by a document, and each picture a document shows is one of them; beside
        # them, shown.txt records what each shows (pictures_test compares it).
        shown = set()
        for doc in documents():
            for name in re.findall(r"!\[[^\]]*\]\(pictures/([^)]+)\)", doc.read_text()):
                shown.add(name)
        made = set(re.findall(r'^    \("([\w.-]+\.png)"', (ROOT / "tools/diff/pictures.py").read_text(), re.M))
        files = {p.name for p in (ROOT / "docs" / "pictures").iterdir()} - {"shown.txt"}
        self.assertTrue((ROOT / "docs" / "pictures" / "shown.txt").is_file())
        self.assertTrue(made)
        self.assertEqual(sorted(files - shown), [], "pictures no document shows")
        self.assertEqual(sorted(shown - files), [], "pictures a document shows that do not exist")
        self.assertEqual(sorted(files ^ made), [], "pictures tools/pictures does not write, or writes but are not kept")

    def test_the_readme_names_the_packages_tools_setup_installs(self):
        # README's "Two commands" lists what tools/setup installs; a package added to the script
        # and not to the list (gdb was) leaves a reader unsure what a machine needs.
        script = (ROOT / "tools" / "setup").read_text()
        array = re.search(r"^packages=\(([^)]*)\)", script, re.M)
        self.assertIsNotNone(array, "tools/setup has no packages=(...) array")
        readme = " ".join((ROOT / "README.md").read_text().split())
        listed = re.search(r"installs any missing package of `([^`]+)`", readme)
        self.assertIsNotNone(listed, "README.md does not list tools/setup's packages")
        self.assertEqual(listed.group(1).split(), array.group(1).split())

    def test_an_excerpt_is_read_in_order_with_gaps(self):
        text = "<!-- docs-output: tools/run --demo -->\n```\n  a   1\n...\nc 3\n```\n"
        ((line, command, shown),) = excerpts(text)
        self.assertEqual((line, command, shown), (2, "tools/run --demo", ["a 1", "...", "c 3"]))
        self.assertIsNone(missing_from("a 1\nb 2\nc   3\n", shown))
        self.assertEqual(missing_from("c 3\na 1\n", shown), "c 3")   # out of order
        self.assertEqual(missing_from("a 1\nc 4\n", shown), "c 3")

    def test_the_reader_needs_the_marker_on_the_line_before(self):
        text = "<!-- docs-commands: not run: needs Bazel -->\n```sh\nbazel test //...\n```\n\n```sh\nls\n```\n"
        found = blocks(text)
        self.assertEqual(found[0][1].group(2), "needs Bazel")
        self.assertIsNone(found[1][1])


if __name__ == "__main__":
    STAGEDIFF = str(Path(sys.argv.pop(1)).resolve())
    DEMO = str(Path(sys.argv.pop(1)).resolve())
    unittest.main()
