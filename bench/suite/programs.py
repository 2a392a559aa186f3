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

--callgrind runs each program once per allocator under valgrind's callgrind instead (redis with
--requests requests a test, 5,000 by default; callgrind's counts do not depend on the machine's
load) and prints, for each entry of the malloc family and each of redis's zmalloc wrappers, the
calls the program made and the instructions a call costs, inclusive (what the caller pays):

    bench/suite/programs.py --callgrind --only none,stage3,mimalloc
"""

import argparse
import collections
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's build and peers)

WORKLOAD = os.path.join(run.ROOT, "tests", "preload", "workload.py")


def child_cpu(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def process_cpu(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_cpu(env, port, requests=40000, wrapper=()):
    """The server's CPU seconds while redis-benchmark sends `requests` requests a test; `wrapper`
    (a valgrind command, say) runs the server."""
    server = subprocess.Popen(list(wrapper) + ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                               "--appendonly", "no"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(200 if not wrapper else 1200):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0:
                break
            time.sleep(0.05)
        start = process_cpu(server.pid)
        subprocess.run(["redis-benchmark", "-p", str(port), "-q", "-n", str(requests), "-r", "10000", "-d", "200",
                        "-t", "set,get,lpush,lpop,sadd,hset,mset"], check=True, stdout=subprocess.DEVNULL)
        return process_cpu(server.pid) - start
    finally:
        server.terminate()
        server.wait()


# The entries counted by --callgrind: the malloc family (called from outside the allocator's own
# object), and redis's wrappers around it (zmalloc.c, in the server's object). callgrind names
# mimalloc's malloc_usable_size by its alias malloc_size. zmalloc_get_allocator_info (jemalloc's
# statistics, which redis's cron reads whatever the malloc) is listed for what it adds to the
# total: its calls follow the clock, not the requests, and callgrind's clock is slow.
ENTRIES = ("malloc", "free", "calloc", "realloc", "malloc_usable_size", "malloc_size", "posix_memalign",
           "aligned_alloc")
WRAPPERS = re.compile(r"^z(malloc|free|calloc|realloc|malloc_usable|realloc_usable|calloc_usable|free_usable|"
                      r"malloc_get_allocator_info)$")


def entry_costs(path):
    """{(object, function): [calls, inclusive instructions]} of the calls to ENTRIES from another
    object and to WRAPPERS from anywhere, and the program's total instructions, read from a
    callgrind.out file (name compression; the first event is Ir). The line after `calls=` is
    that call's inclusive cost; every other cost line is a function's own."""
    names = {}
    current = {"ob": None, "fn": None, "cob": None, "cfn": None}
    costs = collections.defaultdict(lambda: [0, 0])
    total = 0
    call = None   # the row the next cost line belongs to, after a calls= line
    with open(path) as f:
        for line in f:
            if line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                ir = int(fields[1]) if len(fields) > 1 else 0
                if call is None:
                    total += ir
                else:
                    call[1] += ir
                    call = None
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key in current:
                m = re.match(r"\((\d+)\)(?: (.*))?$", value)
                if m:
                    kind = "ob" if key.endswith("ob") else "fn"
                    if m.group(2) is not None:
                        names[(kind, m.group(1))] = m.group(2)
                    value = names[(kind, m.group(1))]
                current[key] = value
                if key == "fn":
                    current["cob"] = None
            elif key == "calls":
                callee_ob = current["cob"] or current["ob"]
                function = current["cfn"] or ""
                current["cob"] = None
                call = [0, 0]   # not counted unless it is an entry's
                if (callee_ob != current["ob"] and function in ENTRIES) or WRAPPERS.match(function):
                    call = costs[(os.path.basename(callee_ob), function)]
                    call[0] += int(value.split()[0])
    return costs, total


def callgrind_programs(allocators, programs, args):
    work = tempfile.mkdtemp(prefix="programs-callgrind-")
    print("callgrind's files (for callgrind_annotate) go to %s" % work, flush=True)
    for program in programs:
        for name, lib in allocators:
            out = os.path.join(work, "%s.%s" % (program, name))
            wrapper = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
            env = run.environment(lib)
            if program == "redis":
                redis_cpu(env, args.port, args.requests, wrapper)
            else:   # a fixed hash seed: the totals of two runs differed by 1% with random ones
                env["PYTHONHASHSEED"] = "0"
                subprocess.run(wrapper + ["/usr/bin/python3", "-s", "-B", WORKLOAD], env=env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            costs, total = entry_costs(out)
            print("%-8s %-9s callgrind: %.1f M instructions in all" % (program, name, total / 1e6), flush=True)
            for (obj, function), (calls, ir) in sorted(costs.items(), key=lambda kv: -kv[1][1]):
                print("%-8s %-9s   %-20s %-20s %9d calls %9.1f instructions a call" % (
                    program, name, function, obj, calls, ir / max(calls, 1)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                        help="one more drop-in library under a name of your own (repeatable)")
    parser.add_argument("--only", help="comma-separated allocator names (none, the baseline, is always run)")
    parser.add_argument("--programs", default="python3,redis", help="comma-separated: python3, redis")
    parser.add_argument("--port", type=int, default=16379, help="the redis server's port")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions a call of each entry under callgrind, one run each, instead of CPU time")
    parser.add_argument("--requests", type=int, default=5000, help="with --callgrind: redis-benchmark's -n")
    args = parser.parse_args()
    _, stages = run.build()
    known = [("none", None)] + stages + [p for p in run.PEERS if p[0] != "glibc"]
    allocators = [("none", None)] + [p for p in run.choose_allocators(known, args.lib, args.only, "programs.py")
                                     if p[0] != "none"]
    every = {"python3": lambda env: child_cpu(["/usr/bin/python3", "-s", "-B", WORKLOAD], env),
             "redis": lambda env: redis_cpu(env, args.port)}
    programs = {}
    for program in args.programs.split(","):
        if program not in every:
            sys.exit("programs.py: unknown program %s (known: %s)" % (program, ", ".join(every)))
        if program == "redis" and not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
            print("redis-server or redis-benchmark missing: apt-get install redis-server (skipped)")
            continue
        programs[program] = every[program]
    if args.callgrind:
        return callgrind_programs(allocators, programs, args)
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
