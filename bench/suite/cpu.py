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
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's build, peers and environment)


def cpu_seconds(driver, lib, workload, size):
    return run.run_once(driver, lib, workload, 1, size)["cpu_seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="+", help="WORKLOAD:STEPS, e.g. small:30000000")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", help="comma-separated allocator names, the first one the base")
    args = parser.parse_args()
    driver, stages = run.build()
    allocators = dict(stages + run.PEERS)
    names = args.only.split(",") if args.only else [name for name, _ in stages + run.PEERS]
    unknown = [name for name in names if name not in allocators]
    if unknown:
        sys.exit("cpu.py: unknown allocator %s (known: %s)" % (", ".join(unknown), ", ".join(allocators)))
    for spec in args.workloads:
        workload, _, size = spec.partition(":")
        if not size.isdigit():
            sys.exit("cpu.py: %s: expected WORKLOAD:STEPS" % spec)
        cpu = {name: [] for name in names}
        for _ in range(args.reps):
            for name in names:
                cpu[name].append(cpu_seconds(driver, allocators[name], workload, int(size)))
        for name in names:
            ratios = [a / b for a, b in zip(cpu[name], cpu[names[0]])]
            print("%-12s %-9s CPU median %6.3f s, per-run ratio to %s: median %.2f (%.2f..%.2f)" % (
                workload, name, statistics.median(cpu[name]), names[0], statistics.median(ratios),
                min(ratios), max(ratios)), flush=True)


if __name__ == "__main__":
    main()
