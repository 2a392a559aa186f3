"""tools/labkit/lab_test.py: the course kit's cheap checks, run against the live source tree
(found through this file's runfiles link, like tests/docs): the lab markers agree with
parts.json and the chapters, the checker catches broken markers, a handout blanks exactly the
chosen parts and leaves the answers out, and the trace set regenerates byte for byte."""

import contextlib
import inspect
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest
from unittest import mock
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402

ROOT = lab.REFERENCE


class LabTest(unittest.TestCase):
    def setUp(self):
        self.table = lab.load_table(ROOT)
        self.tmp = Path(tempfile.mkdtemp(prefix="lab-test-"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_the_source_tree_has_consistent_lab_parts(self):
        self.assertEqual(lab.check(ROOT, self.table), [])
        for stage in self.table["stages"]:
            self.assertGreaterEqual(len(lab.parts_of(self.table, stage)), 3)

    def fake_tree(self, code, chapter, tests=({"target": "//t:t"},), shared=None, gates=("//t:t",)):
        """check() of a stage 1 of parts S1.a, S1.b, S1.c in stage1_brk/a.cc; tests: every part's,
        or {letter: that part's}; shared: the stage's "shared" list."""
        (self.tmp / "stage1_brk").mkdir(exist_ok=True)
        (self.tmp / "docs").mkdir(exist_ok=True)
        (self.tmp / "stage1_brk" / "a.cc").write_text(code)
        (self.tmp / "docs" / "stage1_brk.md").write_text(chapter)
        table = {"stages": {"1": {"folder": "stage1_brk", "chapter": "docs/stage1_brk.md", "gates": list(gates)}},
                 "parts": [dict(name=f"S1.{n}", stage=1, file="stage1_brk/a.cc", statement="s",
                                tests=list(tests[n] if isinstance(tests, dict) else tests)) for n in ("a", "b", "c")]}
        if shared is not None:
            table["stages"]["1"]["shared"] = shared
        return lab.check(self.tmp, table, json.dumps(table, indent=1))   # its problems' lines: this text's

    def test_the_checker_names_every_broken_marker(self):
        code = ("// [lab S1.a begin]\n// [lab S1.a end]\n// [lab S1.b begin]\n// [lab S1.c begin]\n"
                "// [lab S1.c end]\n// [lab S1.d end]\n")
        problems = "\n".join(self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.x]"))
        self.assertIn("[lab S1.c begin] inside part S1.b", problems)
        self.assertIn("[lab S1.d end] without its begin", problems)
        self.assertIn("[lab S1.b begin] is never ended", problems)
        self.assertIn("never cites [lab S1.c]", problems)
        self.assertIn("cites [lab S1.x], not a part of stage 1", problems)

    def test_broken_or_missing_markers_are_named_by_line(self):
        # What the grade's verdict and `tools/lab test` say of a part whose code cannot be
        # taken from between its markers.
        code = ("// [lab S1.a begin]\nint a();\n// [lab S1.a end]\n// [lab S1.b begin]\nint b();\n"
                "// [lab S1.a copy begin]\n// [lab S1.a copy end]\n")
        self.fake_tree(code, "")
        table = {"stages": {"1": {"folder": "stage1_brk"}}, "parts": []}
        found, problems = lab.scan(self.tmp, table)
        part = lambda n: {"name": n, "file": "stage1_brk/a.cc"}
        self.assertEqual(lab.marker_trouble(part("S1.a"), found, problems, 1), "")
        self.assertEqual(lab.marker_trouble(part("S1.b"), found, problems, 1),
                         "stage1_brk/a.cc:6: [lab S1.a copy begin] inside part S1.b; "
                         "stage1_brk/a.cc:4: [lab S1.b begin] is never ended")
        self.assertEqual(lab.marker_trouble(part("S1.c"), found, problems, 1),
                         "no [lab S1.c begin] and [lab S1.c end] in stage1_brk/a.cc")
        self.assertIn("1 region(s) between [lab S1.a begin] and end in stage1_brk/a.cc, the reference has 2 "
                      "(a tree handed out at another commit?", lab.marker_trouble(part("S1.a"), found, problems, 2))

    def test_a_helper_only_lab_parts_call_must_be_maybe_unused(self):
        # A part written without the helper would leave it unused: -Werror fails the grading
        # build, while the handout (its stub silences the warning) built (stage2_pools/pool.cc's
        # link_back did so to a part that linked the pool by hand).
        code = ("namespace {\nvoid helper(int x) { (void)x; }\n[[maybe_unused]] void kept() {}\n"
                "template <typename F>\nvoid generic(F f) { f(); }\nvoid shared() {}\n}  // namespace\n"
                "void outside() { shared(); }\n"
                + "".join(f"// [lab S1.{n} begin]\nvoid {n}() {{ helper(1); kept(); generic([] {{}}); shared(); }}\n"
                          f"// [lab S1.{n} end]\n" for n in "abc"))
        problems = self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.c]")
        self.assertEqual(problems, ["stage1_brk/a.cc:2: helper is called only from lab parts' code: mark it "
                                    "[[maybe_unused]] (a part written without it fails to build in grading)"])

    def test_a_consistent_fake_tree_passes(self):
        code = "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "abc")
        self.assertEqual(self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.c]"), [])

    def test_a_filter_that_matches_no_test_case_is_named(self):
        # doctest runs no case for a filter that matches none and exits 0: a part judged by such
        # a filter (a test case renamed since) would pass whatever it holds, even its stub.
        code = "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "abc")
        (self.tmp / "t").mkdir()
        (self.tmp / "t" / "t_test.cc").write_text('TEST_CASE("free coalesces with both neighbours") {}\n'
                                                   'TEST_CASE_FIXTURE(Heap, "Realloc shrinks in place") {}\n')
        problems = self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.c]",
                                  tests={"a": [{"target": "//t:t", "cases": "*coalesces*,*gives the break back*"}],
                                         "b": [{"target": "//t:t", "cases": "*realloc*"}], "c": []})
        # FILE:LINE of the part's "name" in the table as written (fake_tree's: json.dumps(indent=1)).
        self.assertEqual(problems, ["tools/labkit/parts.json:13: part S1.a: filter '*gives the break back*' of //t:t "
                                    "matches no test case in t/*.cc (doctest would run none and pass)",
                                    "tools/labkit/parts.json:37: part S1.c needs a statement and the tests that judge it"])

    def test_filters_are_read_and_matched_as_doctest_does(self):
        # doctest splits --test-case at commas a backslash does not escape, drops empty items,
        # and knows only * and ?, case ignored: '[' is a character like any other (fnmatch read
        # '*[full]*' as "has an f, a u or an l").
        self.assertEqual(lab.doctest_filters(r"*a*,b\,c,,d\\e,"), ["*a*", "b,c", "d\\e"])
        self.assertTrue(lab.doctest_matches("a pool [full] goes back", "*[FULL]*"))
        self.assertFalse(lab.doctest_matches("a new pool", "*[full]*"))
        self.assertTrue(lab.doctest_matches("Realloc, in place", "realloc? in*"))
        self.assertFalse(lab.doctest_matches("realloc", "realloc?"))
        self.assertEqual(lab.selected(["x", "y"], ","), ["x", "y"])   # no filter: doctest runs every case
        # A case may be named by a constant of its file (tests/threads.cc's kFreshCase).
        self.assertEqual(lab.test_cases_in('constexpr char kA[] = "a, b";\nconstexpr const char* kB = "c";\n'
                                           'TEST_CASE(kA) {}\nTEST_CASE_FIXTURE(F, kB) {}\nTEST_CASE("d\\"e") {}\n'),
                         ["a, b", "c", 'd"e'])

    def test_a_case_two_parts_select_is_named_unless_shared(self):
        # A case is one part's own: last session S2.usedpools's '*new pool*' also chose
        # S2.arena_return's 'usable arenas are kept fullest first and new pools come from the
        # fullest', so a wrong arena_take_back_pool failed S2.usedpools's test too (088ae8a).
        code = "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "abc")
        chapter = "[lab S1.a] [lab S1.b] [lab S1.c]"
        (self.tmp / "t").mkdir()
        (self.tmp / "t" / "t_test.cc").write_text(
            'TEST_CASE("a new pool threads only the blocks it hands out") {}\n'
            'TEST_CASE("usable arenas are kept fullest first and new pools come from the fullest") {}\n'
            'TEST_CASE("a pool [full] goes back, then empty") {}\n'
            'TEST_CASE_FIXTURE(Heap, "Realloc, in place") {}\n')
        tests = {"a": [{"target": "//t:t", "cases": "*new pool*"}],
                 "b": [{"target": "//t:t", "cases": "*fullest first*,*[full]*"}],
                 "c": [{"target": "//t:t", "cases": "realloc\\, in place"}]}
        overlap = ("tools/labkit/parts.json:3: //t:t's case 'usable arenas are kept fullest first and new pools come "
                   "from the fullest' is selected by S1.a, S1.b: a case is one part's own (a wrong answer in one "
                   "would fail the other's test), so narrow a filter, or list the case in stage 1's \"shared\" with why")
        self.assertEqual(self.fake_tree(code, chapter, tests), [overlap])
        tests["a"] = [{"target": "//t:t", "cases": "*a new pool*"}]   # narrowed: each case has one part
        self.assertEqual(self.fake_tree(code, chapter, tests), [])
        tests["a"] = [{"target": "//t:t"}]   # no filter: every case of the target, each now two parts'
        self.assertEqual(len(self.fake_tree(code, chapter, tests)), 3)
        share = [{"target": "//t:t", "cases": "*fullest*,*[full]*,realloc*", "why": "S1.a runs them all"}]
        self.assertEqual(self.fake_tree(code, chapter, tests, share), [])
        share = [{"target": "//t:t", "why": " "}, {"target": "//u:u", "cases": "*", "why": "w"},
                 {"target": "//t:v", "why": "w"}]
        table_gates = ["//t:t", "//t:v"]
        self.assertEqual(self.fake_tree(code, chapter, tests, share, table_gates), [
            "tools/labkit/parts.json:3: stage 1's shared //t:t: says no why (a case shared on purpose says what "
            "every part it judges does in it)",
            "tools/labkit/parts.json:3: stage 1's shared //u:u '*': not a gate of stage 1",
            "tools/labkit/parts.json:3: stage 1's shared //t:v: no part of stage 1 is judged by it, so it shares nothing",
            "tools/labkit/parts.json:3: stage 1's shared //t:t: lists 'a new pool threads only the blocks it hands "
            "out', which S1.a alone selects: share no more than two parts select"])

    def test_a_copy_of_an_answer_must_be_listed(self):
        code = "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "abc")
        code += "// [lab S1.a copy begin]\nint a2();\n// [lab S1.a copy end]\n"
        self.assertEqual(self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.c]"),
                         ["stage1_brk/a.cc:10: part S1.a copy is not in tools/labkit/parts.json"])

    def test_a_copy_listed_wrong_is_named_at_its_line(self):
        # parts.json's problems said "tools/labkit/parts.json: ..." with no line; a copy's is its
        # key's, in its part's "copies".
        code = "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "abc")
        code += "// [lab S1.b copy begin]\nint b2();\n// [lab S1.b copy end]\n"
        (self.tmp / "stage1_brk").mkdir()
        (self.tmp / "docs").mkdir()
        (self.tmp / "stage1_brk" / "a.cc").write_text(code)
        (self.tmp / "docs" / "stage1_brk.md").write_text("[lab S1.a] [lab S1.b] [lab S1.c]")
        table = {"stages": {"1": {"folder": "stage1_brk", "chapter": "docs/stage1_brk.md", "gates": ["//t:t"],
                                  "copy_tests_tag": "t"}},
                 "parts": [dict(name=f"S1.{n}", stage=1, file="stage1_brk/a.cc", statement="s",
                                tests=[{"target": "//t:t"}]) for n in "abc"]}
        table["parts"][0]["copies"] = {"S1.b copy": "stage1_brk/a.cc"}   # S1.b's copy, listed under S1.a
        text = json.dumps(table, indent=1)
        line = text.split("\n").index('    "S1.b copy": "stage1_brk/a.cc"') + 1
        self.assertEqual(lab.check(self.tmp, table, text),
                         [f"tools/labkit/parts.json:{line}: S1.b copy is listed as a copy of part S1.a"])

    def test_a_part_may_have_several_regions_each_stubbed(self):
        # A part whose answer spans two functions has a pair of markers around each: the
        # checker accepts both, a handout stubs both (the statement in the first), and a part
        # is written only once no region still makes its stub's call.
        code = ("int x;\n// [lab S1.a begin]\nint a1 = 1;\n// [lab S1.a end]\nint y;\n"
                "// [lab S1.a begin]\nint a2 = 2;\n// [lab S1.a end]\n"
                + "".join(f"// [lab S1.{n} begin]\nint {n}();\n// [lab S1.{n} end]\n" for n in "bc"))
        self.assertEqual(self.fake_tree(code, "[lab S1.a] [lab S1.b] [lab S1.c]"), [])
        table = {"stages": {"1": {"folder": "stage1_brk"}}, "parts": []}
        self.assertEqual(lab.regions(self.tmp, table, "S1.a"), [["int a1 = 1;"], ["int a2 = 2;"]])
        part = dict(name="S1.a", stage=1, file="stage1_brk/a.cc", statement="Do a.")
        blank = lab.stubs(part, "docs/stage1_brk.md", [["int a1 = 1;"], ["int a2 = 2;"]])
        self.assertEqual(len(blank), 2)
        self.assertIn("This part has 2 regions", " ".join(blank[0]))
        self.assertIn("Region 2 of 2 of S1.a", " ".join(blank[1]))
        lab.replace_bodies(self.tmp, table, {"S1.a": blank})
        text = (self.tmp / "stage1_brk" / "a.cc").read_text()
        self.assertEqual(text.count('edu_lab_not_implemented("S1.a");'), 2)
        self.assertEqual(text.count('#include "contract/lab.h"'), 1)   # the prelude, once
        self.assertNotIn("a1 = 1", text)
        self.assertNotIn("a2 = 2", text)
        stubbed = lab.regions(self.tmp, table, "S1.a")
        self.assertTrue(lab.holds_stub(stubbed, "S1.a"))
        self.assertTrue(lab.holds_stub([["int a1 = 1;"], stubbed[1]], "S1.a"))   # one region written
        self.assertFalse(lab.holds_stub([["int a1 = 1;"], ["int a2 = 2;"]], "S1.a"))
        self.assertEqual(lab.stubbed_regions([["int a1 = 1;"], stubbed[1]], "S1.a"), " in region 2 of 2")
        self.assertEqual(lab.stubbed_regions(stubbed, "S1.a"), " in regions 1, 2 of 2")
        self.assertEqual(lab.stubbed_regions([stubbed[0]], "S1.a"), "")   # one region: said already
        with self.assertRaises(lab.LabError):   # a region's markers gone: its code has no place
            lab.replace_bodies(self.tmp, table, {"S1.a": [["int a1 = 1;"]]})

    def test_s4_abandon_hands_out_collect_remote_everywhere_too(self):
        # Lab S4.abandon's answer spans heap_abandon and its step 2, collect_remote_everywhere
        # (a function of its own: reclaim_on_free calls it too); a stage 4 handout stubs both.
        found = lab.scan(ROOT, self.table)[0]
        self.assertEqual([rel for rel, _, _ in found["S4.abandon"]], ["stage4_threads/abandon.cc"] * 2)
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("in a handout the reference's own bodies may be stubs already")
        dest = self.tmp / "lab4"
        lab.handout(self.table, "4", dest, ["S4.abandon"])
        text = (dest / "stage4_threads" / "abandon.cc").read_text()
        self.assertEqual(text.count('edu_lab_not_implemented("S4.abandon");'), 2)
        helper = text[text.index("void collect_remote_everywhere("):text.index("void heap_abandon(")]
        self.assertIn('edu_lab_not_implemented("S4.abandon");', helper)
        self.assertNotIn("page_collect_remote(page)", helper)
        self.assertNotIn("heap_delayed_free(heap);", text)

    def test_a_handout_blanks_the_chosen_parts_and_leaves_the_answers_out(self):
        dest = self.tmp / "lab1"
        lab.handout(self.table, "1", dest, ["S1.coalesce", "S1.realloc"])
        self.assertFalse((dest / "docs" / "answers").exists())
        self.assertEqual(json.loads((dest / lab.HANDOUT_FILE).read_text())["parts"], ["S1.coalesce", "S1.realloc"])
        found = lab.scan(dest, self.table)[0]
        for name in ("S1.coalesce", "S1.realloc"):
            text = "\n".join(sum(lab.regions(dest, self.table, name, found), []))
            self.assertIn(f'db "{name}", 0', text)
            self.assertIn("call    edu_lab_not_implemented", text)
            self.assertNotIn("s1_list_remove", text)           # the reference body is gone
        self.assertEqual(lab.regions(dest, self.table, "S1.find_fit", found),
                         lab.regions(ROOT, self.table, "S1.find_fit"))
        # The chapter's markers inside a blanked body survive, so the docs still check.
        self.assertEqual([p for p in lab.check(dest, self.table)], [])

    def test_a_stub_keeps_each_marker_comment_whole(self):
        # A stub keeps the body's comments that carry a chapter marker; it kept only their first
        # line, so stage 2's handout read "[S2.13] An empty pool that last served this same class
        # keeps a valid header and", its sentence cut off, and "[S2.17] ... An arena".
        body = ["    // [S9.1] A first line that goes on",
                "    // to a second line.",
                "    if (x) return y;",
                "    // A comment of no marker.",
                "    z = 1;   // trailing ([S9.2])",
                "    // not kept: it follows code"]
        part = {"name": "S9.x", "file": "stage9/x.cc", "statement": "Do it."}
        lines = lab.stub(part, "docs/stage9.md", body)
        self.assertIn("    // to a second line.", lines)
        self.assertIn("    // trailing ([S9.2])", lines)
        self.assertNotIn("    // A comment of no marker.", lines)
        self.assertNotIn("    // not kept: it follows code", lines)
        dest = self.tmp / "lab2"
        lab.handout(self.table, "2", dest, ["S2.usedpools"])
        self.assertIn("block 0 becomes the only free block", (dest / "stage2_pools" / "pool.cc").read_text())

    def test_no_handout_holds_an_answer_of_its_parts_anywhere(self):
        # A handout of stage N holds no reference body of its parts in any file, nor the
        # reference's copies of them (stage 4's page_extend answers S3.extend, the twin's
        # coalesce answers S1.coalesce): each body's code lines, whitespace normalised, are
        # looked for in every file of the handout.
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("a lab handout holds no reference bodies to look for")
        found = lab.scan(ROOT, self.table)[0]

        def code(lines):   # the lines that are not blank and not only a comment
            return [l for l in lab.normalised(lines) if not l.startswith(("//", ";"))]

        def statement(line):   # a code line without its trailing comment, and long enough to tell
            bare = re.sub(r"\s+(//|;).*$", "", line).strip()
            return bare if len(bare) >= 30 else None

        # With --hide-later, a stage 1 handout holds no answer of any lab. Each region of a
        # part of several (S4.abandon) is looked for on its own.
        for stage, hide_later in [(s, False) for s in self.table["stages"]] + [("1", True)]:
            dest = self.tmp / f"lab{stage}{'-hidden' if hide_later else ''}"
            lab.handout(self.table, stage, dest, hide_later=hide_later)
            answers = {}
            for part in (self.table["parts"] if hide_later else lab.parts_of(self.table, stage)):
                for name in [part["name"], *lab.copies_of(part)]:
                    for i, lines in enumerate(lab.regions(ROOT, self.table, name, found)):
                        answers[f"{name} (region {i + 1})"] = "\n".join(code(lines))
                        self.assertGreaterEqual(answers[f"{name} (region {i + 1})"].count("\n"), 2, name)
            given = {}   # each long code line of the handout's sources: where it is
            for rel in lab.tree_files(dest):
                try:
                    lines = code((dest / rel).read_text().split("\n"))
                except UnicodeDecodeError:
                    continue
                text = "\n" + "\n".join(lines) + "\n"
                for name, answer in answers.items():
                    self.assertFalse("\n" + answer + "\n" in text,
                                     f"the stage {stage} handout's {rel} holds the answer of {name}")
                if Path(rel).suffix in lab.SOURCE_EXTENSIONS:
                    for line in filter(None, map(statement, lines)):
                        given.setdefault(line, rel)
            # Nor line by line: a region's long statements found elsewhere in the handout, more
            # than two of them, are its answer given away. abandoned_release_empty walked the
            # abandoned bitmap with four of heap_reclaim's long lines, so a student of
            # S4.reclaim could copy its second half; one or two (an index computed as the
            # stage's header does it) are how a stage says the same thing twice.
            for name, answer in answers.items():
                lines = set(filter(None, map(statement, answer.split("\n"))))
                copied = sorted(f"{l} ({given[l]})" for l in lines if l in given)
                self.assertLessEqual(len(copied), 2, f"the stage {stage} handout gives {name} away line by line:\n"
                                     + "\n".join(copied))

    def test_a_handout_leaves_out_only_the_tests_that_run_its_stubbed_copies(self):
        # A test that runs a stubbed copy of a part's answer (stage 4 in a stage 3 handout, the
        # twin in a stage 1 handout) could never pass in the handout: its .bazelrc filters the
        # copies' tag in the default configuration and in every configuration's own filter.
        reference = (ROOT / ".bazelrc").read_text()
        for stage, parts, tags in (("1", None, ["twin"]), ("2", None, []), ("3", None, ["stage4"]),
                                   ("3", ["S3.collect"], ["stage4"]), ("4", None, [])):
            dest = self.tmp / f"lab{stage}-{len(parts or [])}"
            lab.handout(self.table, stage, dest, parts)
            rc = (dest / ".bazelrc").read_text()
            self.assertEqual(json.loads((dest / lab.HANDOUT_FILE).read_text())["skipped_tags"], tags)
            # Grading runs stage 4's ThreadSanitizer gates, which `tools/lab test` does not: LAB.md says so.
            tsan = self.table["stages"][stage].get("tsan_gates", [])
            self.assertEqual(stage == "4", bool(tsan))
            self.assertEqual("bazel test --config=tsan " + " ".join(sorted(tsan)) in (dest / "LAB.md").read_text(), bool(tsan))
            if not tags:
                self.assertEqual(rc, reference, f"stage {stage}: no copies stubbed, nothing to leave out")
                self.assertNotIn("leaves out every test tagged", (dest / "LAB.md").read_text())
                continue
            filters = re.findall(r"^(\S+) .*--test_tag_filters=(\S+)", rc, re.M)
            self.assertEqual(len(filters), len(re.findall("--test_tag_filters=", reference)) + 1, rc)
            self.assertIn(("test", "-" + tags[0]), filters)
            for command, value in filters:
                self.assertIn("-" + tags[0], value.split(","), f"stage {stage}: {command} {value}")
            self.assertIn(f"leaves out every test tagged `{tags[0]}`", " ".join((dest / "LAB.md").read_text().split()))

    def test_hide_later_holds_back_the_later_labs_answers_and_their_tests(self):
        # --hide-later: a stage 2 handout stubs every part of stages 3 and 4 (and stage 4's copies
        # of lab 3's answers) and filters their tests; stage 1 stays whole.
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("in a handout the reference's own bodies may be stubs already")
        dest = self.tmp / "lab2"
        lab.handout(self.table, "2", dest, hide_later=True)
        found = lab.scan(dest, self.table)[0]
        for part in self.table["parts"]:
            text = lab.regions(dest, self.table, part["name"], found)
            if part["stage"] == 1:
                self.assertEqual(text, lab.regions(ROOT, self.table, part["name"]))
            else:   # a later lab's stub says so when reached (contract/lab.cc): "S3.extend later"
                for region in text:
                    self.assertTrue(lab.holds_stub([region], part["name"]), part["name"])
                    self.assertEqual(f'edu_lab_not_implemented("{part["name"]} later");' in "\n".join(region),
                                     part["stage"] > 2, part["name"])
            for copy in lab.copies_of(part):
                self.assertEqual(lab.holds_stub(lab.regions(dest, self.table, copy, found), copy), part["stage"] == 3, copy)
        rc = (dest / ".bazelrc").read_text()
        for command, value in re.findall(r"^(\S+) .*--test_tag_filters=(\S+)", rc, re.M):
            self.assertTrue({"-stage3", "-stage4"} <= set(value.split(",")), f"{command} {value}")
            self.assertNotIn("-stage2", value.split(","))
        self.assertEqual(json.loads((dest / lab.HANDOUT_FILE).read_text())["parts"],
                         [p["name"] for p in lab.parts_of(self.table, "2")])
        self.assertIn("`tools/run --stages=1,2`", " ".join((dest / "LAB.md").read_text().split()))
        # Without it, the later stages stay whole.
        lab.handout(self.table, "2", self.tmp / "plain")
        self.assertEqual(lab.regions(self.tmp / "plain", self.table, "S3.extend"), lab.regions(ROOT, self.table, "S3.extend"))

    def test_a_handout_is_never_written_inside_the_reference_tree(self):
        # Bazel would take its packages for the reference's: `bazel build //...` would fail.
        with self.assertRaisesRegex(lab.LabError, "inside the reference tree"):
            lab.handout(self.table, "1", ROOT / "lab1")
        self.assertFalse((ROOT / "lab1").exists())

    def test_a_handout_takes_only_what_git_tracks(self):
        # A teacher's untracked notes beside the reference (worked answers in ./solutions)
        # went into every handout: it copied Git's untracked files too.
        if not (ROOT / ".git").exists():
            self.skipTest("the reference is not a Git checkout (a handout): nothing is untracked")
        ref = self.tmp / "reference"
        lab.copy_tree(ROOT, ref, untracked=False)
        for args in (["init", "-q"], ["add", "-A"]):
            subprocess.run(["git", "-C", str(ref), *args], check=True)
        (ref / "solutions").mkdir()
        (ref / "solutions" / "coalesce.asm").write_text("; the teacher's answer\n")
        dest, out = self.tmp / "lab1", io.StringIO()
        saved, lab.REFERENCE = lab.REFERENCE, ref
        try:
            with contextlib.redirect_stdout(out):
                self.assertEqual(lab.main(["handout", "1", str(dest), "--no-times"]), 0)
        finally:
            lab.REFERENCE = saved
        self.assertTrue((dest / "stage1_brk" / "heap.asm").is_file())
        self.assertFalse((dest / "solutions").exists())
        self.assertIn("lab: left out 1 file Git does not track (solutions/coalesce.asm): "
                      "`git add` what students should get", out.getvalue())

    def test_a_malformed_table_is_named_by_file_line_and_column(self):
        (self.tmp / "tools" / "labkit").mkdir(parents=True)
        table = self.tmp / "tools" / "labkit" / "parts.json"
        table.write_text('{"stages": {},\n "parts": [,]}\n')
        with self.assertRaises(lab.LabError) as caught:
            lab.load_table(self.tmp)
        self.assertEqual(str(caught.exception), f"{table}:2:12: cannot read the table of lab parts: Expecting value")

    def test_a_table_lacking_a_key_is_named_by_line(self):
        # A part without its file (or a stage without its chapter) was a KeyError traceback.
        (self.tmp / "tools" / "labkit").mkdir(parents=True)
        table = self.tmp / "tools" / "labkit" / "parts.json"
        text = (ROOT / lab.TABLE).read_text()
        original = json.loads(text)
        part = original["parts"][1]
        for edit, line_text, message in [
                (lambda t: t["parts"][1].pop("file"), f'"name": "{part["name"]}"', f"part {part['name']} has no file"),
                (lambda t: t["parts"][1].update(stage=9), f'"name": "{part["name"]}"',
                 f"part {part['name']} is in stage 9, which \"stages\" does not list"),
                (lambda t: t["parts"][1]["tests"][0].pop("target"), f'"name": "{part["name"]}"',
                 f"part {part['name']} has a test with no target"),
                (lambda t: t["stages"]["2"].pop("chapter"), '"2": {', "stage 2 has no chapter")]:
            with self.subTest(message=message):
                changed = json.loads(text)
                edit(changed)
                written = json.dumps(changed, indent=1)
                table.write_text(written)
                line = next(i + 1 for i, l in enumerate(written.split("\n")) if line_text in l)
                with self.assertRaises(lab.LabError) as caught:
                    lab.load_table(self.tmp)
                self.assertEqual(str(caught.exception).split("\n")[1:], [f"  {table}:{line}: {message}"])

    def test_the_summary_names_every_option_of_each_command(self):
        # The summary `tools/lab --help` opens with left out test's --stage and grade's --traces,
        # --repetitions, --keep, --log and --reference-stagediff.
        summary, command = {}, None
        for line in lab.__doc__.split("\n")[1:]:
            if not line.startswith("  "):
                break
            if not line.startswith("   "):
                command = line.split()[0]
            summary.setdefault(command, set()).update(re.findall(r"\[(--[a-z-]+)", line))
        sub = next(a for a in lab.arguments()._actions if a.choices)
        self.assertEqual(set(summary), set(sub.choices))
        for command, parser in sub.choices.items():
            with self.subTest(command=command):
                options = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
                self.assertEqual(summary[command], options)

    def test_a_bad_option_is_refused_before_anything_is_made_or_graded(self):
        # `--parts=` (a shell variable left empty) made a handout of every part, `--parts=a,,b`
        # named an empty part, `--traces=` graded every trace, and `--repetitions=0` ran the whole
        # grade to fail in the trace step with an IndexError traceback.
        dest = self.tmp / "lab"
        (self.tmp / "a-file").write_text("")   # a handout's DIR that is a file was a NotADirectoryError traceback
        every = self.tmp / "every-stage"   # `handout all`: plain `grade` said "no stage all to grade"
        every.mkdir()
        (every / lab.HANDOUT_FILE).write_text(json.dumps({"stage": "all", "parts": []}))
        for argv, message in [
                (["handout", "1", str(dest), "--parts="], "--parts: no part named in ''"),
                (["handout", "1", str(dest), "--parts=S1.coalesce,,S1.realloc"],
                 "--parts: an empty name in 'S1.coalesce,,S1.realloc'"),
                (["grade", str(ROOT), "--parts="], "--parts: no part named in ''"),
                (["grade", str(ROOT), "--traces="], "--traces: no trace named in ''"),
                (["grade", str(ROOT), "--traces=short1-basic,"], "--traces: an empty name in 'short1-basic,'"),
                (["grade", str(ROOT), "--repetitions=0"], "--repetitions: 0: at least 1 run per trace and tree"),
                (["handout", "1", str(self.tmp / "a-file")], f"{self.tmp / 'a-file'}: exists and is not a folder"),
                (["handout", "1", str(self.tmp / "a-file" / "lab")], f"{self.tmp / 'a-file' / 'lab'}: Not a directory"),
                (["grade", str(ROOT), f"--json={self.tmp / 'no' / 'r.json'}"],
                 f"--json: cannot write into {self.tmp / 'no'}: no such folder"),
                (["grade", str(ROOT), f"--log={self.tmp / 'a-file'}/log"],
                 f"--log: cannot write into {self.tmp / 'a-file'}: no such folder"),
                (["grade", str(ROOT), f"--reference-stagediff={self.tmp / 'a-file'}"],
                 f"--reference-stagediff: {self.tmp / 'a-file'}: not an executable file"),
                (["grade", str(every)], f"{every} is a handout of every stage: grade one at a time, "
                 "--stage=1 or --stage=2 or --stage=3 or --stage=4"),
                # check of a folder that is no tree listed every part's markers and chapter as missing
                (["check", str(self.tmp / "a-file")], f"{self.tmp / 'a-file'}: not an edu-alloc tree (no WORKSPACE)")]:
            with self.subTest(argv=argv):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    self.assertEqual(lab.main(argv), 2)
                self.assertEqual(err.getvalue(), f"tools/lab: {message}\n")
                self.assertFalse(dest.exists())

    def test_lab_md_says_where_to_start_and_how_to_check_one_part(self):
        dest = self.tmp / "lab1"
        lab.handout(self.table, "1", dest)
        self.assertFalse((dest / lab.INCOMPLETE_FILE).exists())   # a whole handout is not marked
        self.assertEqual(lab.incomplete_note(dest), "")
        text = (dest / "LAB.md").read_text()
        flat = " ".join(text.split())
        self.assertIn(" ".join(self.table["stages"]["1"]["start"].split()), flat)
        self.assertIn("`tools/lab test NAME`", flat)
        rows = [l.split(" | ")[1] for l in text.split("\n") if re.match(r"\| \d+ \| S1\.", l)]
        self.assertEqual(rows, [p["name"] for p in lab.parts_of(self.table, "1")])
        self.assertEqual(rows[0], "S1.find_fit")   # every malloc reaches it: the first to write
        self.assertNotIn("This handout asks for", flat)
        lab.handout(self.table, "1", self.tmp / "realloc", ["S1.realloc"])
        flat = " ".join((self.tmp / "realloc" / "LAB.md").read_text().split())
        self.assertIn("asks for S1.realloc only: S1.find_fit, S1.coalesce are written already", flat)

    def test_lab_test_takes_its_limits_from_the_times_a_handout_ships(self):
        # `tools/lab test` in a handout gave every test PART_TEST_SECONDS; a handout now ships the
        # reference's times (ship_times: Bazel, so //tools/labkit:lab_handout_hang_test runs it).
        dest = self.tmp / "lab1"
        lab.handout(self.table, "1", dest)   # as before: no times, so 180 s, and LAB.md says so
        self.assertFalse((dest / lab.TIMES_FILE).exists())
        self.assertEqual(lab.shipped_times(dest), {})
        self.assertIn(f"`tools/lab test` stops a test still running after {lab.PART_TEST_SECONDS} s",
                      " ".join((dest / "LAB.md").read_text().split()))
        fit = "//stage1_brk:stage1_test *fit*"
        good = {"seconds": 0.5, "passed": True, "load": 1.0}
        runs = {fit: good, "//tests:stage1_battery *random*": {"seconds": "fast", "passed": True, "load": 1.0},
                "//tests:stage1_battery *realloc*": {"seconds": 1e9, "passed": 1, "load": 0}, "x": []}
        (dest / lab.TIMES_FILE).write_text(json.dumps({"machine": "m", "runs": runs}))
        self.assertEqual(lab.shipped_times(dest), {fit: good})   # a student's edits that are no record
        self.assertEqual(lab.time_limit(good, load=1.0), (lab.LIMIT_FLOOR, 0.5))
        self.assertEqual(lab.time_limit(dict(good, seconds=4), load=3.0), (80, 4))   # twice as busy
        for text in ("[", '{"runs": 3}', "[1]"):
            (dest / lab.TIMES_FILE).write_text(text)
            self.assertEqual(lab.shipped_times(dest), {}, text)
        # Grading never trusts the file a student can edit: it times the reference itself.
        self.assertNotRegex(inspect.getsource(lab.grade), r"TIMES_FILE|shipped_times")

    def test_a_handout_stopped_by_sigterm_while_timing_leaves_no_server_or_scratch_behind(self):
        # `timeout 5 tools/lab handout 1 DIR` with an empty cache was killed outright while it
        # built the reference's tests in its scratch copy: /tmp/edu-lab-times-* and the Bazel
        # server in it stayed (Ctrl-C cleaned both up); `timeout` signals twice (the handout,
        # then its process group), and a second SIGTERM while the server shut down cut the
        # clean-up short. Here Bazel is a fake whose build sleeps.
        scratch, cache, log = self.tmp / "scratch", self.tmp / "cache", self.tmp / "bazel.log"
        scratch.mkdir()
        child = f"""
import subprocess, sys
sys.path.insert(0, {str(Path(lab.__file__).parent)!r})
import lab
def bazel(tree, *args, log=None, output_base=None):
    with subprocess.Popen(["sleep", "60" if args[0] == "build" else "1"]) as run:   # a shutdown waits too
        with open({str(log)!r}, "a") as f:   # said once the sleep runs: a SIGTERM now finds it
            f.write(args[0] + "\\n")
        try:
            run.wait()
        except BaseException:   # as subprocess.run, which lab.bazel calls
            run.kill()
            raise
    return subprocess.CompletedProcess(args, 0, "", "")
lab.bazel = bazel
sys.exit(lab.main(["handout", "1", {str(self.tmp / "lab1")!r}]))
"""
        env = dict(os.environ, TMPDIR=str(scratch), XDG_CACHE_HOME=str(cache))
        proc = subprocess.Popen([sys.executable, "-c", child], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not (log.exists() and "build" in log.read_text()) and time.monotonic() < deadline:
                time.sleep(0.1)
            self.assertIn("build", log.read_text() if log.exists() else "", "the handout never timed the reference")
            proc.send_signal(signal.SIGTERM)
            while "shutdown" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)   # `timeout` signals the handout, then its process group
            try:   # the fake build's `sleep` shares the handout's output: gone once it is killed
                out, err = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                self.fail(f"the handout's build still runs after SIGTERM (the handout exited with {proc.poll()})")
        finally:
            proc.kill()
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err[-2000:])
        self.assertEqual(log.read_text().split(), ["build", "shutdown"])
        self.assertEqual(list(scratch.iterdir()), [])
        # The handout it left is marked incomplete, and says so, as does `tools/lab test` in it:
        # stopped while timing, it had no times file and nothing said it was not whole.
        self.assertIn(f"is an incomplete handout ({lab.INCOMPLETE_FILE} says so)", err)
        self.assertFalse((self.tmp / "lab1" / lab.TIMES_FILE).exists())
        self.assertIn("was stopped before it finished writing this handout", lab.incomplete_note(self.tmp / "lab1"))
        out = io.StringIO()
        failing = lambda tree, *args, **kw: subprocess.CompletedProcess(args, 1, "", "ERROR: not built here")
        with mock.patch.object(lab, "bazel", failing):
            lab.test_parts(self.table, self.tmp / "lab1", ["S1.find_fit"], out=out)
        self.assertTrue(out.getvalue().startswith("lab: INCOMPLETE HANDOUT: tools/lab handout 1 was stopped"), out.getvalue())

    def test_a_handout_stopped_during_a_bazel_command_cancels_it(self):
        # The handout's Bazel client, killed outright on a SIGTERM, left the scratch server to
        # finish its build before the shutdown could run: `timeout 12 tools/lab handout 1 DIR`
        # exited after 48 s. The client is now sent SIGINT (Ctrl-C: the server cancels the
        # build). A fake `bazel` on PATH records the signal; before, it was killed unrecorded.
        fake, log, scratch = self.tmp / "bin", self.tmp / "bazel.log", self.tmp / "scratch"
        fake.mkdir()
        scratch.mkdir()
        (fake / "bazel").write_text(f"""#!/bin/sh
for a; do case "$a" in build|shutdown) command=$a;; esac; done
echo "$command" >> {log}
if [ "$command" = build ]; then
    trap 'kill $!; echo SIGINT >> {log}; exit 8' INT
    sleep 60 & wait
fi
""")
        (fake / "bazel").chmod(0o755)
        env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}", TMPDIR=str(scratch),
                   XDG_CACHE_HOME=str(self.tmp / "cache"))
        proc = subprocess.Popen([sys.executable, str(Path(lab.__file__)), "handout", "1", str(self.tmp / "lab1")],
                                env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while not (log.exists() and "build" in log.read_text()) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)   # the fake's trap is set
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=lab.BAZEL_CANCEL_SECONDS + 20)
        finally:
            proc.kill()
        self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err[-2000:])
        self.assertEqual(log.read_text().split(), ["build", "SIGINT", "shutdown"])
        self.assertTrue((self.tmp / "lab1" / lab.INCOMPLETE_FILE).exists())

    def test_a_scratch_tree_builds_from_the_lab_s_disk_cache_and_always_runs_its_tests(self):
        with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(self.tmp / "cache")}):
            where = f"--disk_cache={self.tmp / 'cache' / 'edu-alloc' / 'bazel-disk'}"
            build = lab.bazel_command(("build", "//t:t"), output_base=self.tmp / "bazel")
            test = lab.bazel_command(("test", "--config=tsan", "//t:t"), output_base=self.tmp / "bazel")
            self.assertEqual(build[:2], ["bazel", f"--output_base={self.tmp / 'bazel'}"])
            self.assertIn(where, build)
            self.assertNotIn("--nocache_test_results", build)
            self.assertIn(where, test)
            self.assertIn("--nocache_test_results", test)
            self.assertEqual(test[-2:], ["--config=tsan", "//t:t"])
            # a student's own tree keeps its own settings; a shutdown takes no build option
            self.assertFalse(any(a.startswith("--disk_cache") for a in lab.bazel_command(("build", "//t:t"))))
            self.assertEqual(lab.bazel_command(("shutdown",), output_base=self.tmp / "bazel"),
                             ["bazel", f"--output_base={self.tmp / 'bazel'}", "shutdown"])

    def test_the_disk_cache_is_pruned_oldest_first_to_half_its_bound(self):
        folder = self.tmp / "disk"
        for i in range(6):   # ac/0 .. cas/5, 100 bytes each, written 0 .. 5 hours ago, newest first
            path = folder / ("ac" if i % 2 else "cas") / str(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 100)
            os.utime(path, (time.time() - 3600 * i,) * 2)
        self.assertEqual(lab.prune_disk_cache(folder, bound=600), 0)   # at the bound: kept
        self.assertEqual(lab.prune_disk_cache(folder, bound=500), 400)  # over: down to 250 bytes
        self.assertEqual(sorted(p.name for p in folder.rglob("*") if p.is_file()), ["0", "1"])
        self.assertEqual(lab.prune_disk_cache(self.tmp / "none"), 0)   # no cache yet: nothing to do

    def test_a_stage_with_copies_needs_a_tag_for_their_tests(self):
        table = json.loads(json.dumps(self.table))
        del table["stages"]["3"]["copy_tests_tag"]
        del table["stages"]["2"]["tests_tag"]
        problems = lab.check(ROOT, table)
        # FILE:LINE of each stage's key in parts.json.
        lines = (ROOT / lab.TABLE).read_text().split("\n")
        at = {n: lines.index(f'  "{n}": {{') + 1 for n in ("2", "3")}
        self.assertIn(f"{lab.TABLE}:{at['3']}: stage 3's parts have copies but no copy_tests_tag", problems)
        self.assertIn(f"{lab.TABLE}:{at['2']}: stage 2 has no tests_tag (handout --hide-later leaves its tests out)", problems)

    def test_a_handout_grading_itself_knows_its_own_stubs(self):
        # In a handout the "reference" is the handout: its bodies are stubs, and a stub made
        # from a stub must be that stub (or every untouched part reads as a failed one).
        dest = self.tmp / "lab1"
        lab.handout(self.table, "1", dest)
        found = lab.scan(dest, self.table)[0]
        for part in lab.parts_of(self.table, "1"):
            blank = lab.regions(dest, self.table, part["name"], found)
            self.assertEqual(lab.normalised_regions(lab.stubs(part, "docs/stage1_brk.md", blank)),
                             lab.normalised_regions(blank))
            self.assertTrue(lab.holds_stub(blank, part["name"]))
            if not (ROOT / lab.HANDOUT_FILE).exists():   # in a handout, ROOT's bodies are stubs too
                self.assertFalse(lab.holds_stub(lab.regions(ROOT, self.table, part["name"]), part["name"]))
        # A stub whose comment quotes an older statement is still the stub.
        lab.handout(self.table, "3", self.tmp / "lab3")
        extend = lab.regions(self.tmp / "lab3", self.table, "S3.extend")
        self.assertTrue(lab.holds_stub([[l.replace("Lazy", "Lazier") for l in extend[0]]], "S3.extend"))
        self.assertFalse(lab.holds_stub(extend, "S3.collect"))

    def test_a_part_whose_tests_stop_at_another_stub_is_not_judged(self):
        ok = subprocess.CompletedProcess([], 0, "", "")
        run = lambda passed, reached=(): {"target": "//t:t", "cases": "*x*", "passed": passed,
                                          "stubs_reached": sorted(reached)}
        self.assertEqual(lab.part_verdict("S1.coalesce", [run(True), run(True)], ok), "pass")
        verdict = lab.part_verdict("S1.coalesce", [run(False, {"S1.find_fit"}), run(True)], ok)
        self.assertTrue(verdict.startswith("not judged: its tests stop at the stub of S1.find_fit"), verdict)
        self.assertEqual(lab.part_verdict("S1.coalesce", [run(False), run(True)], ok), "FAIL: //t:t *x*")
        broken = subprocess.CompletedProcess([], 1, "", "ERROR: block.asm:12: error: symbol `x' not defined")
        self.assertIn("does not build", lab.part_verdict("S1.coalesce", [run(False)], broken))

    def test_a_failed_shared_case_names_the_other_parts_it_judges(self):
        # In a handout a wrong S2.carve fails 'a new pool threads only the blocks it hands out',
        # which S2.usedpools's filters select too (stage 2's "shared"): S2.usedpools's FAIL
        # says so, so the student looks at S2.carve as well.
        (self.tmp / "t").mkdir()
        (self.tmp / "t" / "t_test.cc").write_text('TEST_CASE("a new pool threads only the blocks it hands out") {}\n'
                                                   'TEST_CASE("zero bytes: the smallest class") {}\n')
        part = lambda n, cases: {"name": n, "stage": 2, "tests": [{"target": "//t:t", "cases": cases}]}
        table = {"stages": {"2": {"gates": ["//t:t"]}},
                 "parts": [part("S2.usedpools", "*a new pool*,*zero bytes*"), part("S2.carve", "*threads only*"),
                           part("S2.pool_states", "*used to full*")]}
        failed = {"target": "//t:t", "cases": "*a new pool*,*zero bytes*", "passed": False, "stubs_reached": [],
                  "detail": lab.failure_summary(
                      "t/t_test.cc:1:\nTEST CASE:  a new pool threads only the blocks it hands out\n\n"
                      "t/t_test.cc:3: ERROR: CHECK( used == 1 ) is NOT correct!\n  values: CHECK( 2 == 1 )\n\n"
                      "t/t_test.cc:2:\nTEST CASE:  zero bytes: the smallest class\n\n"
                      "t/t_test.cc:4: ERROR: CHECK( p ) is NOT correct!\n")}
        said = ("1 of the 2 failed cases above also judges S2.carve (stage 2's \"shared\" in "
                "tools/labkit/parts.json): a wrong answer there fails it too")
        self.assertEqual(lab.shared_failures(self.tmp, table, "S2.usedpools", failed), said)
        self.assertEqual(lab.shared_failures(self.tmp, table, "S2.usedpools", dict(failed, passed=True)), "")
        carve = dict(failed, cases="*threads only*", detail=failed["detail"].split(" | ")[0])
        self.assertEqual(lab.shared_failures(self.tmp, table, "S2.carve", carve),
                         "the failed case above also judges S2.usedpools (stage 2's \"shared\" in "
                         "tools/labkit/parts.json): a wrong answer there fails it too")
        report = {"stage": 2, "tree": "t", "weights": {"correctness": 60, "utilisation": 20, "throughput": 20,
                                                      "throughput_full_at": 0.8, "throughput_min_operations": 1000},
                  "gates": [], "traces": [], "note": "", "score": 0, "correctness": 0, "performance": 0,
                  "seconds": 1, "parts_isolated": False, "performance_out_of_reach": True,
                  "parts": [{"part": "S2.usedpools", "marks": 0.0, "verdict": "FAIL: //t:t",
                             "tests": [dict(failed, shared_with=lab.shared_failures(self.tmp, table, "S2.usedpools", failed))]}]}
        out = io.StringIO()
        lab.print_report(report, out)
        self.assertIn("        shared: " + said + "\n", out.getvalue())

    def test_a_failed_build_is_told_by_its_error_lines(self):
        stderr = ("ERROR: /t/stage3_segments/BUILD:29:11: Compiling stage3_segments/free.cc failed: (Exit 1)\n"
                  "  /usr/share/bazel/process-wrapper '--timeout=0' /usr/bin/gcc -c stage3_segments/free.cc\n"
                  "./stage3_segments/page.h:45:51: error: 'struct Page' has no member named 'local_frees'\n"
                  "ERROR: /t/stage3_segments/BUILD:29:11: Compiling stage3_segments/check.cc failed: (Exit 1)\n"
                  "./stage3_segments/page.h:45:51: error: 'struct Page' has no member named 'local_frees'\n"
                  "stage1_brk/freelist.asm:88: error: parser: instruction expected\n")
        self.assertEqual(lab.build_errors(stderr), [
            "./stage3_segments/page.h:45:51: error: 'struct Page' has no member named 'local_frees'",
            "stage1_brk/freelist.asm:88: error: parser: instruction expected"])
        self.assertEqual(lab.build_errors("ERROR: no such target '//x:y'\n"), ["ERROR: no such target '//x:y'"])

    def test_a_failed_test_is_told_by_its_cases_and_lines(self):
        # What a part's or gate's failure prints: each failed doctest case by FILE:LINE, its
        # first failed assertion and values, then the stage's own one-line diagnostics; not
        # doctest's closing counts, which name nothing.
        out = ("battery: testing stage1_brk (stage 1)\n"
               "edu-alloc stage1_brk: usable_size(0x55b3): no block starts here (interior or corrupted pointer)\n"
               "[doctest] doctest version is \"2.4.9\"\n" + "=" * 79 + "\n"
               "stage1_brk/stage1_test.cc:97:\nTEST CASE:  free coalesces with both neighbours\n\n"
               "stage1_brk/stage1_test.cc:108: FATAL ERROR: REQUIRE( rows.size() == 3 ) is NOT correct!\n"
               "  values: REQUIRE( 4 == 3 )\n\n" + "=" * 79 + "\n"
               "tests/random.cc:177:\nTEST CASE:  random mixes keep every block intact\n\n"
               "tests/random.cc:177: FATAL ERROR: test case CRASHED: SIGABRT - Abort (abnormal termination) signal\n\n"
               + "=" * 79 + "\n[doctest] test cases: 2 | 0 passed | 2 failed | 66 skipped\n"
               "[doctest] Status: FAILURE!\n")
        self.assertEqual(lab.failure_summary(out), " | ".join([
            "stage1_brk/stage1_test.cc:108: free coalesces with both neighbours: REQUIRE( rows.size() == 3 ) "
            "is NOT correct! (values: REQUIRE( 4 == 3 ))",
            "tests/random.cc:177: random mixes keep every block intact: test case CRASHED: SIGABRT - Abort "
            "(abnormal termination) signal",
            "edu-alloc stage1_brk: usable_size(0x55b3): no block starts here (interior or corrupted pointer)"]))
        self.assertEqual(lab.failure_summary("a\nb\nc\nd\n"), "b | c | d")   # not doctest's: its last lines
        helper = ("=" * 79 + "\ntests/random.cc:177:\nTEST CASE:  random mixes keep every block intact\n\n"
                  "tests/support.cc:156: FATAL ERROR: REQUIRE( result.ok ) is NOT correct!\n"
                  "  values: REQUIRE( false )\n  logged: seed 1 (replay: --test_env=EDU_BATTERY_SEED=1)\n"
                  "          operation 63: heap check after free\n"
                  "          checker: block twice on the free lists at 0x7fe2\n\n" + "=" * 79 + "\n")
        self.assertEqual(lab.failure_summary(helper),
                         "tests/random.cc:177: random mixes keep every block intact: tests/support.cc:156: "
                         "REQUIRE( result.ok ) is NOT correct! (values: REQUIRE( false )); logged: seed 1 (replay: "
                         "--test_env=EDU_BATTERY_SEED=1); operation 63: heap check after free; checker: block twice "
                         "on the free lists at 0x7fe2")
        tsan = ("WARNING: ThreadSanitizer: data race (pid=7)\n  Write of size 8 at 0x7b04 by thread T2:\n"
                "SUMMARY: ThreadSanitizer: data race stage4_threads/remote.cc:181 in page_collect_remote\n"
                "[doctest] test cases: 3 | 3 passed | 0 failed |\nThreadSanitizer: reported 1 warnings\n")
        self.assertEqual(lab.failure_summary(tsan),
                         "SUMMARY: ThreadSanitizer: data race stage4_threads/remote.cc:181 in page_collect_remote")

    def test_a_failed_assertion_brings_its_line_s_comment(self):
        # "CHECK( g_heap.used[c].next == second ) is NOT correct!" named no rule; the test's line
        # says it: "malloc keeps draining the pool it was using" (S2.pool_states linking a pool
        # that was full at the front of its ring, not at the back).
        test = self.tmp / "stage2_pools" / "pools_test.cc"
        test.parent.mkdir(parents=True)
        test.write_text('void f() {\n    CHECK(g_heap.used[c].next == second);  // malloc keeps draining the pool it was using\n'
                        '    CHECK(s == "a // b");\n}\n')
        out = lambda line: ("=" * 79 + "\nstage2_pools/pools_test.cc:1:\nTEST CASE:  a pool goes full\n\n"
                            f"stage2_pools/pools_test.cc:{line}: ERROR: CHECK( x ) is NOT correct!\n"
                            "  values: CHECK( 1 == 2 )\n\n" + "=" * 79 + "\n")
        self.assertEqual(lab.failure_summary(out(2), self.tmp),
                         "stage2_pools/pools_test.cc:2: a pool goes full: CHECK( x ) is NOT correct! (values: CHECK( 1 == 2 )) "
                         "[the test's comment: malloc keeps draining the pool it was using]")
        self.assertNotIn("comment", lab.failure_summary(out(3), self.tmp))   # "//" inside a string: no comment
        self.assertNotIn("comment", lab.failure_summary(out(2)))             # no tree: as before

    def test_a_heap_check_in_a_test_says_what_the_checker_found(self):
        # `CHECK(api().check().ok)` failed as "CHECK( api().check().ok ) is NOT correct! (values:
        # CHECK( false ))": pages_test's verdict on a wrong S3.extend named no invariant, where
        # battery::check_heap_ok (or require_heap_ok) logs the checker's message.
        bare = re.compile(r"\b(?:CHECK|REQUIRE)\(\s*[\w:.]+(?:\(\))?\.check\(\)\.ok\s*\)")
        found = [f"{path.relative_to(ROOT)}:{i}" for path in sorted(ROOT.glob("*/**/*.cc"))
                 if not path.relative_to(ROOT).parts[0].startswith(("bazel-", "third_party"))
                 for i, line in enumerate(path.read_text(errors="replace").split("\n"), 1) if bare.search(line)]
        self.assertEqual(found, [])

    def test_a_race_reported_in_a_part_s_lines_is_that_part_s(self):
        # Stage 4's ThreadSanitizer gates: a report whose FILE:LINE lies between a part's
        # markers fails that part (its own tests pass without the sanitizer); one elsewhere,
        # or on a marker line, is no part's.
        code = "int x;\n// [lab S1.a begin]\nint a();\nint a2();\n// [lab S1.a end]\nint y;\n"
        self.fake_tree(code, "")
        table = {"stages": {"1": {"folder": "stage1_brk"}}, "parts": []}
        found = lab.scan(self.tmp, table)[0]
        log = ("WARNING: ThreadSanitizer: data race (pid=1)\n"
               "SUMMARY: ThreadSanitizer: data race stage1_brk/a.cc:4 in a2()\n"
               "logged: child: exit 66, stderr: \"... | SUMMARY: ThreadSanitizer: data race stage1_brk/a.cc:3 in a() | ...\"\n"
               "SUMMARY: ThreadSanitizer: data race stage1_brk/a.cc:4 in a2()\n"
               "SUMMARY: ThreadSanitizer: data race stage1_brk/a.cc:6 in y\n"
               "SUMMARY: ThreadSanitizer: data race stage1_brk/a.cc:5 in marker\n")
        self.assertEqual(lab.reports_in_parts(log, found),
                         {"S1.a": ["data race at stage1_brk/a.cc:4", "data race at stage1_brk/a.cc:3"]})
        self.assertEqual(lab.reports_in_parts("no report\n", found), {})

    def test_a_test_runs_in_its_runfiles(self):
        # run_test runs a built test from its runfiles tree, as `bazel test` does, which is
        # named after the WORKSPACE.
        self.assertIn(f'workspace(name = "{lab.WORKSPACE_NAME}")', (ROOT / "WORKSPACE").read_text())
        test = self.tmp / "bazel-bin" / "t" / "t"
        (self.tmp / "bazel-bin" / "t" / "t.runfiles" / lab.WORKSPACE_NAME).mkdir(parents=True)
        test.write_text("#!/bin/sh\npwd; exit 1\n")
        test.chmod(0o755)
        ok, reached, detail = lab.run_test(self.tmp, "//t:t")
        self.assertEqual((ok, reached), (False, set()))
        self.assertEqual(detail, str(self.tmp.resolve() / "bazel-bin" / "t" / "t.runfiles" / lab.WORKSPACE_NAME))

    def test_a_change_outside_a_part_s_markers_is_named_by_line(self):
        # Grading takes only the code between the markers: a helper a student adds above a part
        # passed `tools/lab test` and failed the teacher's build. The handout remembers the lines
        # outside its parts; `tools/lab test` names the first that changed in each file.
        dest = self.tmp / "lab1"
        lab.handout(self.table, "1", dest, ["S1.coalesce"])
        self.assertEqual(lab.outside_changes(dest, self.table), [])
        block = dest / "stage1_brk" / "block.asm"
        lines = block.read_text().split("\n")
        begin = next(i for i, l in enumerate(lines) if "[lab S1.coalesce begin]" in l)
        lines.insert(begin + 1, "        nop                                     ; inside: the student's")
        block.write_text("\n".join(lines))
        self.assertEqual(lab.outside_changes(dest, self.table), [])
        lines.insert(begin - 3, "helper: ret")
        block.write_text("\n".join(lines))
        self.assertEqual(lab.outside_changes(dest, self.table),
                         [f"stage1_brk/block.asm:{begin - 2}: changed outside the markers of the parts in it; grading "
                          "takes only the code between them, so this change is not graded (LAB.md)"])
        # A file of a part this handout does not ask for is the reference's: not watched.
        freelist = dest / "stage1_brk" / "freelist.asm"
        freelist.write_text("; mine\n" + freelist.read_text())
        self.assertEqual(len(lab.outside_changes(dest, self.table)), 1)

    def test_deleting_the_stub_prelude_is_no_change_and_an_added_include_is_named(self):
        # The prelude's banner asks for its lines to be deleted once the parts are written; that
        # deletion was named as the change outside the markers, the only one named per file, so
        # an #include added below it (errno for S2.usedpools) went unnamed: the handout's own
        # tests and grade passed, and the teacher's build failed.
        dest = self.tmp / "lab2"
        lab.handout(self.table, "2", dest, ["S2.usedpools"])
        pool = dest / "stage2_pools" / "pool.cc"
        lines = [l for l in pool.read_text().split("\n") if l not in lab.CXX_PRELUDE]
        pool.write_text("\n".join(lines))
        self.assertEqual(lab.outside_changes(dest, self.table), [])
        at = next(i for i, l in enumerate(lines) if l.startswith("#include")) + 1
        lines.insert(at, "#include <cerrno>")
        pool.write_text("\n".join(lines))
        self.assertEqual(lab.outside_changes(dest, self.table),
                         [f"stage2_pools/pool.cc:{at + 1}: changed outside the markers of the parts in it (an "
                          "#include: the grading build compiles your part without it); grading takes only the code "
                          "between them, so this change is not graded (LAB.md)"])

    def test_a_part_that_must_set_enomem_is_told_how_within_its_markers(self):
        # S2.usedpools asked for "NULL with ENOMEM" in pool.cc, which includes no <cerrno>: a
        # student's `errno = ENOMEM` needed an #include outside the markers, built in the handout
        # and failed the teacher's build (0 marks for the part, every gate "not built").
        for part in self.table["parts"]:
            text = (ROOT / part["file"]).read_text()
            if "ENOMEM" not in part["statement"] or lab.language(part["file"]) != "cxx" or "<cerrno>" in text:
                continue
            with self.subTest(part=part["name"]):
                self.assertIn("enomem()", part["statement"])
                self.assertIn("contract/diagnostics.h", text)

    def test_a_cxx_part_can_use_std_min_without_an_include_of_its_own(self):
        # "max(1, 4 KiB / block size) blocks, at most what is left" reads as std::max and
        # std::min; page.cc had no <algorithm>, so a student's S3.extend needed an #include
        # outside the markers, which builds in the handout and fails the teacher's build.
        for rel in sorted({p["file"] for p in self.table["parts"]}):
            if rel.endswith(".cc"):
                with self.subTest(file=rel):
                    self.assertIn("#include <algorithm>", (ROOT / rel).read_text())

    def test_the_grade_report_names_changes_outside_the_markers(self):
        # The grade of a part that "does not build" because its helper lay outside the markers
        # says why: the report lists the handout's own record of such changes.
        report = {"stage": 1, "tree": "t", "weights": self.table["score"], "gates": [], "parts": [],
                  "traces": [], "note": "", "score": 0, "correctness": 0, "performance": 0, "seconds": 1,
                  "outside_changes": ["stage1_brk/block.asm:3: changed outside the markers of the parts in it; "
                                      "grading takes only the code between them, so this change is not graded (LAB.md)"]}
        out = io.StringIO()
        lab.print_report(report, out)
        self.assertIn("\nnot graded: stage1_brk/block.asm:3: changed outside the markers", out.getvalue())

    def test_a_handout_grading_itself_says_the_traces_marks_are_out_of_reach(self):
        # A student whose every part passed read "score: 60/100" and took 40 marks as lost:
        # in a handout the traces cannot be scored, and the score line did not say so.
        report = {"stage": 2, "tree": "t", "weights": self.table["score"], "gates": [], "parts": [],
                  "traces": [], "note": "", "score": 60, "correctness": 60, "performance": 0, "seconds": 1,
                  "performance_out_of_reach": True}
        out = io.StringIO()
        lab.print_report(report, out)
        w = self.table["score"]
        self.assertIn(f"score: 60/100 here: correctness 60 of {w['correctness']}; the traces' "
                      f"{w['utilisation'] + w['throughput']} marks are not scored in a handout", out.getvalue())
        report["performance_out_of_reach"] = False
        out = io.StringIO()
        lab.print_report(report, out)
        self.assertIn("score: 60/100 (correctness 60, performance 0;", out.getvalue())

    def grade_fake_stage(self, reference, student, gates=("gate",), program=lambda code, name: "exit 0", tsan_gates=(),
                         tsan_log=lambda code, name: None):
        """lab.grade() of a fake stage 1 (fake Bazel, gates //t:NAME) whose parts S1.b and S1.a
        lie in that order in stage1_brk/a.cc: reference and student are that file's text. The
        fake build fails on a line that says "broken", naming it by FILE:LINE as a compiler does;
        else each test, //t:t and the gates, runs the shell code program(the file's text, NAME),
        and `bazel test` of //t:NAME (a tsan gate) exits 0 unless tsan_log(the file's text, NAME)
        gives (exit code, the test's log)."""
        table = {"score": self.table["score"],
                 "stages": {"1": {"folder": "stage1_brk", "chapter": "docs/stage1_brk.md",
                                  "gates": [f"//t:{g}" for g in gates], "tsan_gates": [f"//t:{g}" for g in tsan_gates]}},
                 "parts": [dict(name=f"S1.{n}", stage=1, file="stage1_brk/a.cc", procedure=n, statement="s",
                                tests=[{"target": "//t:t"}]) for n in ("b", "a")]}
        for tree, code in (("ref", reference), ("student", student)):
            for rel, text in (("WORKSPACE", ""), ("traces/x.rep", "0\n"), ("stage1_brk/a.cc", code)):
                (self.tmp / tree / rel).parent.mkdir(parents=True, exist_ok=True)
                (self.tmp / tree / rel).write_text(text)

        def bazel(tree, *args, log=None, output_base=None):
            lines = (Path(tree) / "stage1_brk/a.cc").read_text().split("\n")
            broken = [n for n, line in enumerate(lines, 1) if "broken" in line]
            if args[0] in ("build", "test") and broken:   # `bazel test` exits with 1 when the build fails
                return subprocess.CompletedProcess(args, 1, "", f"stage1_brk/a.cc:{broken[0]}: error: 'broken' was not declared\n"
                                                                f"  {broken[0]} |   broken;\n")
            failed = tsan_log("\n".join(lines), args[-1].split(":")[-1]) if args[0] == "test" else None
            if failed:
                logs = Path(tree) / "bazel-testlogs/t" / args[-1].split(":")[-1]
                logs.mkdir(parents=True, exist_ok=True)
                (logs / "test.log").write_text(failed[1])
                return subprocess.CompletedProcess(args, failed[0], "", "")
            for name in (*gates, "t") if args[0] == "build" else ():
                (Path(tree) / "bazel-bin/t").mkdir(parents=True, exist_ok=True)
                (Path(tree) / "bazel-bin/t" / name).write_text(f"#!/bin/sh\n{program(chr(10).join(lines), name)}\n")
                (Path(tree) / "bazel-bin/t" / name).chmod(0o755)
            return subprocess.CompletedProcess(args, 0, "", "")
        with mock.patch.object(lab, "REFERENCE", self.tmp / "ref"), mock.patch.object(lab, "bazel", bazel), \
                mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(self.tmp / "cache")}):
            report, _ = lab.grade(table, self.tmp / "student", "1")
        return report, {p["part"]: p for p in report["parts"]}

    REFERENCE_A_CC = ("int b() {\n// [lab S1.b begin]\nreturn 2;\n// [lab S1.b end]\n}\n"
                      "int a() {\n// [lab S1.a begin]\nreturn 1;\n// [lab S1.a end]\n}\n")

    def test_a_gate_the_student_s_tree_does_not_build_fails_with_the_build_s_errors(self):
        # Timing the reference built the gates in the scratch tree; a tree whose part did not
        # assemble then passed every gate on the reference's binaries left in bazel-bin.
        report, parts = self.grade_fake_stage(self.REFERENCE_A_CC, self.REFERENCE_A_CC.replace("return 1;", "return broken;"))
        [gate] = report["gates"]
        self.assertFalse(gate["passed"], gate)
        self.assertEqual(gate["detail"], "does not build: stage1_brk/a.cc:8: error: 'broken' was not declared")
        self.assertEqual(parts["S1.a"]["verdict"], "does not build: stage1_brk/a.cc:8: error: 'broken' was not declared")
        out = io.StringIO()
        lab.print_report(report, out)
        self.assertIn("FAIL  //t:gate\n        does not build: stage1_brk/a.cc:8: error:", out.getvalue())

    def test_once_a_gate_timed_out_the_later_gates_get_the_floor(self):
        # A class's stage 1 student whose S1.find_fit never returned took 633 s to grade: the
        # battery was killed at 95 s, and so no trace could be scored, but stage1_test and the
        # twin test still ran to their own limits (20 and 349 s); their verdicts change no mark.
        # The student's slow gate reports its case on SIGTERM as doctest does: the cut FAIL keeps it.
        crash = "t.cc:3:\\nTEST CASE:  spins\\n\\nt.cc:3: FATAL ERROR: test case CRASHED: SIGTERM\\n"
        def program(code, name):   # the reference's slow gate takes 0.4 s; the student's hangs
            if "hang" in code and name == "slow":
                return f"trap 'printf \"{crash}\"; exit 143' TERM\nwhile :; do sleep 0.1; done"
            return "exec sleep 60" if "hang" in code and name != "t" else "sleep 0.4" if name == "slow" else "exit 0"
        with mock.patch.object(lab, "LIMIT_FLOOR", 1):
            started = time.monotonic()
            report, parts = self.grade_fake_stage(self.REFERENCE_A_CC, self.REFERENCE_A_CC.replace("return 1;", "hang;"),
                                                  gates=("first", "slow"), program=program)
            took = time.monotonic() - started
        first, slow = report["gates"]
        self.assertTrue(first["timed_out"] and slow["timed_out"], report["gates"])
        self.assertEqual(first["detail"], "timed out after 1 s (the reference takes 0.0" +
                         first["detail"].split("the reference takes 0.0")[1])
        self.assertEqual(slow["seconds_limit"], 1, slow)   # its own limit: 10 times 0.4 s, at least 4 s
        self.assertRegex(slow["detail"], r'^timed out after 1 s and killed in test case t\.cc:3: "spins", '
                                         r"cut from its limit of \d+ s since //t:first timed out first: no trace is scored whatever it does "
                                         r"\(the reference takes 0\.\d+ s\)$")
        self.assertEqual(parts["S1.a"]["verdict"], "pass")   # //t:t of the fake is not the student's hang
        self.assertLess(took, 30)

    def test_a_threadsanitizer_gate_that_does_not_build_says_so_by_its_errors(self):
        # A class's stage 4 student whose S4.reclaim did not compile read, under each tsan gate,
        # "abandon.cc:134:35: error: ... |   131 |   adopt(...)": the compiler's source excerpt,
        # numbered by the grading tree, where the plain gates said "does not build: ...".
        report, parts = self.grade_fake_stage(self.REFERENCE_A_CC, self.REFERENCE_A_CC.replace("return 1;", "return broken;"),
                                              tsan_gates=("gate",))
        plain, tsan = report["gates"]
        self.assertEqual(tsan["gate"], "//t:gate (ThreadSanitizer)")
        self.assertEqual(tsan["detail"], plain["detail"])
        self.assertEqual(tsan["detail"], "does not build: stage1_brk/a.cc:8: error: 'broken' was not declared")

    def test_a_threadsanitizer_gate_that_times_out_names_its_case(self):
        # Bazel's --test_timeout stops a tsan gate with SIGTERM, and doctest reports the case it
        # was in into the test's log; the FAIL said only "timed out ... and killed".
        log = ("-- Test timed out at 2026-12-02 05:40:00 UTC --\nt.cc:7:\nTEST CASE:  remote frees meet\n\n"
               "t.cc:7: FATAL ERROR: test case CRASHED: SIGTERM - Termination request signal\n")
        report, parts = self.grade_fake_stage(self.REFERENCE_A_CC, self.REFERENCE_A_CC.replace("return 1;", "hang;"),
                                              tsan_gates=("gate",),
                                              tsan_log=lambda code, name: (3, log) if "hang" in code else None)
        plain, tsan = report["gates"]
        self.assertTrue(tsan["timed_out"], tsan)
        self.assertRegex(tsan["detail"], r'^timed out after \d+ s \(the reference takes \S+ s without ThreadSanitizer\) '
                                         r'and killed in test case t\.cc:7: "remote frees meet": a loop that never ends\?$')

    def test_a_build_error_is_named_by_the_student_s_own_line(self):
        # A class's stage 3 student read "does not build: ./stage3_segments/page.h:41:35" for
        # their line 49: the grading tree's file lacks the stub's prelude their file kept, and a
        # part's build puts the reference's code in place of the student's other parts.
        student = ("// the stub's prelude, kept\n" * 3 +
                   self.REFERENCE_A_CC.replace("return 2;", "int x = 2;\nx += 0;\nreturn x;")
                                      .replace("return 1;", "return broken;"))
        line = student.split("\n").index("return broken;") + 1
        self.assertEqual(line, 13)   # the grading tree's is 8 (all the student's parts) or 10 (the reference's S1.b)
        report, parts = self.grade_fake_stage(self.REFERENCE_A_CC, student)
        said = f"does not build: stage1_brk/a.cc:{line}: error: 'broken' was not declared"
        self.assertEqual(parts["S1.a"]["verdict"], said)
        self.assertEqual(report["gates"][0]["detail"], said)
        self.assertEqual(parts["S1.b"]["verdict"], "pass")
        text = "x stage1_brk/a.cc:3: y ./stage1_brk/a.cc:6 /abs/stage1_brk/a.cc:6: xstage1_brk/a.cc:6"
        (self.tmp / "work" / "stage1_brk").mkdir(parents=True)
        (self.tmp / "work" / "stage1_brk" / "a.cc").write_text(self.REFERENCE_A_CC)
        self.assertEqual(lab.in_students_lines(text, self.tmp / "work", self.tmp / "student", ["stage1_brk/a.cc"]),
                         "x stage1_brk/a.cc:3 (the reference's code in the grading tree): y ./stage1_brk/a.cc:11 "
                         "/abs/stage1_brk/a.cc:11: xstage1_brk/a.cc:6")

    def test_teaching_md_s_grade_sheet_has_a_row_per_submission_and_a_column_per_part(self):
        # The class loop's CSV held only each report's score: a teacher saw 40 with no part
        # named, and a submission that could not be graded (no report) had no row at all.
        text = (ROOT / "docs/teaching.md").read_text()
        m = re.search(r"^python3 - > grades.csv <<'SHEET'\n(.*?)\nSHEET$", text, re.S | re.M)
        self.assertIsNotNone(m, "teaching.md's class loop writes no grade sheet")

        def report(marks, failed_gate, note):
            return {"score": sum(marks) + (0 if failed_gate else 40), "correctness": sum(marks),
                    "performance": 0 if failed_gate else 40, "note": note,
                    "parts": [{"part": f"S1.{n}", "marks": x} for n, x in zip("xy", marks)],
                    "gates": [{"gate": "//t:gate", "passed": not failed_gate}, {"gate": "//t:other", "passed": True}]}
        (self.tmp / "grades").mkdir()
        for name, r in (("alice", report([30, 30], False, "")), ("bob", report([30, 0], True, "traces not scored"))):
            (self.tmp / "submissions" / name).mkdir(parents=True)
            (self.tmp / "grades" / f"{name}.json").write_text(json.dumps(r))
        (self.tmp / "submissions" / "carol").mkdir()   # grading could not run: no report
        out = subprocess.run([sys.executable, "-"], input=m.group(1), cwd=self.tmp, capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.splitlines(), [
            "student,score,correctness,performance,S1.x,S1.y,failed gates,note",
            "alice,100,60,40,30,30,,",
            "bob,30,30,0,30,0,//t:gate,traces not scored",
            "carol,,,,,,,not graded: see grades/carol.txt"])

    def test_a_test_that_hangs_is_killed_and_said_to(self):
        test = self.tmp / "bazel-bin" / "t" / "t"
        test.parent.mkdir(parents=True)
        test.write_text("#!/bin/sh\nexec sleep 60\n")
        test.chmod(0o755)
        started = time.monotonic()
        ok, reached, detail = lab.run_test(self.tmp, "//t:t", timeout=1)
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual((ok, reached), (False, set()))
        self.assertEqual(detail, "timed out after 1 s and killed (the reference's code runs it in seconds: "
                                 "a loop that never ends?)")
        self.assertLess(lab.PART_TEST_SECONDS, 600)   # tools/lab test's limit, below the 10 minutes it once had

    def test_a_hung_test_names_the_case_it_was_in_and_where_it_was_stuck(self):
        # A run killed at its limit said "a loop that never ends?" and not where: a student with
        # three parts and forty cases behind one filter could not tell which hung. Now gdb reads
        # the stack before the kill and a SIGTERM lets doctest report its case. Here both are
        # fakes that print what the real ones printed for a stage 1 handout whose S1.find_fit
        # loops in pause(2) (lab_handout_hang_test runs the real ones).
        test = self.tmp / "bazel-bin" / "t" / "t"
        test.parent.mkdir(parents=True)
        crash = ("===============================================================================\n"
                 "stage1_brk/stage1_test.cc:131:\nTEST CASE:  first, next and best fit choose different blocks\n\n"
                 "stage1_brk/stage1_test.cc:131: FATAL ERROR: test case CRASHED: SIGTERM - Termination request signal\n")
        test.write_text(f"#!/bin/sh\ntrap 'printf \"%s\" \"{crash}\"; exit 143' TERM\nwhile :; do sleep 0.1; done\n")
        test.chmod(0o755)
        gdb = self.tmp / "gdb"
        frames = ("[Thread debugging using libthread_db enabled]\n"
                  'Thread 1 (Thread 0x7f3d6643a940 (LWP 26817) "stage1_test"):\n'
                  "#0  0x00007f3d66a1b2c3 in pause () from /lib/x86_64-linux-gnu/libc.so.6\n"
                  "#1  s1_find_fit.lab_hang () at stage1_brk/freelist.asm:192\n"
                  "#2  0x0000564b7c97b85b in .@11.big_enough () at stage1_brk/malloc.asm:48\n"
                  "#3  0x00007ffeb2002040 in ?? ()\n"
                  "#4  0x0000564b7c970754 in edu::stage1::(anonymous namespace)::DOCTEST_ANON_CLASS_11::f "
                  "(this=0x7ffeb2002040) at stage1_brk/stage1_test.cc:134\n"
                  "#5  0x0000564b7c9870b1 in doctest::Context::run (this=this@entry=0x7ffeb20024c8) at "
                  "/usr/include/doctest/doctest.h:6930\n")
        gdb.write_text(f"#!/bin/sh\nprintf '%s' '{frames}'\n")
        gdb.chmod(0o755)
        with mock.patch.object(lab, "STACK_TOOL", str(gdb)):
            ok, reached, detail = lab.run_test(self.tmp, "//t:t", timeout=1, reference_seconds=0.2)
            threads = lab.stacks_of(os.getpid())
        self.assertEqual((ok, reached), (False, set()))
        self.assertEqual(detail, 'timed out after 1 s (the reference takes 0.2 s) and killed in test case '
                                 'stage1_brk/stage1_test.cc:131: "first, next and best fit choose different blocks", '
                                 'stuck in stage1_brk/freelist.asm:192 (s1_find_fit.lab_hang): a loop that never ends?')
        self.assertEqual(threads[0][:3], [("pause", "", 0), ("s1_find_fit.lab_hang", "stage1_brk/freelist.asm", 192),
                                          (".@11.big_enough", "stage1_brk/malloc.asm", 48)])
        # The frame inside a part's markers names the part, the innermost such frame first.
        found = {"S1.find_fit": [("stage1_brk/freelist.asm", 150, 200)], "S1.realloc": [("stage1_brk/malloc.asm", 40, 60)]}
        self.assertEqual(lab.where_stuck(threads, found),
                         "part S1.find_fit (s1_find_fit.lab_hang at stage1_brk/freelist.asm:192)")
        self.assertEqual(lab.where_stuck(threads, {"S1.find_fit": [("stage1_brk/freelist.asm", 192, 200)]}),
                         "stage1_brk/freelist.asm:192 (s1_find_fit.lab_hang)")   # a marker's line is no part's
        # Without gdb (a student's machine may lack it), doctest's case alone.
        with mock.patch.object(lab, "STACK_TOOL", str(self.tmp / "no-gdb")):
            ok, reached, detail = lab.run_test(self.tmp, "//t:t", timeout=1)
        self.assertEqual(detail, 'timed out after 1 s and killed in test case stage1_brk/stage1_test.cc:131: '
                                 '"first, next and best fit choose different blocks" (the reference\'s code runs it '
                                 'in seconds: a loop that never ends?)')

    def test_a_hung_test_is_killed_with_the_processes_it_started(self):
        # A death test's child that loops kept running after its test was killed (only the
        # test's own process was), spinning a processor for the rest of the class's grading.
        test = self.tmp / "bazel-bin" / "t" / "t"
        test.parent.mkdir(parents=True)
        child = self.tmp / "child.pid"
        test.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {child}\nwait\n")
        test.chmod(0o755)
        ok, reached, detail = lab.run_test(self.tmp, "//t:t", timeout=1, reference_seconds=0.041)
        self.assertEqual((ok, reached), (False, set()))
        self.assertEqual(detail, "timed out after 1 s (the reference takes 0.041 s) and killed: a loop that never ends?")
        pid, deadline = int(child.read_text()), time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(Path(f"/proc/{pid}").exists(), "the test's child still runs")

    def test_a_grade_stopped_while_a_hung_test_s_stacks_are_read_kills_the_test(self):
        # A SIGTERM (or a test's alarm) that came while gdb read a hung run's stacks left the
        # run alive, and Popen's exit then waited for it: lab_handout_hang_test, whose alarm
        # fired there at a load of 12, sat for its whole hour beside a test binary in pause(2).
        test = self.tmp / "bazel-bin" / "t" / "t"
        test.parent.mkdir(parents=True)
        pid_file = self.tmp / "test.pid"
        test.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 30\n")
        test.chmod(0o755)

        def stopped(pid):   # as SIGTERM's handler stops a grade (Ctrl-C's KeyboardInterrupt waits less)
            raise SystemExit("stopped from outside while the stacks were read")
        started = time.monotonic()
        with mock.patch.object(lab, "stacks_of", stopped):
            with self.assertRaises(SystemExit):
                lab.run_test(self.tmp, "//t:t", timeout=1)
        self.assertLess(time.monotonic() - started, 15)   # not the 30 s of the run
        pid = int(pid_file.read_text())
        self.assertFalse(Path(f"/proc/{pid}").exists(), "the hung run still runs")

    def test_time_limits_follow_the_reference_s_own_run(self):
        battery = {"seconds": 3.2, "passed": True, "load": 0.5}
        self.assertEqual(lab.time_limit(battery, load=0.5), (32, 3.2))   # LIMIT_FACTOR times
        self.assertEqual(lab.time_limit(battery, load=0.2), (32, 3.2))   # a quieter machine: no less
        self.assertEqual(lab.time_limit(battery, load=2.0), (64, 3.2))   # twice as busy: (1 + 2) / (1 + 0.5)
        self.assertEqual(lab.time_limit(battery, load=5.0), (128, 3.2))  # four times: (1 + 5) / (1 + 0.5)
        # The scaling stops at MAX_LOAD_SCALE (8): 8.3 times as busy, or 14, still allow 8 times
        # LIMIT_FACTOR times the reference's run (unbounded: 267 and 448 s).
        self.assertEqual(lab.time_limit(battery, load=11.5), (256, 3.2))
        self.assertEqual(lab.time_limit(battery, load=20.0), (256, 3.2))
        self.assertEqual(lab.time_limit(battery, tsan=True, load=20.0), (2048, 3.2))
        self.assertEqual(lab.MAX_LOAD_SCALE, 8)
        self.assertEqual(lab.time_limit(battery, tsan=True, load=0.5), (256, 3.2))
        self.assertEqual(lab.time_limit({"seconds": 0.01, "passed": True, "load": 0}, load=0), (lab.LIMIT_FLOOR, 0.01))
        stub = {"seconds": 0.01, "passed": False, "load": 0}   # a handout's reference: its parts are stubs
        self.assertEqual(lab.time_limit(stub, load=0), (lab.PART_TEST_SECONDS, None))
        self.assertEqual(lab.time_limit(None, tsan=True, load=0), (None, None))   # Bazel's own limit
        self.assertEqual([lab.seconds_text(x) for x in (0.041, 0.28, 8.0, 9.39, 12.4, 640)],
                         ["0.041", "0.28", "8.0", "9.4", "12", "640"])

    def test_the_reference_tree_s_digest_is_its_tracked_files(self):
        # `tools/lab grade ../lab1 --json=lab1.json`, run in the reference tree, writes its report
        # there: counted, it made the next grade measure the reference's runs again.
        subprocess.run(["git", "init", "-q", str(self.tmp)], check=True)
        (self.tmp / "a.cc").write_text("int a;\n")
        subprocess.run(["git", "-C", str(self.tmp), "add", "a.cc"], check=True)
        before = lab.tree_digest(self.tmp)
        (self.tmp / "lab1.json").write_text("{}\n")
        self.assertEqual(lab.tree_digest(self.tmp), before)
        (self.tmp / "a.cc").write_text("int a = 1;\n")   # an edit the teacher has not committed
        self.assertNotEqual(lab.tree_digest(self.tmp), before)

    def test_the_reference_s_times_are_measured_once_per_tree_and_machine(self):
        measured = []

        def measure(run):
            measured.append(run)
            return {"seconds": 1.5, "passed": True, "load": 0.3}
        runs = [("//t:a", None), ("//t:a", "*x*"), ("//t:a", None)]
        saved = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = str(self.tmp / "cache")
        try:
            times = lab.reference_times(runs, "tree1", measure)
            self.assertEqual(measured, [("//t:a", None), ("//t:a", "*x*")])
            self.assertEqual(set(times), {"//t:a", "//t:a *x*"})
            self.assertTrue(lab.reference_times_file().is_relative_to(self.tmp))
            more = lab.reference_times(runs + [("//t:b", None)], "tree1", measure)
            self.assertEqual(more, dict(times, **{"//t:b": times["//t:a"]}))
            self.assertEqual(measured[2:], [("//t:b", None)])   # only the new run
            lab.reference_times(runs, "tree2", measure)   # another reference tree: measured again
            self.assertEqual(measured[3:], runs[:2])
            lab.reference_times(runs, "tree1", measure)   # the first is still known
            self.assertEqual(len(measured), 5)
            for n in range(lab.CACHED_TREES):   # then as many newer trees as the cache keeps
                lab.reference_times(runs[:1], f"newer{n}", measure)
            cache = json.loads(lab.reference_times_file().read_text())
            self.assertEqual(len(cache), lab.CACHED_TREES)
            self.assertNotIn(f"{lab.machine()}|tree1", cache)
            self.assertEqual(set(cache[f"{lab.machine()}|newer0"]["runs"]), {"//t:a"})
        finally:
            if saved is None:
                del os.environ["XDG_CACHE_HOME"]
            else:
                os.environ["XDG_CACHE_HOME"] = saved

    def test_a_reference_timed_on_a_busy_machine_is_timed_again_when_it_is_quiet(self):
        # Limits scale up with load, never down: a class graded at 2510020 on a quiet machine had
        # the twin test's limit at 349 s, ten times the reference's 35 s timed at a load of 22
        # (8 s at 2.7). Now a cached record measured REMEASURE_QUIETER times as busy as the
        # machine is now, in (1 + load per processor) terms, is measured again and replaced.
        measured = []

        def measure(run):
            measured.append(run)
            return {"seconds": 8.0 if lab.load_per_cpu() < 5 else 35.0, "passed": True, "load": lab.load_per_cpu()}
        runs = [("//tests:stage1_twin_test", None)]
        with mock.patch.dict(os.environ, {"XDG_CACHE_HOME": str(self.tmp / "cache")}):
            with mock.patch.object(lab, "load_per_cpu", lambda: 11.0):   # a load of 22 on 2 processors
                busy = lab.reference_times(runs, "tree", measure)
            self.assertEqual(lab.time_limit(busy["//tests:stage1_twin_test"], load=0.2)[0], 350)
            with mock.patch.object(lab, "load_per_cpu", lambda: 8.0):   # not that much quieter: kept
                self.assertEqual(lab.reference_times(runs, "tree", measure), busy)
            self.assertEqual(len(measured), 1)
            with mock.patch.object(lab, "load_per_cpu", lambda: 0.2):
                quiet = lab.reference_times(runs, "tree", measure)
                self.assertEqual(len(measured), 2)
                self.assertEqual(quiet["//tests:stage1_twin_test"]["seconds"], 8.0)
                self.assertEqual(lab.time_limit(quiet["//tests:stage1_twin_test"])[0], 80)
                self.assertEqual(lab.reference_times(runs, "tree", measure), quiet)   # cached now
            with mock.patch.object(lab, "load_per_cpu", lambda: 11.0):   # busy again: scaled up, not re-timed
                self.assertEqual(lab.reference_times(runs, "tree", measure), quiet)
                # MAX_LOAD_SCALE times (the ratio says 10): 640 s, where the twin test took 35 s
                # at that load.
                self.assertEqual(lab.time_limit(quiet["//tests:stage1_twin_test"])[0], 640)
            self.assertEqual(len(measured), 2)

    def test_throughput_pairs_run_on_one_processor_and_take_the_median_ratio(self):
        # A fake stage diff: each run's rate is its tree's speed on that pair, and the calls are
        # recorded. Pair 2 catches the reference alone in a fast moment (1.5x): the ratio of each
        # tree's fastest run (the rule before pairs) read 0.67 for identical trees, costing
        # throughput marks; the median of the pairs' ratios reads 1.
        speeds = {"mine": [1.0, 1.0, 1.0, 1.0, 1.0], "ref": [1.0, 1.0, 1.5, 1.0, 1.0]}
        calls = []

        def fake_replay(stagediff, stage_name, trace, cpu=None):
            tree = "mine" if stagediff == "mine" else "ref"
            pair = sum(1 for c in calls if c[0] == tree)
            calls.append((tree, cpu))
            return {"valid": True, "utilisation": 0.9, "operations": 10000, "seconds_min": 1e-3 / speeds[tree][pair]}

        real = lab.replay
        lab.replay = fake_replay
        try:
            rows = lab.replay_traces("mine", "ref", "stage1_brk", ["t.rep"], 5)
        finally:
            lab.replay = real
        self.assertAlmostEqual(rows[0]["throughput_ratio"], 1.0)
        self.assertAlmostEqual(rows[0]["ops_per_second"] / rows[0]["reference_ops_per_second"], 1 / 1.5)
        self.assertEqual(len(calls), 10)
        for k in range(0, 10, 2):   # a pair's two runs share a processor; who goes first alternates
            self.assertEqual(calls[k][1], calls[k + 1][1])
            self.assertIsNotNone(calls[k][1])
        # On each processor which tree goes first alternates: it was tied to the processor (the
        # student first on the first processor, the reference on the second), so a processor
        # slower for the run that goes first always slowed the same tree.
        for cpu in {c[1] for c in calls}:
            firsts = [calls[k][0] for k in range(0, 10, 2) if calls[k][1] == cpu]
            self.assertEqual(firsts, (["mine", "ref"] * 5)[:len(firsts)], (cpu, calls))

    def test_a_loaded_stretch_is_measured_again_and_a_slow_part_still_loses(self):
        # The reference graded 97.9 at a load of about 10: binary-bal's median of five pairs read
        # 0.63, three pairs' student runs slowed by the load. A trace whose median falls short of
        # full marks (`enough`) is now measured with MORE_PAIRS times as many pairs again, and
        # the median of all counts. A fake stage diff plays the load: the first three pairs'
        # student runs at 0.6 of the reference's speed. Before, the median was 0.6.
        def fake(speed_of):
            calls = []

            def fake_replay(stagediff, stage_name, trace, cpu=None):
                calls.append(stagediff)
                pair = sum(1 for c in calls if c == stagediff) - 1
                speed = speed_of(pair) if stagediff == "mine" else 1.0
                return {"valid": True, "utilisation": 0.9, "operations": 10000, "seconds_min": 1e-3 / speed}
            return fake_replay, calls

        full_at = self.table["score"]["throughput_full_at"]
        loaded, calls = fake(lambda pair: 0.6 if pair < 3 else 1.0)
        with mock.patch.object(lab, "replay", loaded):
            [row] = lab.replay_traces("mine", "ref", "stage1_brk", ["t.rep"], 5, enough=full_at)
        self.assertAlmostEqual(row["throughput_ratio"], 1.0)
        self.assertEqual(row["pairs"], 5 * (1 + lab.MORE_PAIRS))
        self.assertEqual(len(calls), 2 * row["pairs"])
        # Without `enough`, or when the first pairs reach it, five pairs and no more.
        with mock.patch.object(lab, "replay", fake(lambda pair: 0.6 if pair < 3 else 1.0)[0]):
            self.assertAlmostEqual(lab.replay_traces("mine", "ref", "stage1_brk", ["t.rep"], 5)[0]["throughput_ratio"], 0.6)
        with mock.patch.object(lab, "replay", fake(lambda pair: 0.9)[0]):
            self.assertEqual(lab.replay_traces("mine", "ref", "stage1_brk", ["t.rep"], 5, enough=full_at)[0]["pairs"], 5)
        # A part that is slow is slow in every pair: measured again, it still reads slow, and
        # the throughput marks go (lab_replay_test does it with the real stage diff).
        slow, calls = fake(lambda pair: 0.3 if pair % 4 else 0.5)
        with mock.patch.object(lab, "replay", slow):
            [row] = lab.replay_traces("mine", "ref", "stage1_brk", ["t.rep"], 5, enough=full_at)
        self.assertAlmostEqual(row["throughput_ratio"], 0.3)
        self.assertEqual(row["pairs"], 15)

    def test_the_grade_command_runs_the_pairs_its_help_and_teaching_md_promise(self):
        # b17fce3 made the rule five pairs (grade()'s default, the help text, teaching.md) but
        # left the command's own default at 2: `tools/lab grade` scored the median of two pairs,
        # and the reference lost throughput marks against itself (99.9: fifo read 0.75).
        seen = {}

        def fake_grade(table, tree, stage, traces, stagediff, repetitions, *rest):
            seen["repetitions"] = repetitions
            return {}, []

        real_grade, real_print = lab.grade, lab.print_report
        lab.grade, lab.print_report = fake_grade, lambda report: None
        try:
            self.assertEqual(lab.main(["grade", str(ROOT), "--stage=1"]), 0)
        finally:
            lab.grade, lab.print_report = real_grade, real_print
        self.assertEqual(seen["repetitions"], 5)
        self.assertIn("median of the five pairs' ratios", (ROOT / "docs" / "teaching.md").read_text())

    def test_cxx_stubs_carry_the_prelude_and_the_call(self):
        dest = self.tmp / "lab3"
        lab.handout(self.table, "3", dest)
        header = (dest / "stage3_segments" / "page.h").read_text()
        self.assertIn('#include "contract/lab.h"', header)
        self.assertTrue(header.rstrip().endswith("#pragma GCC diagnostic pop"))
        self.assertTrue(lab.holds_stub(lab.regions(dest, self.table, "S3.collect"), "S3.collect"))

    def test_the_trace_set_regenerates_byte_for_byte(self):
        r = subprocess.run([sys.executable, str(ROOT / "traces" / "generate.py"), "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertGreaterEqual(len(list((ROOT / "traces").glob("*.rep"))), 12)


if __name__ == "__main__":
    unittest.main()
