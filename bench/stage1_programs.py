#!/usr/bin/env python3
"""bench/stage1_programs.py: real programs with stage 1 as their malloc, against glibc.

Runs each program under glibc and under each stage 1 drop-in library given (LD_PRELOAD) with each
fit policy, interleaved round by round so that a loaded machine slows every configuration alike,
and prints the median wall time of each and its ratio to glibc's median, as a markdown table.
Several libraries (`--lib before=OLD.so --lib after=NEW.so`, labelled) compare two builds in one
run; a library given without `LABEL=` is labelled by its file name.

  bazel build //stage1_brk:libedu_stage1.so
  python3 bench/stage1_programs.py --lib bazel-bin/stage1_brk/libedu_stage1.so --rounds 5
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

# Every object through malloc: CPython's small-object allocator is switched off.
PYTHON_SCRIPT = r"""
import json
for round in range(2):
    table = {}
    for i in range(20000):
        table["key%d" % i] = [i, str(i) * 3, {"n": i}]
    text = json.dumps(table)
    back = json.loads(text)
    del table, back, text
"""


def programs(repo):
    """(name, argv, extra environment) for each program measured."""
    return [
        ("python3 (PYTHONMALLOC=malloc)", [sys.executable, "-c", PYTHON_SCRIPT], {"PYTHONMALLOC": "malloc"}),
        ("git log -p -300", ["git", "-C", repo, "log", "-p", "-300"], {}),
        ("g++ -O1 -c contract/diagnostics.cc", ["g++", "-std=c++20", "-O1", "-I", repo, "-c",
                                                 os.path.join(repo, "contract/diagnostics.cc"), "-o", os.devnull], {}),
    ]


def run(argv, env):
    start = time.monotonic()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.monotonic() - start


def library(arg):
    """(label, absolute path) of a --lib argument: LABEL=PATH or PATH."""
    label, sep, path = arg.partition("=")
    if not sep:
        label, path = os.path.basename(arg), arg
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError("%s: no such library" % path)
    return label, os.path.abspath(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lib", required=True, action="append", type=library,
                        help="a stage 1 drop-in library, PATH or LABEL=PATH (repeat to compare builds)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fits", default="seg,first,next,best")
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    args = parser.parse_args()
    labels = [label for label, _ in args.lib]
    if len(set(labels)) != len(labels):
        parser.error("two libraries labelled alike (%s): give LABEL=PATH" % ", ".join(labels))
    prefix = (lambda label: "stage 1 ") if len(args.lib) == 1 else (lambda label: label + " ")
    configs = [("glibc", {})] + [
        (prefix(label) + "fit=" + fit, {"LD_PRELOAD": path, "EDU_OPTIONS": "stage1_brk.fit=" + fit})
        for fit in args.fits.split(",") for label, path in args.lib]
    print("| program | " + " | ".join(name for name, _ in configs) + " |")
    print("|---" * (len(configs) + 1) + "|")
    for name, argv, extra in programs(args.repo):
        times = {config: [] for config, _ in configs}
        for _ in range(args.rounds):
            for config, env_extra in configs:
                env = dict(os.environ, **extra, **env_extra)
                times[config].append(run(argv, env))
        base = statistics.median(times["glibc"])
        cells = ["%.2f s" % base] + [
            "%.2f s (%.2fx)" % (statistics.median(times[c]), statistics.median(times[c]) / base)
            for c, _ in configs[1:]]
        print("| %s | %s |" % (name, " | ".join(cells)), flush=True)


if __name__ == "__main__":
    main()
