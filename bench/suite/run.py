#!/usr/bin/env python3
"""bench/suite/run.py: every benchmark workload against every allocator, in one run.

Builds the driver (bench/suite/driver.cc) and every stage's drop-in library with --config=opt,
then runs the driver once per (allocator, workload, threads, repetition), choosing the
allocator with LD_PRELOAD: the stages' libraries, Debian's mimalloc and jemalloc, and glibc
(no preload). Reports medians, the ratio to mimalloc, peak RSS, and the marginal instructions
per operation counted by valgrind's callgrind (the difference between two run lengths, so
process start-up and allocator initialisation cancel out), and which of issue 15's targets the
run met (bench/suite/report.py computes the summary and the targets; --quick prints the
targets). Writes docs/benchmarks.md and docs/bench/*.svg unless --quick.

    bench/suite/run.py                 # the full suite (about 20 minutes on 2 cores)
    bench/suite/run.py --reps 3        # fewer repetitions
    bench/suite/run.py --quick         # smoke run: 1 repetition, small sizes, prints only
    bench/suite/run.py --quick --reps 3   # the same with 3 repetitions: the targets' spreads
"""

import argparse
import datetime
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (the summary and the targets, computed from the results)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = [("glibc", None), ("mimalloc", LIBDIR + "/libmimalloc.so.2"), ("jemalloc", LIBDIR + "/libjemalloc.so.2")]

# workload -> (size of a full run, size of a quick run, thread counts)
WORKLOADS = {
    "ring": (5_000_000, 200_000, [1]),
    "small": (5_000_000, 200_000, [1]),
    "realloc": (200_000, 20_000, [1]),
    "fragment": (20_000, 2_000, [1]),
    "larson": (4_000_000, 200_000, [1, 2, 4, 8]),
    "xmalloc": (2_000_000, 100_000, [1, 2, 4, 8]),
    "false-sharing": (200_000, 20_000, [1, 2, 4, 8]),
    "malloc-large": (20_000, 2_000, [1]),
    "cfrac": (1_000_000, 50_000, [1, 2]),
    "espresso": (1_000_000, 50_000, [1, 2]),
    "glibc-simple": (2_000_000, 100_000, [1]),
    "glibc-thread": (1_000_000, 50_000, [1, 2]),
    "alloc-test": (1_000_000, 50_000, [1, 2]),
    "mstress": (1_000_000, 50_000, [1, 2]),
}
# The programs in the style of mimalloc-bench, summarised against mimalloc and glibc.
BENCH_STYLE = ["cfrac", "espresso", "larson", "xmalloc", "glibc-simple", "glibc-thread", "alloc-test",
               "false-sharing", "malloc-large", "mstress"]
DESCRIPTIONS = {
    "ring": "HAKMEM's random mixed ring: 8192 slots, 16..1039 bytes, free if occupied else allocate. "
            "(One thread: stages 1-3 skip their lock here, but every call still passes the drop-in "
            "library's entry: a jump and the lock's flag test in stages 1 and 2, one test before the "
            "inlined fast path in stages 3 and 4 (stage 3's also answers whether to lock); "
            "docs/stage3_segments.md's "
            "random_mixed table measures stage 3's in-process entry, called directly.)",
    "small": "the same ring with 16..128 bytes",
    "realloc": "256 buffers grown by realloc in random order, 16..271 bytes a step, up to 64 KiB",
    "fragment": "interleaved small and large blocks, small ones freed, medium requests, four rounds",
    "larson": "a larson variant (not bench/stage4's larson-like, which keeps larson's usual parameters): "
              "threads replace random blocks (16..512 B) in their arrays; arrays move to the next "
              "thread every round, so most frees are remote",
    "xmalloc": "producer threads allocate batches (16..256 B), consumer threads free them",
    "false-sharing": "each thread frees an object the main thread allocated next to the others', "
                     "then allocates 8 bytes and writes them 1000 times, over and over",
    "malloc-large": "20 buffers of 5..25 MiB; each step replaces a random one and writes its first byte "
                    "(mimalloc-bench's malloc-large pattern)",
    "cfrac": "cfrac-like: short-lived multi-precision numbers of 2..40 words made from a pool of 16 "
             "operands, most dying young and in birth order",
    "espresso": "espresso-like: covers of 8..128 bit-set cubes (8..520 B) grown with realloc and freed "
                "a cover at a time, a few sets kept across covers",
    "glibc-simple": "glibc's bench-malloc-simple pattern: 1000 blocks of one size (16..256 B) allocated, "
                    "then all freed, size after size",
    "glibc-thread": "glibc's bench-malloc-thread pattern: per thread, 4096 slots replaced at random with "
                    "blocks of 8 B..32 KiB (mostly small); no sharing",
    "alloc-test": "alloc-test-like: per thread, 1024 slots replaced at random with 8 B..32 KiB blocks "
                  "(each size class half as likely as the one below), first 64 bytes written",
    "mstress": "mstress-like (mimalloc's test-stress): threads replace random slots of one shared array "
               "(frees are often remote), some blocks kept locally and freed in bulk, 1 in 256 up to 256 KiB",
}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def build():
    """Builds the driver and every stage's drop-in library; returns their paths."""
    query = sh(["bazel", "query", "--noshow_progress", 'attr(name, "libedu_stage[0-9]+\\.so", //...)'], cwd=ROOT)
    libs = sorted(line.strip() for line in query.splitlines() if line.strip())
    subprocess.run(["bazel", "build", "--config=opt", "--noshow_progress", "//bench/suite:driver"] + libs,
                   cwd=ROOT, check=True, stderr=subprocess.DEVNULL)
    bin_dir = sh(["bazel", "info", "--config=opt", "bazel-bin"], cwd=ROOT).strip()
    driver = os.path.join(bin_dir, "bench/suite/driver")
    stages = []
    for label in libs:
        package, name = label[2:].split(":")
        number = re.search(r"libedu_stage(\d+)", name).group(1)
        stages.append(("stage" + number, os.path.join(bin_dir, package, name)))
    return driver, stages


def environment(preload, valgrind=False):
    """The environment a user's program gets: LD_PRELOAD and nothing else of ours. The drop-in
    library then picks its settings as it does for anyone (stages 2-4 count no statistics
    unless EDU_ALLOC_STATS or EDU_ALLOC_CHECK is set)."""
    env = dict(os.environ)
    for name in ("LD_PRELOAD", "EDU_OPTIONS", "EDU_ALLOC_STATS", "EDU_ALLOC_CHECK"):
        env.pop(name, None)
    if preload:
        env["LD_PRELOAD"] = preload
    if valgrind:  # valgrind caps the real break at 8 MiB: stage 1 grows a private one instead
        env["EDU_OPTIONS"] = "stage1_brk.break=reserved"
    return env


def choose_allocators(known, lib_specs, only, tool):
    """[(name, library)] that a tool runs: `known` (a list of pairs) plus each --lib NAME=PATH,
    all of them or those --only names, in its order. Exits with a message naming `tool`."""
    allocators = dict(known)
    for spec in lib_specs:
        name, _, path = spec.partition("=")
        if not name or not os.path.exists(path):
            sys.exit("%s: --lib %s: expected NAME=PATH of an existing library" % (tool, spec))
        allocators[name] = os.path.abspath(path)
    names = only.split(",") if only else list(allocators)
    unknown = [name for name in names if name not in allocators]
    if unknown:
        sys.exit("%s: unknown allocator %s (known: %s)" % (tool, ", ".join(unknown), ", ".join(allocators)))
    return [(name, allocators[name]) for name in names]


def run_once(driver, preload, workload, threads, size, threaded=False):
    """One run of the driver; `threaded` starts and joins a thread first (driver --threaded)."""
    flags = ["--threaded"] if threaded else []
    out = sh([driver] + flags + [workload, str(threads), str(size)], env=environment(preload))
    return json.loads(out.strip().splitlines()[-1])


def instructions(driver, preload, workload, size, threads=1, threaded=False):
    """Total instructions callgrind counts for one run of the driver."""
    flags = ["--threaded"] if threaded else []
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                           driver] + flags + [workload, str(threads), str(size)],
                          env=environment(preload, valgrind=True), text=True, capture_output=True, check=True)
    match = re.search(r"Collected\s*:\s*(\d+)", proc.stderr)
    if not match:
        raise RuntimeError("callgrind printed no total:\n" + proc.stderr[-2000:])
    return int(match.group(1))


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    return "%s, %d cores, %.0f GiB, %s" % (model, os.cpu_count(), mem_kib / 2**20, platform.platform())


def fmt_rate(x):
    return "%.2f M" % (x / 1e6) if x >= 1e5 else "%.0f k" % (x / 1e3)


def plot(results, allocators, workload, threads, path):
    """Throughput against threads, one line per allocator, as SVG through gnuplot."""
    lines = ["set terminal svg size 800,480 dynamic", "set output '%s'" % path,
             "set title '%s: million operations per second (median)' noenhanced" % workload,
             "set xlabel 'threads'", "set ylabel 'M ops/s'", "set logscale x 2", "set key outside right noenhanced",
             "set grid", "set xtics (%s)" % ", ".join(str(t) for t in threads)]
    series = []
    for i, name in enumerate(allocators):
        lines.append("$d%d << EOD" % i)
        for t in threads:
            lines.append("%d %f" % (t, results[(name, workload, t)]["ops"] / 1e6))
        lines.append("EOD")
        series.append("$d%d using 1:2 with linespoints lw 2 title '%s'" % (i, name))
    lines.append("plot " + ", ".join(series))
    subprocess.run(["gnuplot"], input="\n".join(lines) + "\n", text=True, check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, help="repetitions per measurement (median reported; 5, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 repetition unless --reps, print only")
    parser.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    args = parser.parse_args()
    reps = args.reps or (1 if args.quick else 5)

    driver, stages = build()
    load_at_start, started = os.getloadavg()[0], datetime.datetime.utcnow()
    allocators = stages + PEERS
    missing = [name for name, lib in allocators if lib and not os.path.exists(lib)]
    if missing:
        sys.exit("run.py: missing libraries for %s (tools/setup installs the peers)" % ", ".join(missing))

    # Interleaved: each repetition runs every allocator once, so a burst of load on the shared
    # machine hits all of them alike, and the median of each is taken afterwards. Each repetition
    # shuffles the order (seeded with its number, so a rerun repeats it), so that no allocator
    # always runs right after the same one: in a fixed order (or one merely rotated) stage 4
    # always followed stage 3, whose lock-bound 2-thread runs seemed to slow the next run (on
    # glibc-thread at 2 threads, mimalloc right after stage 3 did 124 M operations a second, after
    # glibc 204 M, in one interleaved series; another series did not repeat it: 2-thread runs
    # here vary by up to 6x from one run to the next). Shuffled, an effect of that kind becomes
    # noise that the median absorbs instead of a bias against one allocator.
    results = {}
    for workload, (full, quick, thread_counts) in WORKLOADS.items():
        size = quick if args.quick else full
        for threads in thread_counts:
            runs = {name: [] for name, _ in allocators}
            for rep in range(reps):
                order = list(allocators)
                random.Random(rep).shuffle(order)
                for name, lib in order:
                    runs[name].append(run_once(driver, lib, workload, threads, size))
            for name, _ in allocators:
                # medians, and each repetition's figures in order for the targets' per-repetition
                # ratios; CPU: operations per CPU second of the whole process (setup included)
                results[(name, workload, threads)] = report.cell(runs[name])
                print("%-14s %-9s %d thread(s): %s ops/s, peak RSS %d KiB" % (
                    workload, name, threads, fmt_rate(results[(name, workload, threads)]["ops"]),
                    results[(name, workload, threads)]["rss"]), flush=True)

    counts = {}
    if not args.no_callgrind and shutil.which("valgrind"):
        small, large = (20_000, 120_000) if args.quick else (100_000, 600_000)
        for name, lib in allocators:
            for workload in ("ring", "small"):
                a = instructions(driver, lib, workload, small)
                b = instructions(driver, lib, workload, large)
                counts[(name, workload)] = (b - a) / (large - small)
                print("callgrind %-9s %-6s %.1f instructions per step" % (name, workload, counts[(name, workload)]),
                      flush=True)
    names = [name for name, _ in allocators]
    stage_names = [name for name, _ in stages]
    # The programs in the style of mimalloc-bench at 1 and 2 threads: the summary's columns.
    style_cells = [(w, t) for w in BENCH_STYLE for t in WORKLOADS[w][2] if t <= 2]
    if args.quick:
        print("\n".join(report.targets_section(results, stage_names, style_cells, reps)))
        return

    load_at_end, ended = os.getloadavg()[0], datetime.datetime.utcnow()
    # The benchmark alone keeps one or two runnable threads: above that, other jobs shared the cores.
    quiet = ("no other jobs to speak of" if max(load_at_start, load_at_end) <= 2.5
             else "other jobs shared the 2 cores")
    out = []
    out.append("# Benchmarks\n")
    out.append("Measured by `bench/suite/run.py --reps %d` on %s, %s to %s UTC, %s. Every allocator runs the same "
               "driver (`bench/suite/driver.cc`), chosen with `LD_PRELOAD`: the stages' drop-in "
               "libraries (built with `--config=opt`), Debian's mimalloc 2.0 and jemalloc 5.3, and "
               "glibc's malloc (no preload). **Entry measured: the drop-in library**, with the settings "
               "a user gets: no `EDU_OPTIONS`, so stages 2-4 count no statistics, stage 1 grows the "
               "real break, and stages 1-3 take their lock only once a second thread exists "
               "(`contract/locked.h`). The chapters' in-process figures (single-thread entry, called "
               "directly) skip the preload (an indirect jump in stages 1 and 2; in stages 3 and 4 a "
               "test before the fast path compiled into the exported malloc and free, which in stage 3 "
               "also answers whether to lock) and, in stages 1 and 2, the lock test, so they "
               "execute a few instructions fewer per call; their ratios also differ from these because "
               "they time one thread's CPU seconds, with the in-process defaults (stages 2-4 counting "
               "statistics unless a row says otherwise). Figures are medians of %d interleaved runs "
               "(each repetition runs every allocator once, in an order shuffled anew, so that none always "
               "follows the same one); the 1-minute load average was %.1f when the "
               "runs began and %.1f when they ended (%s), so compare ratios within one table, and prefer "
               "the instruction counts for fast paths. 4 and 8 threads oversubscribe the 2 cores. The "
               "section [Targets](#targets), after the summary, says which of issue 15's targets this run "
               "met: next to each ratio of medians it gives the median and the interquartile range of the "
               "per-repetition ratios (one repetition's runs follow each other, so a burst of load tends "
               "to hit both sides of its ratio alike), and marks a target \"within noise\" when that "
               "range straddles its bound.\n" % (
                   reps, started.date().isoformat(), started.strftime("%H:%M"), ended.strftime("%H:%M"),
                   machine(), reps, load_at_start, load_at_end, quiet))
    out.extend(report.summary(results, names, style_cells))
    out.extend(report.targets_section(results, stage_names, style_cells, reps))
    for workload, (full, _, thread_counts) in WORKLOADS.items():
        out.append("## %s\n\n%s. Size %s.\n" % (workload, DESCRIPTIONS[workload], format(full, ",")))
        header = "| allocator | " + " | ".join("%d thr: ops/s (x mimalloc)" % t for t in thread_counts) + \
                 " | peak RSS (%d thr) |" % thread_counts[-1]
        out.append(header)
        out.append("|" + "---|" * (len(thread_counts) + 2))
        for name in names:
            cells = []
            for t in thread_counts:
                r, m = results[(name, workload, t)], results[("mimalloc", workload, t)]
                cells.append("%s (%.2fx)" % (fmt_rate(r["ops"]), r["ops"] / m["ops"]))
            rss = results[(name, workload, thread_counts[-1])]["rss"]
            out.append("| %s | %s | %.1f MiB |" % (name, " | ".join(cells), rss / 1024))
        if len(thread_counts) > 1:
            os.makedirs(os.path.join(ROOT, "docs", "bench"), exist_ok=True)
            svg = os.path.join("bench", workload + ".svg")
            plot(results, names, workload, thread_counts, os.path.join(ROOT, "docs", svg))
            out.append("\n![%s throughput by threads](%s)" % (workload, svg))
        out.append("")
    if counts:
        out.append("## Instructions per step (callgrind)\n")
        out.append("Marginal instructions per ring step (one malloc or one free, plus the driver's own "
                   "few instructions), from the difference between a 100,000-step and a 600,000-step "
                   "run under `valgrind --tool=callgrind`: repeatable on a noisy machine.\n")
        out.append("| allocator | ring (16..1039 B) | small (16..128 B) |")
        out.append("|---|---|---|")
        for name in names:
            out.append("| %s | %.1f | %.1f |" % (name, counts[(name, "ring")], counts[(name, "small")]))
        out.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
