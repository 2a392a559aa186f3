"""tools/fuzz.py against the four stages' libraries and against one with a known bug (lying.cc).

Arguments: the churn program, the four stages' libraries, the lying library. The stages must
pass a handful of short random runs (the same ones every time: a fixed --seed); the lying
library must fail every run, with the churn program's complaint quoted, the failure repeated,
the program passing without the library, and a command that, run again, fails the same way;
a crash must be named by its signal, an exit 0 without the verdict line must fail, and a hang
must end at the timeout with the run's processes killed.
"""

import os
import re
import subprocess
import sys
import tempfile
import unittest

CHURN, STAGE_LIBS, LYING = sys.argv[1], sys.argv[2:6], sys.argv[6]
FUZZ = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "fuzz.py")


def fuzz(*args, env=None):
    return subprocess.run([sys.executable, FUZZ, "--churn", CHURN, *args], capture_output=True,
                          text=True, env=env, timeout=600)


class FuzzTest(unittest.TestCase):
    def test_the_stages_pass_random_runs(self):
        libs = [arg for n, path in enumerate(STAGE_LIBS, 1) for arg in ("--lib", "%d=%s" % (n, path))]
        result = fuzz(*libs, "--runs", "12", "--seed", "25", "--max-steps", "1500", "--jobs", "2", "--verbose")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("fuzz: 12 runs, every run passed (the same runs again: --seed 25 --runs 12)", result.stdout)
        ok = re.findall(r"^ok run \d+ .*LD_PRELOAD=(\S+)", result.stdout, re.M)
        self.assertEqual(len(ok), 12, result.stdout)
        # the seed's draw reaches every stage, a limit, and every loading mode
        self.assertEqual(len(set(ok)), 4, result.stdout)
        self.assertIn("prlimit --", result.stdout)
        self.assertIn("EDU_OPTIONS=debug=on", result.stdout.replace("'debug=on", "debug=on"))
        self.assertIn("EDU_ALLOC_CHECK=1", result.stdout)

    def test_every_option_value_it_draws_is_one_its_stage_accepts(self):
        # A value a stage no longer knows is refused with a line on stderr and the run goes on
        # without it; fuzz.py fails such a run, and here each value is tried once, by itself.
        sys.path.insert(0, os.path.dirname(FUZZ))
        import fuzz as runner
        for n, (stage, choices) in sorted(runner.STAGE_OPTIONS.items()):
            for name, values in sorted(choices.items()):
                for value in values:
                    entry = "%s.%s=%s" % (stage, name, value)
                    env = dict(os.environ, EDU_OPTIONS=entry, LD_PRELOAD=STAGE_LIBS[int(n) - 1])
                    run = subprocess.run([CHURN, "1", "1", "1", "1"], env=env, capture_output=True, text=True, timeout=120)
                    self.assertEqual(run.returncode, 0, entry + ": " + run.stderr)
                    self.assertNotIn("EDU_OPTIONS entry", run.stderr, entry)

    def test_the_same_seed_draws_the_same_runs(self):
        libs = ["--lib", "3=" + STAGE_LIBS[2], "--lib", "4=" + STAGE_LIBS[3]]
        runs = [fuzz(*libs, "--runs", "3", "--seed", "9", "--max-steps", "600", "--verbose")
                for _ in range(2)]
        lines = [sorted(re.findall(r"^ok run \d+ \(.*?\): (.*)$", r.stdout, re.M)) for r in runs]
        self.assertEqual(len(lines[0]), 3, runs[0].stdout)
        self.assertEqual(lines[0], lines[1])

    def test_a_wrong_answer_is_reported_with_a_command_that_repeats_it(self):
        keep = tempfile.mkdtemp(prefix="fuzz-test-")
        result = fuzz("--lib", "lying=" + LYING, "--runs", "2", "--seed", "3", "--max-steps", "2000",
                      "--keep", keep)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("fuzz: 2 runs, 2 failed", result.stdout)
        self.assertEqual(result.stdout.count("FAILED run "), 2, result.stdout)
        self.assertRegex(result.stdout, r"stderr's last line: churn \d+: malloc_usable_size below the request")
        self.assertEqual(result.stdout.count("repeated 3 times: failed 3"), 2, result.stdout)
        self.assertEqual(result.stdout.count("without the library: passes"), 2, result.stdout)
        command = re.search(r"^  repeat it: (.*)$", result.stdout, re.M).group(1)
        self.assertIn("LD_PRELOAD=" + os.path.realpath(LYING), command)  # the file, not a link to it
        again = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
        self.assertEqual(again.returncode, 3, again.stderr)
        self.assertIn("malloc_usable_size below the request", again.stderr)
        output = re.search(r"^  its output: (\S+)\.out, ", result.stdout, re.M).group(1)
        self.assertTrue(output.startswith(keep), output)
        self.assertIn("malloc_usable_size below the request", open(output + ".err").read())

    def test_a_crash_names_its_signal(self):
        env = dict(os.environ, EDU_TEST_ABORT="1")
        result = fuzz("--lib", "lying=" + LYING, "--runs", "1", "--seed", "3", "--retries", "1", env=env)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("): killed by SIGABRT", result.stdout)
        self.assertIn("repeated once: failed 1", result.stdout)
        self.assertIn("without the library: passes", result.stdout)

    def test_an_exit_without_the_verdict_line_fails(self):
        env = dict(os.environ, EDU_TEST_SILENT="1")
        result = fuzz("--lib", "lying=" + LYING, "--runs", "1", "--seed", "3", "--retries", "1", env=env)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"\): exit status 0 but no line 'churn \d+: ok'\n")
        self.assertIn("without the library: passes", result.stdout)

    def test_a_hang_ends_at_the_timeout(self):
        env = dict(os.environ, EDU_TEST_HANG="1")
        result = fuzz("--lib", "lying=" + LYING, "--runs", "1", "--seed", "3", "--timeout", "2",
                      "--retries", "1", env=env)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("no answer within 2 s (a hang, or far too slow)", result.stdout)
        self.assertIn("repeated once: failed 1", result.stdout)
        seed = re.search(r"library lying, seed (\d+),", result.stdout).group(1)
        # every process of the run was killed: none is left holding the seed on its command line
        left = subprocess.run(["pgrep", "-f", "churn %s " % seed], capture_output=True, text=True)
        self.assertEqual(left.stdout, "", "processes left running")


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
