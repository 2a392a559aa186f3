"""tools/labkit/lab_grade_test.py: the grader's verdicts, end to end, on stage 1 with a small
trace subset (three traces, two stagediff runs per tree each) to stay within minutes: the
reference tree grades 100; a handout with every part of every stage blanked builds; a fresh
handout names every part as failing and scores below 30; a handout with S1.coalesce restored
from the reference gains exactly that part's marks, whatever the handout did to its copy of the
tests and to another part's markers; a wrong S1.coalesce beside right parts scores none and is named by FILE:LINE;
a handout of one part (--parts) is graded on that part alone; a stage 4 part that races fails
under ThreadSanitizer even when another part does not build; a grade stopped by SIGTERM leaves
no Bazel server or scratch tree behind; a part whose code never returns is timed out by the
reference's own time and the other part still judged, within HANG_BOUND seconds; in a handout
that ships the reference's times, `tools/lab test` stops such a part by them, within
TEST_HANG_BOUND seconds (both bounds times 1 + the load per processor: bound_at_load).
Each grade runs Bazel in a scratch copy (its own server, shut down after; the lab's disk cache,
lab.disk_cache(), makes the build mostly cache hits once one grade on this machine has filled it). The reference stagediff comes from this test's data
(argv[1]): running Bazel in the source tree from inside a test would wait for its own lock."""

import copy
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


def gdb_reads_stacks():
    """Whether lab.stacks_of can read a running process's stacks here, as it would a hung test's:
    gdb installed is not enough where ptrace is refused (Yama's ptrace_scope, a container without
    the capability), and there the verdict names the case alone."""
    if not hasattr(gdb_reads_stacks, "answer"):
        sleeper = subprocess.Popen(["sleep", "60"])
        try:
            gdb_reads_stacks.answer = bool(lab.stacks_of(sleeper.pid))
        finally:
            sleeper.kill()
            sleeper.wait()
    return gdb_reads_stacks.answer


TRACES = "short2-coalesce,binary-bal,realloc-mixed"
STAGEDIFF = None
# A grade of the hanging tree below: two runs killed at HANG_FLOOR each, the builds and, on a new
# reference tree, the reference's three runs. With every run given 600 s it took over 20 minutes.
HANG_BOUND = 360
# The floor of the time limits there, below lab.LIMIT_FLOOR (20 s): the reference runs
# stage1_test in 0.3 s, and each second of a hung run holds one of //tools/labkit:all's two jobs.
HANG_FLOOR = 5
# `tools/lab test` in the one-part handout below, its part hanging: the build and one run killed
# at HANG_FLOOR. Without the handout's times the run had PART_TEST_SECONDS (180 s).
TEST_HANG_BOUND = 90


def bound_at_load(seconds):
    """A wall-clock bound above, set on a quiet machine, at this machine's load now: times
    1 + the load average per processor, as lab.time_limit scales a limit (a Bazel build in a
    scratch tree took longer than the whole 90 s at a load of 12 on 2 processors)."""
    return round(seconds * (1 + lab.load_per_cpu()))


def hanging_find_fit(table):
    """The reference's S1.find_fit that never returns. It sleeps rather than spins, so the runs it
    hangs leave the processors to the tests running beside it; a time limit cannot tell the two
    apart."""
    fit = lab.regions(lab.REFERENCE, table, "S1.find_fit")
    fit[0][0:0] = [".lab_hang:",
                   "        mov     eax, 34                         ; pause(2): waits for a signal",
                   "        syscall",
                   "        jmp     .lab_hang                       ; never returns"]
    return fit


class GradeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if (lab.REFERENCE / lab.HANDOUT_FILE).exists():
            raise unittest.SkipTest("a lab handout cannot grade as the reference (tools/lab grade does)")
        cls.table = lab.load_table(lab.REFERENCE)
        cls.tmp = Path(tempfile.mkdtemp(prefix="lab-grade-test-"))
        cls.each = cls.table["score"]["correctness"] / len(lab.parts_of(cls.table, "1"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def grade(self, tree, stage="1"):
        report, log = lab.grade(self.table, tree, stage, TRACES, STAGEDIFF)
        lab.print_report(report)
        return report, {p["part"]: p for p in report["parts"]}

    def assertHungIn(self, said, tree, cases):
        """said names the test case a hung stage1_test run was stopped in, one that `cases`
        selects, and when gdb is here the part S1.find_fit at a line of tree's freelist.asm
        between its markers (hanging_find_fit's loop)."""
        names = lab.selected(lab.test_case_names(lab.REFERENCE, "//stage1_brk:stage1_test")[0], cases)
        m = re.search(r'in test case stage1_brk/stage1_test\.cc:\d+: "([^"]+)"', said)
        self.assertIsNotNone(m, said)
        self.assertIn(m.group(1), names)
        if gdb_reads_stacks():
            m = re.search(r"stuck in part S1\.find_fit \(\S+ at stage1_brk/freelist\.asm:(\d+)\)", said)
            self.assertIsNotNone(m, said)
            [(rel, begin, end)] = lab.scan(tree, self.table)[0]["S1.find_fit"]
            self.assertLess(begin + 1, int(m.group(1)))
            self.assertLessEqual(int(m.group(1)), end)

    def test_the_reference_grades_100(self):
        report, parts = self.grade(lab.REFERENCE)
        self.assertEqual(report["score"], 100, report)
        self.assertTrue(all(p["verdict"] == "pass" for p in parts.values()))
        self.assertEqual(len(report["traces"]), 3)

    def test_the_reference_grades_100_on_stage_4_with_its_tsan_gates(self):
        # Stage 4 is the stage with ThreadSanitizer gates, whose build shares the default
        # build's output tree: the part verdicts must still run the default binaries.
        report, parts = self.grade(lab.REFERENCE, "4")
        self.assertEqual(report["score"], 100, report)
        self.assertTrue(all(p["verdict"] == "pass" for p in parts.values()))

    def test_a_race_in_a_part_fails_it_when_another_part_does_not_build(self):
        # Stage 4, parts S4.collect_remote and S4.reclaim: the first takes its list with a
        # relaxed CAS (every test passes; ThreadSanitizer sees the pushers' writes race with its
        # walk), the second does not build (an unused variable under -Werror). The tsan gates
        # then fail on the student's tree without running any part: S4.collect_remote kept its
        # 30 marks. Now the tsan gates run again for it with the other parts the reference's.
        dest = self.tmp / "race"
        lab.handout(self.table, "4", dest, ["S4.collect_remote", "S4.reclaim"])
        collect = lab.regions(lab.REFERENCE, self.table, "S4.collect_remote")
        taking = [i for i, line in enumerate(collect[0]) if "std::memory_order_acquire," in line]
        self.assertEqual(len(taking), 1, "the reference's S4.collect_remote takes its list with one acquire CAS")
        collect[0][taking[0]] = collect[0][taking[0]].replace("std::memory_order_acquire,", "std::memory_order_relaxed,")
        reclaim = lab.regions(lab.REFERENCE, self.table, "S4.reclaim")
        reclaim[0].insert(0, "    unsigned unused_count = 0;")
        lab.replace_bodies(dest, self.table, {"S4.collect_remote": collect, "S4.reclaim": reclaim})
        report, parts = self.grade(dest, "4")
        self.assertTrue(parts["S4.reclaim"]["verdict"].startswith("does not build"), parts["S4.reclaim"])
        self.assertFalse(any(g["passed"] for g in report["gates"] if "ThreadSanitizer" in g["gate"]))
        verdict = parts["S4.collect_remote"]["verdict"]
        self.assertTrue(verdict.startswith("FAIL: ThreadSanitizer: data race at stage4_threads/remote.cc:"), verdict)
        self.assertIn("(in this part's code)", verdict)
        self.assertEqual(report["score"], 0)

    def test_a_grade_stopped_by_sigterm_leaves_no_server_or_scratch_behind(self):
        # `timeout 1500 tools/lab grade ...` on a submission whose part hangs every gate killed
        # the grader outright: its scratch Bazel server kept running and its scratch tree stayed.
        scratch_parent = self.tmp / "s"
        scratch_parent.mkdir()
        env = dict(lab.bazel_env(), TMPDIR=str(scratch_parent))
        proc = subprocess.Popen([sys.executable, str(Path(lab.__file__).resolve()), "grade", str(lab.REFERENCE),
                                 "--stage=1", f"--traces={TRACES}"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server = None
        try:
            deadline = time.time() + 600
            while server is None and proc.poll() is None and time.time() < deadline:
                pids = list(scratch_parent.glob("edu-lab-grade-*/bazel/server/server.pid.txt"))
                if pids and pids[0].read_text().strip():
                    server = int(pids[0].read_text())
                time.sleep(0.5)
            self.assertIsNotNone(server, "the grade started no Bazel server in its scratch tree")
            time.sleep(3)   # inside a Bazel command now
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=300)
            self.assertEqual(proc.returncode, 128 + signal.SIGTERM, err[-2000:])
            self.assertEqual(list(scratch_parent.glob("edu-lab-grade-*")), [])
            deadline = time.time() + 60
            while time.time() < deadline and os.path.exists(f"/proc/{server}"):
                time.sleep(0.5)
            self.assertFalse(os.path.exists(f"/proc/{server}"), "the scratch Bazel server still runs")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
            if server is not None and os.path.exists(f"/proc/{server}"):
                os.kill(server, signal.SIGKILL)   # what the grader left behind: ours to end

    def test_a_part_that_never_returns_is_timed_out_and_the_others_judged(self):
        # A handout of S1.find_fit and S1.coalesce, the first never returning, graded on one gate
        # (stage1_test) with each part judged by its stage1_test cases alone: the gate and
        # S1.find_fit's test are killed at their limits from the reference's own runs, and
        # S1.coalesce, judged with the reference's S1.find_fit, keeps its marks. With every run
        # allowed 600 s the grade took over 20 minutes (this test fails at HANG_BOUND).
        table = copy.deepcopy(self.table)
        stage = table["stages"]["1"]
        stage["gates"], stage["reference_gates"] = ["//stage1_brk:stage1_test"], []
        for part in lab.parts_of(table, "1"):
            part["tests"] = [t for t in part["tests"] if t["target"] == "//stage1_brk:stage1_test"]
        dest = self.tmp / "hang"
        lab.handout(self.table, "1", dest, ["S1.find_fit", "S1.coalesce"])
        lab.replace_bodies(dest, self.table, {"S1.find_fit": hanging_find_fit(self.table),
                                              "S1.coalesce": lab.regions(lab.REFERENCE, self.table, "S1.coalesce")})

        bound = bound_at_load(HANG_BOUND)

        def too_long(signum, frame):
            raise AssertionError(f"the hanging tree was not graded within {bound} s")
        previous = signal.signal(signal.SIGALRM, too_long)
        signal.alarm(bound)
        try:
            with mock.patch.object(lab, "LIMIT_FLOOR", HANG_FLOOR):
                report, log = lab.grade(table, dest, "1", TRACES, STAGEDIFF)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        out = io.StringIO()
        lab.print_report(report, out)
        print(out.getvalue())
        self.assertLess(report["seconds"], bound)
        parts = {p["part"]: p for p in report["parts"]}
        self.assertEqual(parts["S1.coalesce"]["verdict"], "pass", parts["S1.coalesce"])
        self.assertEqual(report["score"], self.table["score"]["correctness"] / 2)
        self.assertEqual(parts["S1.find_fit"]["verdict"], "FAIL: //stage1_brk:stage1_test *fit* (timed out)")
        [gate] = report["gates"]
        [test] = parts["S1.find_fit"]["tests"]
        for record in (gate, test):
            self.assertFalse(record["passed"])
            self.assertTrue(record["timed_out"], record)
            self.assertLess(record["reference_seconds"], 2, record)   # stage1_test: under a second
            self.assertGreaterEqual(record["seconds_limit"], HANG_FLOOR, record)
            self.assertLess(record["seconds_limit"], HANG_BOUND / 4, record)
            said = (f"timed out after {record['seconds_limit']} s (the reference takes "
                    f"{lab.seconds_text(record['reference_seconds'])} s) and killed in test case ")
            self.assertTrue(record["detail"].startswith(said), record["detail"])
            self.assertTrue(record["detail"].endswith(": a loop that never ends?"), record["detail"])
            self.assertIn(record["detail"], out.getvalue())
            self.assertIn(json.dumps(record["detail"]), json.dumps(report))
        # Each names the case it was stopped in (doctest's report of the SIGTERM), one the run's
        # filter selects, and, where gdb can read the stack, the part and its line in the student's file.
        self.assertHungIn(test["detail"], dest, "*fit*")
        self.assertHungIn(gate["detail"], dest, "")
        self.assertEqual(report["note"], "traces not scored: a gate failed (correctness comes first)")

    def test_lab_test_stops_a_hung_part_by_the_times_its_handout_ships(self):
        # A handout of S1.find_fit judged by stage1_test alone: making it records the reference's
        # time of that test (measured in a scratch copy, or from the cache a grade of this tree
        # filled), and `tools/lab test` there kills the hung run at LIMIT_FACTOR times it.
        table = copy.deepcopy(self.table)
        table["stages"]["1"].pop("shared", None)   # the battery's cases it lists are no part's now
        for part in lab.parts_of(table, "1"):
            part["tests"] = [t for t in part["tests"] if t["target"] == "//stage1_brk:stage1_test"]
        dest, outputs = self.tmp / "hang-test", self.tmp / "bazel-hang-test"
        said = io.StringIO()
        lab.handout(table, "1", dest, ["S1.find_fit"], times=True, out=said)
        shipped = json.loads((dest / lab.TIMES_FILE).read_text())
        self.assertEqual(shipped["machine"], lab.machine())
        [(key, record)] = shipped["runs"].items()
        self.assertEqual(key, "//stage1_brk:stage1_test *fit*")
        self.assertTrue(record["passed"], record)
        self.assertLess(record["seconds"], 2, record)   # stage1_test: under a second
        self.assertIn(f"lab: shipped the reference's times of 1 test in {lab.TIMES_FILE}", said.getvalue())
        self.assertIn(f"`{lab.TIMES_FILE}` holds", (dest / "LAB.md").read_text().replace("\n", " "))
        lab.replace_bodies(dest, self.table, {"S1.find_fit": hanging_find_fit(self.table)})

        bound = bound_at_load(TEST_HANG_BOUND)

        def too_long(signum, frame):
            raise AssertionError(f"`tools/lab test` did not stop the hung part within {bound} s")
        previous = signal.signal(signal.SIGALRM, too_long)
        signal.alarm(bound)
        out, started = io.StringIO(), time.monotonic()
        try:
            with mock.patch.object(lab, "LIMIT_FLOOR", HANG_FLOOR):
                failed = lab.test_parts(table, dest, [], out=out, output_base=outputs)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            lab.bazel(dest, "shutdown", output_base=outputs)
        print(out.getvalue(), f"({time.monotonic() - started:.1f} s)")
        self.assertEqual(failed, 1, out.getvalue())
        m = re.search(r"timed out after (\d+) s \(the reference takes (\S+) s on the teacher's machine\) "
                      r"and killed in test case .*: a loop that never ends\?", out.getvalue())
        self.assertIsNotNone(m, out.getvalue())
        self.assertHungIn(out.getvalue(), dest, "*fit*")
        self.assertEqual(m.group(2), lab.seconds_text(record["seconds"]))
        self.assertGreaterEqual(int(m.group(1)), HANG_FLOOR)
        self.assertLess(int(m.group(1)), TEST_HANG_BOUND / 3)

    def test_a_fresh_handout_names_every_part_and_scores_low(self):
        dest = self.tmp / "blank"
        lab.handout(self.table, "1", dest)
        report, parts = self.grade(dest)
        self.assertLess(report["score"], 30)
        self.assertEqual(set(parts), {p["name"] for p in lab.parts_of(self.table, "1")})
        for part in parts.values():
            self.assertEqual(part["marks"], 0)
            self.assertIn("not implemented", part["verdict"])
        self.assertFalse(any(g["passed"] for g in report["gates"]))
        self.assertEqual(report["traces"], [])

    def test_every_stage_handout_builds(self):
        # One tree with every part of every stage stubbed: one build proves all the stubs
        # assemble and compile, and a battery run shows a stub's one-line report.
        dest, outputs = self.tmp / "all", self.tmp / "bazel-all"
        lab.handout(self.table, "all", dest)
        try:
            r = lab.bazel(dest, "build", "//stage1_brk/...", "//stage2_pools/...", "//stage3_segments/...",
                          "//stage4_threads/...", "//tests:all", "//tools/diff:stagediff",
                          output_base=outputs)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            ok, reached, _ = lab.run_test(dest, "//tests:stage3_battery")
            self.assertFalse(ok)
            self.assertTrue(reached & {"S3.extend", "S3.collect", "S3.direct"}, reached)
            # Stage 4's first malloc reaches its copy of S3.extend's answer, a stub that says it
            # is not a part to write (contract/lab.cc), and no part's stub is named.
            ok, reached, tail = lab.run_test(dest, "//tests:stage4_battery")
            self.assertFalse(ok)
            self.assertEqual(reached, set(), tail)
            self.assertIn("the reference's copy of part S3.extend's answer is held back in this handout", tail)
            # `tools/lab test`: a part whose tests reach its own stub is not implemented; one
            # whose tests stop at another part's stub is waiting for that part.
            out = io.StringIO()
            failed = lab.test_parts(self.table, dest, ["S1.find_fit", "S3.collect"], out=out, output_base=outputs)
            self.assertEqual(failed, 2, out.getvalue())
            self.assertRegex(out.getvalue(), r"S1.find_fit +not implemented: its tests reached its stub")
            self.assertRegex(out.getvalue(), r"S3.collect +(not implemented|waiting for S3\.)")
            # Every test that runs a copy of a part's answer carries its stage's copy_tests_tag,
            # which a handout filters out of `bazel test` (lab.filter_tests): stage 4's tests run
            # stage 3's copies, the twin test runs stage 1's.
            # A stage's own gates that a handout runs are exempt: they link a copy's file
            # (stage1_test links the twin) but must pass without it, and the grade proves they do.
            for number, stage in self.table["stages"].items():
                tag = stage.get("copy_tests_tag")
                files = sorted({"//" + f.replace("/", ":", 1) for part in lab.parts_of(self.table, number)
                                for f in lab.copies_of(part).values()})
                if not files:
                    continue
                exempt = [g for g in stage["gates"] if g not in stage.get("reference_gates", [])]
                query = (f"kind(test, rdeps(//..., set({' '.join(files)}))) except "
                         f"attr(tags, '[\\[ ]{tag}[,\\]]', tests(//...)) except set({' '.join(exempt)})")
                r = lab.bazel(dest, "query", query, output_base=outputs)
                self.assertEqual(r.returncode, 0, r.stderr[-2000:])
                self.assertEqual(r.stdout.split(), [], f"tests that run stage {number}'s copies but lack the tag {tag!r}")
            # Every test that runs a stage's code carries its tests_tag or a later stage's (a
            # test of several stages carries the latest one's), which --hide-later filters.
            for number, stage in self.table["stages"].items():
                if not stage.get("tests_tag"):
                    continue
                tags = [s["tests_tag"] for n, s in self.table["stages"].items() if int(n) >= int(number)]
                tagged = " + ".join(f"attr(tags, '[\\[ ]{t}[,\\]]', tests(//...))" for t in tags)
                r = lab.bazel(dest, "query", f"kind(test, rdeps(//..., //{stage['folder']}:all)) except ({tagged})",
                              output_base=outputs)
                self.assertEqual(r.returncode, 0, r.stderr[-2000:])
                self.assertEqual(r.stdout.split(), [], f"tests that run stage {number} but lack the tags {tags}")
            # With stage 1's parts written (as a student would), stage 1 steps in the page while
            # stage 2, whose parts are still stubs, dies: the page holds stage 1 and names stage 2.
            lab.replace_bodies(dest, self.table, {p["name"]: lab.regions(lab.REFERENCE, self.table, p["name"])
                                                  for p in lab.parts_of(self.table, "1")})
            r = lab.bazel(dest, "build", "//tools/diff:stagediff", output_base=outputs)
            self.assertEqual(r.returncode, 0, r.stderr[-3000:])
            page = self.tmp / "partial.html"
            r = subprocess.run([str(lab.binary(dest, "//tools/diff:stagediff")), "--stages=1,2", f"--html={page}",
                                f"--trace={lab.REFERENCE / 'traces' / 'short2-coalesce.rep'}"],
                               capture_output=True, text=True, timeout=120)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("edu-alloc lab: part S2.usedpools not implemented", r.stderr)
            self.assertIn(f"stagediff: wrote {page} (", r.stderr)
            self.assertIn("without stage2_pools, which died (see above)", r.stderr)
            text = page.read_text()
            self.assertIn('"name":"stage1_brk"', text.replace(" ", ""))
            self.assertNotIn('"name":"stage2_pools"', text.replace(" ", ""))
        finally:
            lab.bazel(dest, "shutdown", output_base=outputs)

    def test_restoring_one_part_gains_exactly_its_marks(self):
        dest = self.tmp / "one"
        lab.handout(self.table, "1", dest)
        lab.replace_bodies(dest, self.table, {"S1.coalesce": lab.regions(lab.REFERENCE, self.table, "S1.coalesce")})
        # A test changed in the handout must not count: the grader runs the reference's tests.
        with open(dest / "stage1_brk" / "stage1_test.cc", "a") as f:
            f.write('\nTEST_CASE("a handout\'s own copy of a test coalesces nothing") { CHECK(false); }\n')
        # Nor does another part whose markers are broken: it is graded as its stub, with the
        # marker named, and the reference's stands in for it while S1.coalesce is judged.
        malloc = dest / "stage1_brk" / "malloc.asm"
        lines = malloc.read_text().split("\n")
        end = next(i for i, line in enumerate(lines) if "[lab S1.realloc end]" in line)
        begin = next(i for i, line in enumerate(lines) if "[lab S1.realloc begin]" in line)
        lines[end] = lines[end].replace("[lab S1.realloc end]", "end of my realloc")
        malloc.write_text("\n".join(lines))
        report, parts = self.grade(dest)
        self.assertEqual(parts["S1.coalesce"]["verdict"], "pass")
        self.assertEqual(parts["S1.coalesce"]["marks"], self.each)
        self.assertEqual(report["score"], self.each)
        for name in ("S1.find_fit", "S1.realloc"):
            self.assertEqual(parts[name]["marks"], 0)
        self.assertEqual(parts["S1.realloc"]["verdict"], "markers missing or broken: cannot judge: "
                         f"stage1_brk/malloc.asm:{begin + 1}: [lab S1.realloc begin] is never ended")

    def test_a_handout_of_some_parts_is_graded_on_those_parts(self):
        # `tools/lab handout 1 DIR --parts=S1.coalesce` gives S1.find_fit and S1.realloc written:
        # they are not the student's, so they earn nothing and the 60 marks are S1.coalesce's.
        # Left as handed out it scores 0 (it scored 40, the two given parts' marks); written, 100.
        dest = self.tmp / "some"
        lab.handout(self.table, "1", dest, ["S1.coalesce"])
        report, parts = self.grade(dest)
        self.assertEqual(list(parts), ["S1.coalesce"])
        self.assertEqual(report["parts_not_graded"], ["S1.find_fit", "S1.realloc"])
        self.assertIn("not implemented", parts["S1.coalesce"]["verdict"])
        self.assertEqual(report["score"], 0)
        # The teacher's --parts overrides the handout's claim: every part is graded, as in a
        # handout of all three, so the two it gave written earn their marks. (Graded before
        # S1.coalesce is written, its gates stop at the stub: a third full grade cost minutes.)
        report, log = lab.grade(self.table, dest, "1", TRACES, STAGEDIFF, repetitions=1,
                                only=[p["name"] for p in lab.parts_of(self.table, "1")])
        parts = {p["part"]: p for p in report["parts"]}
        self.assertEqual(list(parts), [p["name"] for p in lab.parts_of(self.table, "1")])
        self.assertEqual(report["parts_not_graded"], [])
        self.assertIn("not implemented", parts["S1.coalesce"]["verdict"])
        for name in ("S1.find_fit", "S1.realloc"):
            self.assertEqual(parts[name]["verdict"], "pass", parts[name])
        self.assertEqual(report["score"], 2 * self.each)
        lab.replace_bodies(dest, self.table, {"S1.coalesce": lab.regions(lab.REFERENCE, self.table, "S1.coalesce")})
        report, parts = self.grade(dest)
        self.assertEqual(parts["S1.coalesce"]["verdict"], "pass")
        self.assertEqual(report["correctness"], self.table["score"]["correctness"])

    def test_a_wrong_part_beside_right_ones_fails_and_says_where(self):
        # S1.find_fit and S1.realloc as the reference's, S1.coalesce wrong (it never merges
        # with the previous block): the two gain their marks, S1.coalesce none, and the report
        # names the failed case by FILE:LINE. Judged after S1.find_fit, whose isolation build
        # put the reference's S1.coalesce in bazel-bin, S1.coalesce once passed on that build.
        dest = self.tmp / "wrong"
        lab.handout(self.table, "1", dest)
        right = {n: lab.regions(lab.REFERENCE, self.table, n) for n in ("S1.find_fit", "S1.realloc")}
        coalesce = lab.regions(lab.REFERENCE, self.table, "S1.coalesce")
        jump = [i for i, line in enumerate(coalesce[0]) if line.split()[:2] == ["jz", ".write"]]
        self.assertEqual(len(jump), 1, "the reference's S1.coalesce has one `jz .write` (previous block used)")
        coalesce[0][jump[0]] = "        jmp     .write                          ; never merges with the previous block"
        lab.replace_bodies(dest, self.table, dict(right, **{"S1.coalesce": coalesce}))
        report, parts = self.grade(dest)
        for name in right:
            self.assertEqual(parts[name]["verdict"], "pass", parts[name])
        self.assertEqual(parts["S1.coalesce"]["marks"], 0, parts["S1.coalesce"])
        self.assertTrue(parts["S1.coalesce"]["verdict"].startswith("FAIL: "), parts["S1.coalesce"])
        self.assertEqual(report["score"], 2 * self.each)
        detail = next(t["detail"] for t in parts["S1.coalesce"]["tests"] if t["target"] == "//stage1_brk:stage1_test")
        self.assertRegex(detail, r"^stage1_brk/stage1_test\.cc:\d+: free coalesces with both neighbours: ")
        out = io.StringIO()
        lab.print_report(report, out)
        self.assertIn("//stage1_brk:stage1_test: " + detail[:60], out.getvalue())


if __name__ == "__main__":
    STAGEDIFF = str(Path(sys.argv.pop(1)).resolve())
    unittest.main()
