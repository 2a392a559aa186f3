#!/usr/bin/env python3
"""bench/suite/programs.py: CPU time of real programs under each drop-in library, against glibc.

Builds the stages' drop-in libraries as run.py does (--config=opt) and runs, interleaved (each
repetition runs every allocator once), python3 on tests/preload/workload.py and, when
redis-server and redis-benchmark are installed (`apt-get install redis-server`; not part of
tools/setup, since no test needs them), a redis server driven by redis-benchmark on 127.0.0.1.
Prints the median CPU time (user + system) and the median of per-run ratios to the baseline.
Debian's redis-server links jemalloc: its baseline row ("none") is jemalloc, not glibc.

    bench/suite/programs.py            # 5 repetitions
    bench/suite/programs.py --reps 3
    bench/suite/programs.py --programs redis --lib old3=/tmp/old.so --only none,old3,stage3

--lib NAME=PATH adds a library of your own (a stage built at another commit, say), --only picks
the allocators (the baseline "none" is always measured, first), --programs the programs, and
--port the redis server's port (two runs at once on one machine need different ones).
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's build and peers)


def child_cpu(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def process_cpu(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(env, port):
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        start = process_cpu(server.pid)
        subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", "40000", "-r", "10000", "-d", "200",
                        "-t", "set,get,lpush,lpop,sadd,hset,mset"], check=True, stdout=subprocess.DEVNULL)
        return process_cpu(server.pid) - start
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                        help="one more drop-in library under a name of your own (repeatable)")
    parser.add_argument("--only", help="comma-separated allocator names (none, the baseline, is always run)")
    parser.add_argument("--programs", default="python3,redis", help="comma-separated: python3, redis")
    parser.add_argument("--port", type=int, default=16379, help="the redis server's port")
    args = parser.parse_args()
    _, stages = run.build()
    known = [("none", None)] + stages + [p for p in run.PEERS if p[0] != "glibc"]
    allocators = [("none", None)] + [p for p in run.choose_allocators(known, args.lib, args.only, "programs.py")
                                     if p[0] != "none"]
    workload = os.path.join(run.ROOT, "tests", "preload", "workload.py")
    every = {"python3": lambda env: child_cpu(["/usr/bin/python3", "-s", "-B", workload], env),
             "redis": lambda env: redis_cpu(env, args.port)}
    programs = {}
    for program in args.programs.split(","):
        if program not in every:
            sys.exit("programs.py: unknown program %s (known: %s)" % (program, ", ".join(every)))
        if program == "redis" and not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
            print("redis-server or redis-benchmark missing: apt-get install redis-server (skipped)")
            continue
        programs[program] = every[program]
    for program, measure in programs.items():
        cpu = {name: [] for name, _ in allocators}
        for _ in range(args.reps):
            for name, lib in allocators:
                cpu[name].append(measure(run.environment(lib)))
        for name, _ in allocators:
            ratios = [a / b for a, b in zip(cpu[name], cpu["none"])]
            print("%-8s %-9s CPU median %.3f s, median per-run ratio to the baseline %.2f" % (
                program, name, statistics.median(cpu[name]), statistics.median(ratios)), flush=True)


if __name__ == "__main__":
    main()
