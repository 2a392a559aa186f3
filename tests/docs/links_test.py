"""tests/docs/links_test.py: every relative link in the project's Markdown reaches its target.

A link `[text](path)` must name a file or folder that exists, and `[text](path#anchor)` (or
`(#anchor)` within a page) a heading of that page, spelled as GitHub spells a heading's anchor
(lower case, punctuation but '-' and '_' dropped, spaces to '-', '-1', '-2' for repeats), or an
explicit `<a id=...>`/`<a name=...>`. Moving a section between chapters or renaming a heading
breaks such links silently; this finds them, each as FILE:LINE: what is wrong. Links to the web
(`http:`, `https:`, `mailto:`) are not followed. Checks the live source tree, found through this
script's runfiles link as docs_markers_test does (tagged "external": no stale verdict).
The self-test first proves the checker catches a missing file and a missing anchor.
"""

import os
import re
import sys
import tempfile
import unittest

LINK = re.compile(r"\]\(([^)\s]*)\)")
HEADING = re.compile(r"#{1,6}\s+(.*?)\s*#*\s*$")
EXPLICIT = re.compile(r'<a\s+(?:name|id)="([^"]+)"')


def slug(heading):
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path):
    found, seen, fenced = set(), {}, False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("```"):
                fenced = not fenced
            if fenced:
                continue
            m = HEADING.match(line)
            if m:
                base = slug(m.group(1))
                n = seen.get(base, 0)
                seen[base] = n + 1
                found.add(base if n == 0 else f"{base}-{n}")
            found.update(EXPLICIT.findall(line))
    return found


def broken_links(root, pages):
    """FILE:LINE: what is wrong, for every bad relative link in `pages` (paths under root)."""
    problems, cache = [], {}
    for page in pages:
        fenced = False
        with open(os.path.join(root, page), encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.startswith("```"):
                    fenced = not fenced
                if fenced:
                    continue
                for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                    if re.match(r"[a-z]+:", target):
                        continue
                    path, _, anchor = target.partition("#")
                    where = os.path.normpath(os.path.join(os.path.dirname(os.path.join(root, page)), path)) \
                        if path else os.path.join(root, page)
                    if not os.path.exists(where):
                        problems.append(f"{page}:{number}: link to '{path}', which does not exist")
                        continue
                    if anchor and where.endswith(".md"):
                        if where not in cache:
                            cache[where] = anchors(where)
                        if anchor not in cache[where]:
                            problems.append(f"{page}:{number}: link to '{target}': "
                                            f"{os.path.relpath(where, root)} has no heading '#{anchor}'")
    return problems


def markdown_pages(root):
    pages = []
    for top, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith((".", "bazel-")) and d != "third_party"]
        pages += [os.path.relpath(os.path.join(top, f), root) for f in files if f.endswith(".md")]
    return sorted(pages)


class LinksTest(unittest.TestCase):
    def test_the_checker_finds_a_missing_file_and_a_missing_anchor(self):
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "a.md"), "w") as f:
                f.write("# Title\n## The `s1_free` path, twice\n## Again\n## Again\n"
                        "[ok](#the-s1_free-path-twice) [ok](#again-1) [ok](b.md#b)\n"
                        "[gone](c.md) [bad](#nowhere)\n```\n[in code](#x)\n```\n[web](https://x.org/#y)\n")
            with open(os.path.join(d, "b.md"), "w") as f:
                f.write('<a id="b"></a>\n')
            self.assertEqual(broken_links(d, ["a.md"]),
                             ["a.md:6: link to 'c.md', which does not exist",
                              "a.md:6: link to '#nowhere': a.md has no heading '#nowhere'"])

    def test_every_link_of_the_project_reaches_its_target(self):
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
        self.assertTrue(os.path.isfile(os.path.join(root, "WORKSPACE")), f"no source tree at {root}")
        pages = markdown_pages(root)
        self.assertIn("docs/stage1_brk.md", pages)
        problems = broken_links(root, pages)
        self.assertEqual(problems, [], "\n" + "\n".join(problems))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
