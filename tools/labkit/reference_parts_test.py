"""tools/labkit/reference_parts_test.py: the reference passes every lab part's tests as grading
runs them (each test binary with the part's doctest filters, EDU_LAB_GRADING set, address-space
layout randomised as in a grade), several times over where a run is cheap. A case that fails
now and then, or only after the cases a filter happens to put before it, costs a student a
correct part's marks: S2.arena_return's '*arena*' also ran 'with no arena to be had, a small
block comes from stage 1', which after the arena cases before it failed about two runs in three
("the raw table did not move into stage 1's heap"), never alone, in pools_test's full order or
without randomised placement, so the reference lost the part's marks in most grades. The
binaries are this test's data (every target parts.json names; a target missing from the data
fails here, naming it)."""

import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab  # noqa: E402

ROOT = lab.REFERENCE
# Each selection runs at least once and again until it has run RUNS times or for BUDGET
# seconds: stage 4's battery of threads (about 30 s on the shared machine) once, a few-second
# selection five times.
RUNS = 5
BUDGET = 8.0


def binary_and_folder(target):
    """A test binary and the folder to run it in: this test's runfiles under Bazel, else the
    source tree's bazel-bin and the binary's own runfiles (run by hand after a build)."""
    rel = target[2:].replace(":", "/")
    if os.environ.get("TEST_SRCDIR"):
        folder = Path(os.environ["TEST_SRCDIR"]) / lab.WORKSPACE_NAME
        return folder / rel, folder
    binary = ROOT / "bazel-bin" / rel
    return binary, Path(str(binary) + ".runfiles") / lab.WORKSPACE_NAME


class ReferencePartsTest(unittest.TestCase):
    def test_the_reference_passes_every_part_s_tests_each_time(self):
        if (ROOT / lab.HANDOUT_FILE).exists():
            self.skipTest("a lab handout's parts are stubs: only the reference passes them")
        table = lab.load_table(ROOT)
        selections = list(dict.fromkeys((t["target"], t.get("cases", "")) for p in table["parts"] for t in p["tests"]))
        env = dict(lab.bazel_env(), EDU_LAB_GRADING="1")
        failures = []
        for target, cases in selections:
            binary, folder = binary_and_folder(target)
            self.assertTrue(binary.is_file(), f"{target} is not in this test's data (tools/labkit/BUILD)")
            command = [str(binary)] + ([f"--test-case={cases}"] if cases else [])
            runs, spent = 0, 0.0
            while runs < RUNS and (runs == 0 or spent < BUDGET):
                start = time.time()
                r = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
                spent += time.time() - start
                runs += 1
                if r.returncode != 0:
                    failures.append(f"{target} --test-case='{cases}' failed in run {runs}: "
                                    f"{lab.failure_summary(r.stdout + r.stderr, ROOT)}")
                    break
            print(f"{runs} run(s), {spent:5.1f} s: {target} {cases}", flush=True)
        self.assertEqual(failures, [])


if __name__ == "__main__":
    unittest.main()
