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

PORT = 16379


def child_cpu(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def process_cpu(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(env):
    server = subprocess.Popen(["redis-server", "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if subprocess.run(["redis-cli", "-p", str(PORT), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        start = process_cpu(server.pid)
        subprocess.run(["redis-benchmark", "-p", str(PORT), "-q", "-n", "40000", "-r", "10000", "-d", "200",
                        "-t", "set,get,lpush,lpop,sadd,hset,mset"], check=True, stdout=subprocess.DEVNULL)
        return process_cpu(server.pid) - start
    finally:
        server.terminate()
        server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    _, stages = run.build()
    allocators = [("none", None)] + stages + [p for p in run.PEERS if p[0] != "glibc"]
    workload = os.path.join(run.ROOT, "tests", "preload", "workload.py")
    programs = {"python3": lambda env: child_cpu(["/usr/bin/python3", "-s", "-B", workload], env)}
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        programs["redis"] = redis_cpu
    else:
        print("redis-server or redis-benchmark missing: apt-get install redis-server (skipped)")
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
