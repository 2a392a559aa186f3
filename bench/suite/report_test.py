"""bench/suite/report_test.py: the suite's verdict on issue 15's targets, from a synthetic run.

Feeds report.py results made up here (no benchmark runs): met and missed on each side of a
bound, by the clock and by CPU time apart, per-repetition ratios paired within a repetition,
"within noise" where their interquartile range straddles the bound, the median and the worst
of the programs in the style of mimalloc-bench, and the page's rows.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402

STAGES = ["stage1", "stage2", "stage3", "stage4"]
NAMES = STAGES + ["glibc", "mimalloc", "jemalloc"]
STYLE = [("cfrac", 1), ("cfrac", 2), ("larson", 1), ("larson", 2), ("mstress", 1)]
CELLS = [("ring", 1), ("small", 1), ("malloc-large", 1)] + STYLE
REPS = 5


def runs(ops, cpu_ops=None):
    """A result from operations per second by the clock (and per CPU second) of each repetition."""
    cpu_ops = cpu_ops or ops
    return report.cell([{"ops_per_second": o, "ops": 1000, "cpu_seconds": 1000 / c, "peak_rss_kib": 64}
                        for o, c in zip(ops, cpu_ops)])


def even_run():
    """Every allocator at 100 operations a second in every repetition of every cell."""
    return {(name,) + cell: runs([100] * REPS) for name in NAMES for cell in CELLS}


def target(name, peer, over, cell=None):
    found = [t for t in report.targets(STAGES) if (t.name, t.peer, t.over, t.cell) == (name, peer, over, cell)]
    assert len(found) == 1, (name, peer, over, cell)
    return found[0]


class QuartilesTest(unittest.TestCase):
    def test_interpolates(self):
        self.assertEqual(report.quartiles([5, 1, 4, 2, 3]), (2, 3, 4))
        self.assertEqual(report.quartiles([1, 2]), (1.25, 1.5, 1.75))
        self.assertEqual(report.quartiles([7]), (7, 7, 7))


class TargetsTest(unittest.TestCase):
    def verdict(self, results, t, key="ops"):
        return report.verdict(results, t, STYLE, key)

    def test_the_targets_issue_15_names(self):
        rows = [(t.name, t.peer, t.kind, t.over, t.cell, t.bound) for t in report.targets(STAGES)]
        self.assertIn(("stage3", "mimalloc", "speed", "one", ("ring", 1), 1.0), rows)
        self.assertIn(("stage3", "mimalloc", "speed", "one", ("small", 1), 1.0), rows)
        self.assertIn(("stage2", "glibc", "speed", "one", ("small", 1), 1.0), rows)
        self.assertIn(("stage4", "mimalloc", "speed", "one", ("ring", 1), 1.0), rows)
        self.assertIn(("stage4", "mimalloc", "time", "median", None, 1.0), rows)
        self.assertIn(("stage4", "mimalloc", "time", "every", None, 1.25), rows)
        for stage in STAGES:
            self.assertIn((stage, "glibc", "time", "one", ("malloc-large", 1), 1.25), rows)
        self.assertEqual(len(rows), 11)
        # a stage the run lacks has no rows
        self.assertFalse([t for t in report.targets(["stage1", "stage2"]) if t.name in ("stage3", "stage4")])

    def test_speed_met_and_missed(self):
        results = even_run()
        results[("stage3", "ring", 1)] = runs([110] * REPS)
        results[("stage2", "small", 1)] = runs([90, 92, 94, 96, 98])
        met = self.verdict(results, target("stage3", "mimalloc", "one", ("ring", 1)))
        self.assertAlmostEqual(met.ratio, 1.1)
        self.assertTrue(met.met)
        self.assertFalse(met.noisy)
        missed = self.verdict(results, target("stage2", "glibc", "one", ("small", 1)))
        self.assertAlmostEqual(missed.ratio, 0.94)
        self.assertFalse(missed.met)
        self.assertFalse(missed.noisy)  # 0.92..0.96 stays below 1.0

    def test_a_figure_never_rounds_onto_the_other_side_of_its_bound(self):
        speed = target("stage3", "mimalloc", "one", ("ring", 1))
        self.assertEqual(report.figure_text(speed, 0.99961), "0.9996")   # missed: not "1.000"
        self.assertEqual(report.figure_text(speed, 1.00049), "1.000")    # met, and reads so
        self.assertEqual(report.figure_text(speed, 0.93149), "0.931")
        time = report.Target("stage4", "mimalloc", "time", "every", None, 1.25)
        self.assertEqual(report.figure_text(time, 1.25004), "1.25004")   # missed: not "1.250"
        self.assertEqual(report.figure_text(time, 1.2496), "1.250")      # met

    def test_clock_and_cpu_judged_apart(self):
        results = even_run()
        results[("stage3", "small", 1)] = runs([95] * REPS, cpu_ops=[105] * REPS)
        t = target("stage3", "mimalloc", "one", ("small", 1))
        self.assertFalse(self.verdict(results, t, "ops").met)
        self.assertTrue(self.verdict(results, t, "cpu_ops").met)

    def test_within_noise_when_the_spread_straddles_the_bound(self):
        results = even_run()
        results[("stage4", "small", 1)] = runs([80, 90, 101, 110, 120])
        v = self.verdict(results, target("stage4", "mimalloc", "one", ("small", 1)))
        self.assertTrue(v.met)
        self.assertTrue(v.noisy)
        self.assertEqual(v.spread, (0.9, 1.01, 1.1))

    def test_per_repetition_ratios_pair_one_repetitions_runs(self):
        # Load that slows both sides of each repetition alike is not noise: every repetition's
        # ratio is 1.1 although each side's figures spread by 5x.
        results = even_run()
        results[("stage4", "ring", 1)] = runs([110, 220, 330, 440, 550])
        results[("mimalloc", "ring", 1)] = runs([100, 200, 300, 400, 500])
        v = self.verdict(results, target("stage4", "mimalloc", "one", ("ring", 1)))
        self.assertAlmostEqual(v.ratio, 1.1)
        for q in v.spread:
            self.assertAlmostEqual(q, 1.1)
        self.assertFalse(v.noisy)
        # The same figures in another pairing do straddle the bound.
        results[("mimalloc", "ring", 1)] = runs([500, 400, 300, 200, 100])
        self.assertTrue(self.verdict(results, target("stage4", "mimalloc", "one", ("ring", 1))).noisy)

    def test_time_targets_on_malloc_large(self):
        results = even_run()
        results[("stage1", "malloc-large", 1)] = runs([70] * REPS)   # 1.43x glibc's time
        results[("stage3", "malloc-large", 1)] = runs([90] * REPS)   # 1.11x
        v1 = self.verdict(results, target("stage1", "glibc", "one", ("malloc-large", 1)))
        v3 = self.verdict(results, target("stage3", "glibc", "one", ("malloc-large", 1)))
        self.assertAlmostEqual(v1.ratio, 100 / 70)
        self.assertFalse(v1.met)
        self.assertAlmostEqual(v3.ratio, 100 / 90)
        self.assertTrue(v3.met)

    def test_median_and_every_program(self):
        results = even_run()
        # stage 4's time against mimalloc's: cfrac 1t 0.8x, cfrac 2t 0.9x, larson 1t 1.05x,
        # larson 2t 1.2x, mstress 1t 1.3x
        for cell, time in zip(STYLE, [0.8, 0.9, 1.05, 1.2, 1.3]):
            results[("stage4",) + cell] = runs([100 / time] * REPS)
        median = self.verdict(results, target("stage4", "mimalloc", "median"))
        self.assertAlmostEqual(median.ratio, 1.05)
        self.assertFalse(median.met)
        self.assertFalse(median.noisy)
        every = self.verdict(results, target("stage4", "mimalloc", "every"))
        self.assertAlmostEqual(every.ratio, 1.3)
        self.assertEqual(every.where, ("mstress", 1))
        self.assertFalse(every.met)
        self.assertEqual(every.over, [("mstress", 1)])
        self.assertEqual(every.noisy_cells, [])
        # larson 2t now spreads across 1.25 in its repetitions: every program is within noise there
        results[("stage4", "larson", 2)] = runs([100 / t for t in (1.1, 1.15, 1.2, 1.3, 1.35)])
        results[("stage4", "mstress", 1)] = runs([100 / 1.1] * REPS)
        every = self.verdict(results, target("stage4", "mimalloc", "every"))
        self.assertTrue(every.met)
        self.assertEqual(every.where, ("larson", 2))
        self.assertEqual(every.noisy_cells, [("larson", 2)])

    def test_median_program_per_repetition(self):
        # Each repetition's median over the programs: repetition i has one program at 0.9 + 0.05 i
        # as its middle value, so the per-repetition medians run 0.90..1.10 and straddle 1.0.
        results = even_run()
        for k, cell in enumerate(STYLE):
            times = [(0.5 if k < 2 else 1.5 if k > 2 else 0.9 + 0.05 * i) for i in range(REPS)]
            results[("stage4",) + cell] = runs([100 / t for t in times])
        v = self.verdict(results, target("stage4", "mimalloc", "median"))
        self.assertAlmostEqual(v.ratio, 1.0)
        self.assertAlmostEqual(v.spread[0], 0.95)
        self.assertAlmostEqual(v.spread[2], 1.05)
        self.assertTrue(v.met)
        self.assertTrue(v.noisy)

    def test_one_repetition_has_no_spread(self):
        results = {(name,) + cell: runs([100]) for name in NAMES for cell in CELLS}
        v = self.verdict(results, target("stage4", "mimalloc", "one", ("ring", 1)))
        self.assertIsNone(v.spread)
        self.assertTrue(v.met)
        self.assertFalse(v.noisy)


class PageTest(unittest.TestCase):
    def test_section(self):
        results = even_run()
        results[("stage2", "small", 1)] = runs([90] * REPS)
        results[("stage4", "small", 1)] = runs([80, 90, 101, 110, 120])
        results[("stage4", "larson", 2)] = runs([100 / 1.3] * REPS)
        lines = report.targets_section(results, STAGES, STYLE, REPS)
        self.assertEqual(lines[0], "## Targets\n")
        rows = [line for line in lines if line.startswith("| stage")]
        self.assertEqual(len(rows), 11)
        row = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in rows}
        self.assertEqual(row["stage2 on small 1t, throughput at least 1.00x glibc's"],
                         ["0.900x", "0.900x (0.900-0.900)", "missed", "0.900x", "0.900x (0.900-0.900)", "missed |"])
        self.assertEqual(row["stage4 on small 1t, throughput at least 1.00x mimalloc's"][2], "met, within noise")
        self.assertEqual(row["stage4, time at most 1.25x mimalloc's on every program"][:3],
                         ["1.300x (larson 2t)", "1.300x (1.300-1.300)", "missed (larson 2t)"])
        self.assertEqual(row["stage3 on ring 1t, throughput at least 1.00x mimalloc's"][2], "met")
        text = "\n".join(lines)
        self.assertIn("bench/suite/programs.py", text)
        self.assertIn("//tests/preload:stageN_aligned_test", text)

    def test_summary_keeps_ratios_of_medians(self):
        results = even_run()
        results[("stage4", "cfrac", 1)] = runs([50, 60, 80, 90, 100])  # median 80: time 1.25x
        lines = report.summary(results, NAMES, STYLE)
        stage4 = [line for line in lines if line.startswith("| stage4 |")]
        self.assertEqual(stage4[0], "| stage4 | 1.25 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 1.25 |")


if __name__ == "__main__":
    unittest.main()
