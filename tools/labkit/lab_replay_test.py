"""tools/labkit/lab_replay_test.py: the grader's trace step (lab.replay_traces) with the real
stage diff (argv[1]), no Bazel: a trace of the course set scores both trees, and a trace the
reference itself cannot replay (a malformed line in a trace the teacher added to traces/) stops
grading with the stage diff's FILE:LINE message, instead of costing every student the trace
marks as if their stage had failed it; the reference replayed against itself keeps its
throughput marks on a loaded machine, and a stage many times slower loses them."""

import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402

ROOT = lab.REFERENCE
STAGEDIFF = None


class ReplayTest(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="lab-replay-"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_a_course_trace_is_scored_for_both_trees(self):
        rows = lab.replay_traces(STAGEDIFF, STAGEDIFF, "stage1_brk", [ROOT / "traces" / "short1-basic.rep"], 1)
        self.assertEqual(len(rows), 1)
        self.assertTrue(rows[0]["valid"], rows[0])
        self.assertEqual(rows[0]["utilisation"], rows[0]["reference_utilisation"])

    def test_the_reference_keeps_its_throughput_marks_and_a_slow_stage_loses_them(self):
        # The grader's rule, with its threshold: the reference against itself on binary-bal read
        # 0.63 at a load of about 10 (97.9 for the reference); a stage as slow as a next fit over
        # one list (about 40 times slower than the segregated fit on this trace: what a student's
        # find_fit walking every free block looks like) must still lose the marks.
        table = lab.load_table(ROOT)
        full_at = table["score"]["throughput_full_at"]
        trace = [ROOT / "traces" / "binary-bal.rep"]
        [row] = lab.replay_traces(STAGEDIFF, STAGEDIFF, "stage1_brk", trace, lab.PAIRS, enough=full_at)
        print(f"reference against itself: {row['throughput_ratio']:.3f} over {row['pairs']} pairs, "
              f"load {os.getloadavg()[0]:.1f}")
        self.assertGreaterEqual(row["throughput_ratio"], full_at, row)
        slow = self.tmp / "slow-stagediff"
        slow.write_text(f'#!/bin/sh\nexec {STAGEDIFF} --option=stage1_brk.fit=next "$@"\n')
        slow.chmod(0o755)
        [row] = lab.replay_traces(slow, STAGEDIFF, "stage1_brk", trace, lab.PAIRS, enough=full_at)
        print(f"next fit against the reference: {row['throughput_ratio']:.3f} over {row['pairs']} pairs")
        self.assertTrue(row["valid"], row)
        self.assertLess(row["throughput_ratio"], full_at / 4, row)
        self.assertEqual(row["pairs"], lab.PAIRS * (1 + lab.MORE_PAIRS))   # measured again, still slow

    def test_a_trace_the_reference_cannot_replay_stops_grading_with_its_line(self):
        bad = self.tmp / "bad.rep"
        bad.write_text("a 0 16\nf 0\nx 1 2\n")
        with self.assertRaises(lab.LabError) as caught:
            lab.replay_traces(STAGEDIFF, STAGEDIFF, "stage1_brk", [bad], 2)
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"{bad}:3: expected 'a <id> <size>'"), message)
        self.assertIn("a trace the reference cannot replay", message)


if __name__ == "__main__":
    STAGEDIFF = str(Path(sys.argv.pop(1)).resolve())
    unittest.main()
