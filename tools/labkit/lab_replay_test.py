"""tools/labkit/lab_replay_test.py: the grader's trace step (lab.replay_traces) with the real
stage diff (argv[1]), no Bazel: a trace of the course set scores both trees, and a trace the
reference itself cannot replay (a malformed line in a trace the teacher added to traces/) stops
grading with the stage diff's FILE:LINE message, instead of costing every student the trace
marks as if their stage had failed it."""

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
