"""bench/suite/report.py: the suite's summary and its verdict on issue 15's targets, from a run's results.

Pure functions, no benchmark runs: run.py measures and calls them, report_test.py feeds them a
synthetic run. A run's results map (allocator, workload, threads) to what cell() makes of the
driver's outputs: the medians over the repetitions ("ops", "cpu_ops", "rss") and the values of
each repetition in repetition order ("ops_runs", "cpu_ops_runs"), for the per-repetition ratios.
"""

import collections
import statistics

# Operations per second by the clock, and per CPU second of the whole driver process.
MEASURES = (("clock", "ops"), ("CPU", "cpu_ops"))


def cell(runs):
    """The result of one (allocator, workload, threads) from the driver's outputs, one per repetition."""
    ops = [r["ops_per_second"] for r in runs]
    cpu_ops = [r["ops"] / max(r["cpu_seconds"], 1e-9) for r in runs]
    return {"ops": statistics.median(ops), "cpu_ops": statistics.median(cpu_ops),
            "rss": statistics.median(r["peak_rss_kib"] for r in runs),
            "ops_runs": ops, "cpu_ops_runs": cpu_ops}


def quartiles(values):
    """(first quartile, median, third quartile), interpolating between order statistics."""
    xs = sorted(values)
    def at(fraction):
        position = fraction * (len(xs) - 1)
        low = int(position)
        high = min(low + 1, len(xs) - 1)
        return xs[low] + (xs[high] - xs[low]) * (position - low)
    return at(0.25), at(0.5), at(0.75)


def summary(results, names, cells):
    """Time ratios (lower is better) of the programs in the style of mimalloc-bench: `cells` are
    their (workload, threads) pairs."""
    out = ["## Summary: time relative to mimalloc and to glibc\n",
           "Time per operation relative to mimalloc's (and glibc's), the inverse of the throughput "
           "ratio; below 1.00 is faster. One column per program and thread count (1 and 2 threads; "
           "the machine has 2 cores). The first two tables divide wall-clock time; the third divides "
           "CPU time (user + system of the whole driver process, its untimed setup included), which "
           "does not count the time a run waited for a core while other jobs shared the machine.\n"]
    for peer, key, what in (("mimalloc", "ops", "time"), ("glibc", "ops", "time"), ("mimalloc", "cpu_ops", "CPU time")):
        out.append("| %s / %s | %s | median | worst |" % (what, peer, " | ".join("%s %dt" % c for c in cells)))
        out.append("|" + "---|" * (len(cells) + 3))
        for name in names:
            ratios = [results[(peer, w, t)][key] / results[(name, w, t)][key] for w, t in cells]
            out.append("| %s | %s | %.2f | %.2f |" % (name, " | ".join("%.2f" % r for r in ratios),
                                                    statistics.median(ratios), max(ratios)))
        out.append("")
    return out


# One of issue 15's targets that the suite measures. `kind`: "speed" is throughput against the
# peer's, at least `bound`; "time" is time against the peer's, at most `bound`. `over`: "one"
# for the single cell `cell`, "median" for the median of the programs in the style of
# mimalloc-bench (the summary's columns), "every" for the worst of them.
Target = collections.namedtuple("Target", "name peer kind over cell bound")


def targets(stages):
    """Issue 15's targets the suite measures, for the stages present (names "stage1".."stage4")."""
    wanted = [Target("stage3", "mimalloc", "speed", "one", ("ring", 1), 1.0),
              Target("stage3", "mimalloc", "speed", "one", ("small", 1), 1.0),
              Target("stage2", "glibc", "speed", "one", ("small", 1), 1.0),
              Target("stage4", "mimalloc", "speed", "one", ("ring", 1), 1.0),
              Target("stage4", "mimalloc", "speed", "one", ("small", 1), 1.0),
              Target("stage4", "mimalloc", "time", "median", None, 1.0),
              Target("stage4", "mimalloc", "time", "every", None, 1.25)]
    wanted += [Target(stage, "glibc", "time", "one", ("malloc-large", 1), 1.25) for stage in stages]
    return [t for t in wanted if t.name in stages]


# Issue 15's targets that this suite does not measure, and where they are measured.
NOT_MEASURED = [
    ("stages 2-4 at most 1.1x glibc's CPU time on python3 and on redis (stage 1: its own issue)",
     "`bench/suite/programs.py` (median of per-run CPU-time ratios; Debian's redis-server links "
     "jemalloc, so redis's baseline is jemalloc, not glibc)"),
    ("any power-of-two alignment up to at least 64 MiB on every stage",
     "a test, not a figure: `tests/preload/aligned.cc`, run by `bazel test "
     "//tests/preload:stageN_aligned_test` for N = 1..4"),
]

# How one target fared by one measure. `ratio`: the ratio of medians (the figure the other
# tables give); `where`: the cell it comes from (for "every", the worst one); `spread`: quartiles
# of the per-repetition ratios (None with fewer than two repetitions); `noisy`: whether a spread
# straddles the bound, `noisy_cells` whose ("every": any program's); `over`: the cells that miss.
Verdict = collections.namedtuple("Verdict", "ratio where spread met noisy noisy_cells over")


def _ratio(results, target, cell, key):
    """The target's ratio in one cell (speed: ours over the peer's throughput; time: the inverse),
    as a ratio of medians and per repetition."""
    ours, peer = results[(target.name,) + cell], results[(target.peer,) + cell]
    per_run = [a / b for a, b in zip(ours[key + "_runs"], peer[key + "_runs"])]
    if target.kind == "speed":
        return ours[key] / peer[key], per_run
    return peer[key] / ours[key], [1 / r for r in per_run]


def _meets(target, ratio):
    return ratio >= target.bound if target.kind == "speed" else ratio <= target.bound


def _spread(per_run):
    return quartiles(per_run) if len(per_run) >= 2 else None


def _straddles(target, spread):
    """Whether the interquartile range reaches the bound on both sides (a range of width zero, as
    when every repetition gave the same ratio, straddles nothing)."""
    return spread is not None and spread[0] < spread[2] and spread[0] <= target.bound <= spread[2]


def label(cell):
    return "%s %dt" % cell


def verdict(results, target, style_cells, key):
    """The Verdict of `target` by the measure `key` ("ops": the clock, "cpu_ops": CPU time).

    The ratio of medians decides met or missed, as the other tables would. Next to it, the
    per-repetition ratios: each repetition runs every allocator once, one after the other in a
    shuffled order, so a burst of load on the shared machine tends to hit both sides of one
    repetition's ratio alike, while it moves the medians of each side apart. Their median and
    interquartile range show how far the verdict could move from run to run; a target whose
    range straddles its bound is within noise. For the median program, a repetition's ratio is
    the median over the programs of that repetition's ratios."""
    cells = [target.cell] if target.over == "one" else style_cells
    ratios = {cell: _ratio(results, target, cell, key) for cell in cells}
    if target.over == "median":
        ratio = statistics.median(r for r, _ in ratios.values())
        per_run = [statistics.median(rep) for rep in zip(*(runs for _, runs in ratios.values()))]
        spread = _spread(per_run)
        return Verdict(ratio, None, spread, _meets(target, ratio), _straddles(target, spread), [], [])
    worst = max(cells, key=lambda cell: ratios[cell][0] if target.kind == "time" else -ratios[cell][0])
    noisy = [cell for cell in cells if _straddles(target, _spread(ratios[cell][1]))]
    over = [cell for cell in cells if not _meets(target, ratios[cell][0])]
    return Verdict(ratios[worst][0], worst, _spread(ratios[worst][1]), not over, bool(noisy), noisy, over)


def describe(target):
    relation = ("throughput at least %.2fx %s's" if target.kind == "speed" else "time at most %.2fx %s's") % (
        target.bound, target.peer)
    if target.over == "median":
        return "%s, %s on the median program" % (target.name, relation)
    if target.over == "every":
        return "%s, %s on every program" % (target.name, relation)
    return "%s on %s, %s" % (target.name, label(target.cell), relation)


def figure_text(target, ratio):
    """The ratio to three decimals, or to as many more as it takes for the printed figure to
    fall on the same side of the bound as the ratio itself (0.9996 is "0.9996", not a "1.000"
    that reads as met)."""
    for decimals in range(3, 9):
        text = "%.*f" % (decimals, ratio)
        if _meets(target, float(text)) == _meets(target, ratio):
            return text
    return repr(ratio)


def _columns(target, verdict):
    """The figure, the per-repetition median (quartiles) and the words for one measure."""
    figure = figure_text(target, verdict.ratio) + "x"
    if target.over == "every":
        figure += " (%s)" % label(verdict.where)
    spread = "-" if verdict.spread is None else "%.3fx (%.3f-%.3f)" % (
        verdict.spread[1], verdict.spread[0], verdict.spread[2])
    words = "met" if verdict.met else "missed"
    if target.over == "every" and verdict.over:
        words += " (%s)" % ", ".join(label(cell) for cell in verdict.over)
    if verdict.noisy:
        words += ", within noise"
        if target.over == "every":
            words += " (%s)" % ", ".join(label(cell) for cell in verdict.noisy_cells)
    return [figure, spread, words]


def targets_section(results, stages, style_cells, reps):
    """The page's "Targets" section: one row per target the suite measures, then those it does not."""
    out = ["## Targets\n",
           "Issue 15's targets, judged from this run's own figures: by the clock (as the summary's first "
           "two tables) and by CPU time (as its third). A target is met or missed by the ratio of "
           "medians, the figure the other tables give; next to it, the median of the per-repetition "
           "ratios and, in brackets, their interquartile range (the middle half of the %s), and "
           "\"within noise\" where that range straddles the bound. For the median "
           "program a repetition's ratio is the median over the summary's columns of that repetition's "
           "ratios; for every program the figure is the worst column's, and the noise is that of any "
           "column whose range straddles the bound. Ratios to three decimals, or more where three "
           "would round a figure onto the other side of its bound.\n" % (
               "%d repetitions" % reps if reps > 1 else "repetitions; this run had one, so none is shown"),
           "| target | clock: ratio of medians | clock: per repetition | clock | CPU: ratio of medians "
           "| CPU: per repetition | CPU |",
           "|---|---|---|---|---|---|---|"]
    for target in targets(stages):
        row = [describe(target)]
        for _, key in MEASURES:
            row += _columns(target, verdict(results, target, style_cells, key))
        out.append("| %s |" % " | ".join(row))
    out.append("\nNot measured by this suite:\n")
    for what, where in NOT_MEASURED:
        out.append("- %s: %s." % (what, where))
    out.append("")
    return out
