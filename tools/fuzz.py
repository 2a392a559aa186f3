#!/usr/bin/env python3
"""tools/fuzz.py: random runs of the churn program (tests/preload/churn.cc) with drop-in libraries.

`tools/fuzz` builds the program and the four stages' libraries and calls this; it can also be
called directly with paths (tests/preload/fuzz_test.py does):

    tools/fuzz.py --churn PATH --lib 3=PATH [--lib NAME=PATH ...] [--seconds N | --runs N]
                  [--seed S] [--jobs J] [--max-steps N] [--timeout SECONDS] [--keep DIR]

Each run draws, from one random generator seeded by --seed (so a run list is repeatable):
  - a library (a stage) and a seed for the churn program;
  - a limit: none, an address-space limit of 64 to 512 MiB, or a data limit of 16 to 256 MiB
    (prlimit), under which a NULL answer must come with ENOMEM;
  - threads (1 to 8), steps per thread, generations of threads;
  - how the library is loaded: as a user gets it (no variable set), counting and checking
    (EDU_ALLOC_STATS=1 EDU_ALLOC_CHECK=1: the heap is checked at exit), or in the contract's
    debug mode (EDU_OPTIONS=debug=on); and for a stage, some of its own options
    (stage1_brk.fit=best, stage3_segments.secure=on, ...), written into EDU_OPTIONS.
A run passes when it exits 0 within the timeout and prints `churn SEED: ok`. A failing run is
reported with a shell command that repeats it, whether repeating it failed again (the threads
make a run's interleaving differ), and whether the same command fails without the library (then
the program or the limit is at fault, not the library). Exit status 0 when every run passed.
"""

import argparse
import concurrent.futures
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time

MiB = 1 << 20

# Each stage's own options (contract/options.h: "stageN_name.option=value"), drawn per run.
STAGE_OPTIONS = {
    "1": ("stage1_brk", {
        "fit": ["first", "next", "best", "seg"],
        "margin": ["0", "4096", "65536", "1048576"],
        "trim": ["off", "0", "4096", "131072"],
        "break": ["sbrk", "reserved"],
    }),
    "2": ("stage2_pools", {
        "geometry": ["classic", "modern"],
        "debug": ["off", "on"],
        "stats": ["on", "off"],
    }),
    "3": ("stage3_segments", {"secure": ["off", "on"], "stats": ["on", "off"]}),
    "4": ("stage4_threads", {"secure": ["off", "on"], "stats": ["on", "off"]}),
}
MODES = ["usual", "checked", "debug"]


class Run:
    """One run's choices, and the command line and environment that carry them out."""

    def __init__(self, number, rng, libs, churn, max_steps):
        self.number = number
        self.lib = rng.choice(sorted(libs))
        self.lib_path = libs[self.lib]
        self.seed = rng.randrange(1, 1 << 40)
        self.expected = "churn %d: ok" % self.seed  # what any correct malloc makes it print
        self.threads = rng.randint(1, 8)
        self.generations = rng.randint(1, 4)
        kind = rng.choice(["none", "as", "as", "data"])
        if kind == "as":
            self.limit = ["prlimit", "--as=%d" % (rng.randint(64, 512) * MiB)]
        elif kind == "data":
            self.limit = ["prlimit", "--data=%d" % (rng.randint(16, 256) * MiB)]
        else:
            self.limit = []
        # Without a limit the 40 MiB blocks stay until freed: fewer steps keep the footprint to
        # a few hundred MiB, as churn_test.sh does.
        steps = rng.randint(500, 4000 if kind == "none" else 12000)
        self.steps = min(steps, max_steps)
        self.env = {}
        if self.lib in STAGE_OPTIONS:
            mode = rng.choice(MODES)
            options = []
            if mode == "debug":
                options.append("debug=on")
            stage, choices = STAGE_OPTIONS[self.lib]
            for name in sorted(choices):
                if rng.random() < 0.4:
                    options.append("%s.%s=%s" % (stage, name, rng.choice(choices[name])))
            if mode == "checked":
                self.env.update(EDU_ALLOC_STATS="1", EDU_ALLOC_CHECK="1")
            if options:
                self.env["EDU_OPTIONS"] = " ".join(options)
        self.argv = self.limit + [churn, str(self.seed), str(self.threads), str(self.steps),
                                  str(self.generations)]

    def command(self, preload=True):
        """The run as one shell line: the variables the run sets, nothing inherited."""
        env = dict(self.env)
        if preload:
            env["LD_PRELOAD"] = self.lib_path
        unset = "-u EDU_ALLOC_STATS -u EDU_ALLOC_CHECK -u EDU_OPTIONS -u LD_PRELOAD"
        assigns = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items()))
        return "env %s %s %s" % (unset, assigns, " ".join(shlex.quote(a) for a in self.argv))

    def describe(self):
        limit = self.limit[1] if self.limit else "no limit"
        extra = " ".join("%s=%s" % kv for kv in sorted(self.env.items())) or "as a user gets it"
        return "library %s, seed %d, %d threads x %d steps x %d generations, %s, %s" % (
            self.lib, self.seed, self.threads, self.steps, self.generations, limit, extra)


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return "signal %d" % number


def execute(command, expected, timeout, out_prefix):
    """Runs a shell line; returns (verdict, seconds), verdict None when it exited 0 and printed
    the line `expected`."""
    start = time.monotonic()
    with open(out_prefix + ".out", "w") as out, open(out_prefix + ".err", "w") as err:
        try:
            proc = subprocess.Popen(["bash", "-c", command], stdout=out, stderr=err,
                                    start_new_session=True)
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            return "no answer within %g s (a hang, or far too slow)" % timeout, time.monotonic() - start
    seconds = time.monotonic() - start
    with open(out_prefix + ".out") as out:
        printed = out.read()
    if status < 0:
        return "killed by %s" % signal_name(-status), seconds
    if status != 0:
        return "exit status %d" % status, seconds
    if expected not in printed.splitlines():
        return "exit status 0 but no line '%s'" % expected, seconds
    with open(out_prefix + ".err", errors="replace") as err:
        refused = [line.strip() for line in err if "EDU_OPTIONS entry" in line]
    if refused:  # the run ignored an option it was meant to try: STAGE_OPTIONS is out of date
        return "an option was refused: %s" % refused[0], seconds
    return None, seconds


def last_line(path):
    with open(path, errors="replace") as f:
        lines = [line.rstrip("\n") for line in f if line.strip()]
    return lines[-1] if lines else "(nothing on stderr)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--churn", required=True, help="the churn program")
    parser.add_argument("--lib", action="append", default=[], metavar="NAME=PATH",
                        help="a drop-in library; NAME 1 to 4 is a stage, whose options are drawn too")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--seconds", type=float, help="start runs for this long (default 600)")
    group.add_argument("--runs", type=int, help="this many runs")
    parser.add_argument("--seed", type=int, help="the seed of the choices (default: from the clock)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="runs at once (default: the number of cores)")
    parser.add_argument("--max-steps", type=int, default=12000, help="at most this many steps per thread (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a run may take (default %(default)s)")
    parser.add_argument("--retries", type=int, default=3, help="times a failing run is repeated (default %(default)s)")
    parser.add_argument("--keep", help="folder for the failing runs' output (default: a new one in /tmp)")
    parser.add_argument("--verbose", action="store_true", help="print every run")
    args = parser.parse_args(argv)

    libs = {}
    for spec in args.lib:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            parser.error("--lib %s: expected NAME=PATH" % spec)
        if not os.path.isfile(path):
            parser.error("--lib %s: no such file" % spec)
        # the file itself, not bazel-bin's link, which a build in another configuration moves
        libs[name] = os.path.realpath(path)
    if not libs:
        parser.error("no library: give --lib NAME=PATH at least once")
    if not os.access(args.churn, os.X_OK):
        parser.error("--churn %s: not an executable file" % args.churn)
    churn = os.path.realpath(args.churn)
    seconds = args.seconds if args.seconds is not None else (None if args.runs else 600)
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    keep = args.keep or tempfile.mkdtemp(prefix="edu-fuzz-")
    os.makedirs(keep, exist_ok=True)
    print("fuzz: seed %d, libraries %s, %s, %d at once; output of failing runs in %s" % (
        seed, ", ".join("%s=%s" % kv for kv in sorted(libs.items())),
        "%d runs" % args.runs if args.runs else "%g s" % seconds, args.jobs, keep), flush=True)

    lock = threading.Lock()
    tally = {name: [0, 0, 0.0] for name in libs}  # runs, failures, seconds
    deadline = time.monotonic() + seconds if seconds is not None else None
    started = time.monotonic()
    progress = [started]  # when the last progress line was printed: one a minute at most

    def one(run):
        prefix = os.path.join(keep, "run%d" % run.number)
        verdict, took = execute(run.command(), run.expected, args.timeout, prefix)
        report = None
        if verdict is not None:
            again = 0
            for k in range(args.retries):
                if execute(run.command(), run.expected, args.timeout, "%s.retry%d" % (prefix, k))[0] is not None:
                    again += 1
            libc, _ = execute(run.command(preload=False), run.expected, args.timeout, prefix + ".libc")
            report = [
                "FAILED run %d (%s): %s" % (run.number, run.describe(), verdict),
                "  stderr's last line: %s" % last_line(prefix + ".err"),
                "  repeated %s: failed %d" % ("once" if args.retries == 1 else "%d times" % args.retries, again),
                "  without the library: %s" % ("passes" if libc is None else "fails too (%s): the program or the limit, not the library" % libc),
                "  repeat it: %s" % run.command(),
                "  its output: %s.out, %s.err" % (prefix, prefix),
            ]
        else:
            for suffix in (".out", ".err"):
                os.remove(prefix + suffix)
        with lock:
            entry = tally[run.lib]
            entry[0] += 1
            entry[2] += took
            if report:
                entry[1] += 1
                print("\n".join(report), flush=True)
            elif args.verbose:
                print("ok run %d (%.1f s): %s" % (run.number, took, run.command()), flush=True)
            now = time.monotonic()
            if not args.verbose and now - progress[0] >= 60:
                progress[0] = now
                done = sum(t[0] for t in tally.values())
                failed = sum(t[1] for t in tally.values())
                print("fuzz: %d runs in %.0f s, %d failed" % (done, now - started, failed), flush=True)

    number = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        pending = set()
        while True:
            if args.runs is not None and number >= args.runs:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if len(pending) >= args.jobs:
                done, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in done:
                    future.result()
                continue
            number += 1
            pending.add(pool.submit(one, Run(number, rng, libs, churn, args.max_steps)))
        for future in concurrent.futures.as_completed(pending):
            future.result()

    for name in sorted(tally):
        runs, failed, took = tally[name]
        print("fuzz: library %s: %d run%s, %d failed, %.0f s of runs" % (
            name, runs, "" if runs == 1 else "s", failed, took))
    total = sum(t[1] for t in tally.values())
    print("fuzz: %d run%s, %s (the same runs again: --seed %d --runs %d)" % (
        number, "" if number == 1 else "s", "%d failed" % total if total else "every run passed", seed, number))
    if not total and not args.keep:
        os.rmdir(keep)
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
