"""tools/labkit/answers_test.py: every expected figure in the answer keys (docs/answers/*.md)
is what its command prints. An answer key holds ```check blocks: `$ stagediff ARGS` lines, each
followed by lines its output must contain (whitespace runs count as one space). Only the stage
diff runs here (argv[1], this test's data), from the source root, so the figures stay cheap. It runs
with address-space layout randomisation off (as `setarch -R` does): a few stage 2 footprints move
with where the kernel places a mapping (the ring's classic-geometry final footprint read 476.9 KiB
instead of 472.9 KiB in 2 of 300 runs), and a check must not fail by chance."""

import re
import shlex
import subprocess
import sys
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "diff"))
from fixed_layout import ADDR_NO_RANDOMIZE, fixed_layout  # noqa: E402

ROOT = lab.REFERENCE
STAGEDIFF = None
BLOCK = re.compile(r"^```check\n(.*?)^```", re.S | re.M)


def checks(text):
    """[(command, [expected lines])] of every check block in text."""
    out = []
    for block in BLOCK.findall(text):
        for line in block.strip().split("\n"):
            if line.startswith("$ "):
                out.append((line[2:], []))
            elif out and line.strip():
                out[-1][1].append(" ".join(line.split()))
    return out


class AnswersTest(unittest.TestCase):
    def test_every_answer_key_figure_comes_from_its_command(self):
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("a lab handout holds no answer keys")
        keys = sorted((ROOT / "docs" / "answers").glob("*.md"))
        self.assertTrue(keys)
        ran = 0
        for key in keys:
            for command, expected in checks(key.read_text()):
                with self.subTest(key=key.name, command=command):
                    argv = shlex.split(command)
                    self.assertEqual(argv[0], "stagediff", f"{key.name}: only stagediff commands are checked")
                    r = subprocess.run([STAGEDIFF] + argv[1:], cwd=ROOT, capture_output=True, text=True, timeout=300,
                                       preexec_fn=fixed_layout)
                    self.assertEqual(r.returncode, 0, r.stderr)
                    printed = {" ".join(l.split()) for l in r.stdout.split("\n")}
                    for line in expected:
                        self.assertTrue(any(line in p for p in printed), f"{command}: no line with '{line}'")
                    ran += 1
        self.assertGreater(ran, 0)

    def test_the_commands_run_without_address_randomisation(self):
        r = subprocess.run(["cat", "/proc/self/personality"], capture_output=True, text=True, preexec_fn=fixed_layout)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(int(r.stdout, 16) & ADDR_NO_RANDOMIZE, r.stdout)

    def test_the_block_reader_takes_commands_and_expectations(self):
        text = "x\n```check\n$ stagediff --a\nutilisation   80.8%\n$ stagediff --b\n```\n"
        self.assertEqual(checks(text), [("stagediff --a", ["utilisation 80.8%"]), ("stagediff --b", [])])


if __name__ == "__main__":
    STAGEDIFF = str(Path(sys.argv.pop(1)).resolve())
    unittest.main()
