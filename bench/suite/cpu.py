#!/usr/bin/env python3
"""bench/suite/cpu.py: CPU time of the suite's driver under each drop-in library, interleaved.

On a loaded machine a process waits for a core, which inflates wall-clock seconds but not the
CPU seconds it spends. run.py reports both for every workload; this runs chosen workloads, at
chosen sizes, for chosen allocators: bench/suite/driver once per (repetition, allocator), each
repetition running every allocator in turn, and prints the median CPU seconds the driver reports
(user + system of the whole process) and the median of per-run ratios to the first allocator
named. Builds as run.py does (--config=opt); the environment is the one a user gets.

    bench/suite/cpu.py small:30000000 ring:30000000                   # stages 1-4 and the peers
    bench/suite/cpu.py --reps 7 --only glibc,stage2 small:30000000    # the first named is the base
    bench/suite/cpu.py --lib old=/tmp/old.so --only mimalloc,old,stage4 ring:20000000
    bench/suite/cpu.py --reps 7 --only mimalloc,stage3 larson:4000000:2   # WORKLOAD:STEPS:THREADS
    bench/suite/cpu.py --callgrind --threaded --reps 1 --only stage2 small:1000000

A third field gives the driver's thread count (1 when left out). --threaded starts and joins a
thread before the workload (driver --threaded): one thread works, but in a process glibc counts
as multi-threaded, so stages 1-3 take their lock on every call and nobody contends for it.
--regimes runs a probe before each repetition (mimalloc's larson, 2 threads) and reports the
repetitions in which its two threads ran at once ("both cores") apart from the others ("one
core"): on a shared virtual machine the second core comes and goes, and a contended lock
behaves differently in the two cases.

--lib NAME=PATH adds a library of your own (a stage built at another commit, say) to those the
suite knows. With --clock it prints the same for wall-clock seconds, measured in the same runs;
with --callgrind, first the instructions per step that callgrind counts (run.py's method: the
difference between a 100,000-step and a 600,000-step run), for the same libraries.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's build, peers and environment)


def seconds(driver, lib, workload, threads, size, threaded):
    result = run.run_once(driver, lib, workload, threads, size, threaded)
    return result["cpu_seconds"], result["seconds"]


def both_cores(driver):
    """Whether two threads ran at once just now: mimalloc's larson with 2 threads used at least
    1.4 CPU seconds per wall-clock second (about 1.0 when they took turns on one core)."""
    result = run.run_once(driver, dict(run.PEERS)["mimalloc"], "larson", 2, 4_000_000)
    return result["cpu_seconds"] >= 1.4 * result["seconds"]


def report(workload, names, times, what):
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[names[0]])]
        print("%-15s %-9s %s median %6.3f s, per-run ratio to %s: median %.3f (%.3f..%.3f)" % (
            workload, name, what, statistics.median(times[name]), names[0], statistics.median(ratios),
            min(ratios), max(ratios)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="+", help="WORKLOAD:STEPS[:THREADS], e.g. small:30000000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", help="comma-separated allocator names, the first one the base")
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                        help="one more drop-in library under a name of your own (repeatable)")
    parser.add_argument("--clock", action="store_true", help="report wall-clock seconds too")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per step first")
    parser.add_argument("--threaded", action="store_true",
                        help="start and join a thread before each workload (the locked entry, uncontended)")
    parser.add_argument("--regimes", action="store_true",
                        help="report repetitions whose probe ran on both cores apart from the rest")
    args = parser.parse_args()
    driver, stages = run.build()
    chosen = run.choose_allocators(stages + run.PEERS, args.lib, args.only, "cpu.py")
    allocators = dict(chosen)
    names = [name for name, _ in chosen]
    for spec in args.workloads:
        workload, _, rest = spec.partition(":")
        size, _, threads = rest.partition(":")
        threads = threads or "1"
        if not size.isdigit() or not threads.isdigit() or int(threads) < 1:
            sys.exit("cpu.py: %s: expected WORKLOAD:STEPS or WORKLOAD:STEPS:THREADS" % spec)
        label = workload if threads == "1" else "%s %st" % (workload, threads)
        if args.threaded:
            label += " thr"
        if args.callgrind:
            for name in names:
                small, large = (run.instructions(driver, allocators[name], workload, n, int(threads), args.threaded)
                                for n in (100_000, 600_000))
                print("%-15s %-9s callgrind %.2f instructions per step" % (label, name, (large - small) / 500_000),
                      flush=True)
        runs = {}  # regime (None without --regimes) -> (CPU seconds, clock seconds) by allocator
        for _ in range(args.reps):
            regime = ("both cores" if both_cores(driver) else "one core") if args.regimes else None
            cpu, clock = runs.setdefault(regime, ({name: [] for name in names}, {name: [] for name in names}))
            for name in names:
                c, w = seconds(driver, allocators[name], workload, int(threads), int(size), args.threaded)
                cpu[name].append(c)
                clock[name].append(w)
        for regime, (cpu, clock) in sorted(runs.items(), key=lambda item: item[0] or ""):
            tag = label if regime is None else "%s [%s, %d runs]" % (label, regime, len(cpu[names[0]]))
            report(tag, names, cpu, "CPU")
            if args.clock:
                report(tag, names, clock, "clock")


if __name__ == "__main__":
    main()
