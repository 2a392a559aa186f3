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


def seconds(driver, lib, workload, size):
    result = run.run_once(driver, lib, workload, 1, size)
    return result["cpu_seconds"], result["seconds"]


def report(workload, names, times, what):
    for name in names:
        ratios = [a / b for a, b in zip(times[name], times[names[0]])]
        print("%-12s %-9s %s median %6.3f s, per-run ratio to %s: median %.3f (%.3f..%.3f)" % (
            workload, name, what, statistics.median(times[name]), names[0], statistics.median(ratios),
            min(ratios), max(ratios)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="+", help="WORKLOAD:STEPS, e.g. small:30000000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", help="comma-separated allocator names, the first one the base")
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                        help="one more drop-in library under a name of your own (repeatable)")
    parser.add_argument("--clock", action="store_true", help="report wall-clock seconds too")
    parser.add_argument("--callgrind", action="store_true", help="count instructions per step first")
    args = parser.parse_args()
    driver, stages = run.build()
    allocators = dict(stages + run.PEERS)
    for spec in args.lib:
        name, _, path = spec.partition("=")
        if not name or not os.path.exists(path):
            sys.exit("cpu.py: --lib %s: expected NAME=PATH of an existing library" % spec)
        allocators[name] = os.path.abspath(path)
    names = args.only.split(",") if args.only else [name for name, _ in stages + run.PEERS]
    unknown = [name for name in names if name not in allocators]
    if unknown:
        sys.exit("cpu.py: unknown allocator %s (known: %s)" % (", ".join(unknown), ", ".join(allocators)))
    for spec in args.workloads:
        workload, _, size = spec.partition(":")
        if not size.isdigit():
            sys.exit("cpu.py: %s: expected WORKLOAD:STEPS" % spec)
        if args.callgrind:
            for name in names:
                small, large = (run.instructions(driver, allocators[name], workload, n) for n in (100_000, 600_000))
                print("%-12s %-9s callgrind %.2f instructions per step" % (workload, name, (large - small) / 500_000),
                      flush=True)
        cpu = {name: [] for name in names}
        clock = {name: [] for name in names}
        for _ in range(args.reps):
            for name in names:
                c, w = seconds(driver, allocators[name], workload, int(size))
                cpu[name].append(c)
                clock[name].append(w)
        report(workload, names, cpu, "CPU")
        if args.clock:
            report(workload, names, clock, "clock")


if __name__ == "__main__":
    main()
