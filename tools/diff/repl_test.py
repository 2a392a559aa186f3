"""tools/diff/repl_test.py: `stagediff --repl` against the replay of the same operations.

Feeds a script (with an undo, a show, a check and a bad line) to the REPL on standard input,
one stage at a time, and checks that the heap it prints after every operation equals what
`stagediff --trace --steps` prints for the same operations as a trace; that undo brings back
the heap before the undone operation; that a bad line is reported with its line number. A
second script frees blocks from thread 2 (`f ID @2`): every stage's heaps equal the replay of
the same trace, and stage 4 shows the blocks as remote frees until its owner collects them.
"""
import re
import subprocess
import sys
import tempfile
import unittest

STAGEDIFF = sys.argv.pop(1)

SCRIPT = """\
a 0 100
a 1 24
a 2 2000
a 3 100
a 4 300
f 1
f 3
# a comment, then a line the REPL refuses
f 9
f 2
a 5 1800
undo
a 5 40
r 0 600
show
check
"""
# The operations the script leaves done, in order (f 9 refused, a 5 1800 undone).
TRACE = ["a 0 100", "a 1 24", "a 2 2000", "a 3 100", "a 4 300", "f 1", "f 3", "f 2", "a 5 40", "r 0 600"]


def heaps(text, header):
    """The heap dumps in `text`, each the lines after a line matching `header`; a dump's last
    line, "... N more entries (how to see them all)", without the part that says how (the REPL's
    `show` and the replay's --heap-lines). The replay's list of what changed since the step
    before ("- "/"+ " lines under "  changed since") is not part of the dump."""
    out, current = [], None
    for line in text.splitlines():
        if re.match(header, line):
            current = []
            out.append(current)
        elif current is not None and re.match(r"  changed since |  \.\.\. \d+ more changes |[-+] ", line):
            continue
        elif current is not None and line.startswith("  "):
            current.append(re.sub(r"( more entries) \(.* prints them all\)$", r"\1", line))
        else:
            current = None
    return out


class Repl(unittest.TestCase):
    def test_heaps_equal_the_replay_of_the_same_trace(self):
        with tempfile.NamedTemporaryFile("w", suffix=".rep", delete=False) as t:
            t.write("\n".join(TRACE) + "\n")
        for stage in ["stage1_brk", "stage2_pools", "stage3_segments", "stage4_threads"]:
            with self.subTest(stage=stage):
                repl = subprocess.run([STAGEDIFF, "--repl", "--stages=" + stage], input=SCRIPT,
                                      capture_output=True, text=True)
                self.assertEqual(repl.returncode, 2, repl.stderr)  # the refused line
                self.assertNotIn("a stage died", repl.stdout, repl.stderr[-2000:])   # stderr says why
                self.assertIn("stdin:9: block 9 is not live", repl.stdout)
                self.assertIn(f"{stage}: ok, 3 live blocks", repl.stdout)
                got = heaps(repl.stdout, rf"{stage} heap:")
                # after each of 9 operations, the undo's heap, 2 more operations, the show
                self.assertEqual(len(got), 9 + 1 + 2 + 1, repl.stdout)
                replay = subprocess.run([STAGEDIFF, "--trace=" + t.name, "--no-time", "--stages=" + stage,
                                         "--steps=" + ",".join(str(i) for i in range(1, len(TRACE) + 1))],
                                        capture_output=True, text=True, check=True)
                want = heaps(replay.stdout, rf"{stage} after \d+ operations")
                self.assertEqual(len(want), len(TRACE))
                self.assertEqual(got[:8], want[:8])   # a 0 .. f 2
                self.assertIn(f"== {stage}: a 5 1800 -> ", repl.stdout)
                self.assertIn("undo 'a 5 1800': replaying 8 operations afresh", repl.stdout)
                self.assertEqual(got[9], want[7])     # the heap before a 5 1800
                self.assertEqual(got[10:12], want[8:10])
                self.assertEqual(got[12], want[9])    # show
                self.assertRegex(repl.stdout, rf"== {stage}: a 0 100 -> [+-]\d+ \(usable \d+ B\)")
                # Each heap after an operation begins with what it changed: `f 3` left block
                # 3's entry used before, free (or merged) after, at the offset its malloc gave.
                after = repl.stdout.split(f"== {stage}: f 3 -> freed\n")[1].split("\n==")[0].split("\n")
                self.assertEqual(after[1], "  changed since the heap shown before (-: then, +: now):")
                at = re.search(rf"== {stage}: a 3 100 -> \+(\d+)", repl.stdout).group(1)
                changes = [l.split() for l in after[2:] if l[:2] in ("- ", "+ ")]
                self.assertIn(["-", "block", "used", "+" + at], [c[:4] for c in changes], after)

    def test_frees_from_another_thread_equal_the_replay_and_stage_4_shows_them_remote(self):
        ops = ["a 0 1000", "a 1 1000", "a 2 1000", "a 3 1000", "f 1 @2", "f 2 @2", "a 4 1000", "a 5 40 @3", "f 5"]
        with tempfile.NamedTemporaryFile("w", suffix=".rep", delete=False) as t:
            t.write("\n".join(ops) + "\n")
        for stage in ["stage1_brk", "stage2_pools", "stage3_segments", "stage4_threads"]:
            with self.subTest(stage=stage):
                repl = subprocess.run([STAGEDIFF, "--repl", "--stages=" + stage], input="\n".join(ops + ["f 0 @5"]) + "\n",
                                      capture_output=True, text=True)
                self.assertEqual(repl.returncode, 2, repl.stderr)
                self.assertNotIn("a stage died", repl.stdout, repl.stderr[-2000:])
                self.assertIn("stdin:10: bad thread '@5' (threads are @1..@4)", repl.stdout)
                self.assertIn(f"== {stage}: f 1 @2 -> freed", repl.stdout)
                got = heaps(repl.stdout, rf"{stage} heap:")
                replay = subprocess.run([STAGEDIFF, "--trace=" + t.name, "--no-time", "--stages=" + stage,
                                         "--steps=" + ",".join(str(i) for i in range(1, len(ops) + 1))],
                                        capture_output=True, text=True, check=True)
                want = heaps(replay.stdout, rf"{stage} after \d+ operations")
                self.assertEqual(got, want)
                remote = [sum(" remote " in line for line in heap) for heap in got]
                # Stage 4: blocks 1 and 2 wait on their page's xthread_free until `a 4` collects them.
                self.assertEqual(remote, [0, 0, 0, 0, 1, 2, 0, 0, 0] if stage == "stage4_threads" else [0] * 9)


if __name__ == "__main__":
    unittest.main(verbosity=2)
