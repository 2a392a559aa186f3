#!/usr/bin/env python3
"""tests/misuse/misuse_test.py: every misuse probe under every allocator, each verdict checked
against the table in docs/misuse.md (the table is the specification; this test keeps it true).

    misuse_test.py DOCS PROBES STAGE=LIBRARY...

Each probe (tests/misuse/probes.c) runs under the C library's malloc, and under each stage's
drop-in library in its default mode and in debug mode (EDU_OPTIONS=debug=on). A verdict is
`caught: WORDS` (SIGABRT after a diagnostic containing WORDS; for a stage, one line
"edu-alloc <that stage>: <call>(<pointer>): ..."), `missed` (exit 0; `missed (REASON)` excuses a
stage from the glibc rule below, the docs saying why), `crash: SIGNAL` (`crash: SIGNAL (REASON)`
excuses it likewise: a known bug, the docs saying which), or, for a probe that
checks an answer rather than misuse, the ANSWER itself (`ENOMEM`, `EINVAL`, `zeroed`, ...): the
probe checked it, exited 0 and printed it last on stdout. Two rules are checked beyond the
table: a stage's default mode catches every probe the C library catches, and debug mode
catches every misuse probe (one whose glibc cell is not an answer).
"""
import os
import re
import signal
import subprocess
import sys

VERDICTS = ("caught", "missed", "crash")  # any other cell is an answer the probe prints


def is_answer(cell):
    return not cell.startswith(VERDICTS)


def parse_table(path):
    """Rows of the markdown table whose header starts with '| probe | glibc |'."""
    rows, header = {}, None
    for line in open(path, encoding="utf-8"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            if line.startswith("| probe | glibc |"):
                header = cells
            continue
        if not line.startswith("|"):
            break
        if set(cells[0]) <= set("-: "):
            continue
        rows[cells[0].strip("`")] = dict(zip(header[1:], (c.replace("`", "") for c in cells[1:])))
    if header is None:
        sys.exit(f"{path}: no table with a '| probe | glibc |' header")
    return header[1:], rows


def run(probes, name, preload=None, debug=False):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDU_")}
    env.pop("LD_PRELOAD", None)
    if preload:
        env["LD_PRELOAD"] = preload
    if debug:
        env["EDU_OPTIONS"] = "debug=on"
    done = subprocess.run([probes, name], env=env, capture_output=True, text=True, timeout=60)
    lines = done.stdout.strip().splitlines()
    return done.returncode, lines[-1] if lines else "", done.stderr


def verdict(code, err, stage):
    """The verdict words for one run; `stage` names the stage whose diagnostic is required."""
    if code == 0:
        return "missed", ""
    if code == 1 and "errno" in err:
        return "wrong result", err
    if code != -signal.SIGABRT:
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return f"crash: {name}", err
    if stage is None:
        return "caught", err.strip().splitlines()[-1] if err.strip() else ""
    lines = [l for l in err.splitlines() if l.startswith("edu-alloc ")]
    pattern = rf"^edu-alloc {re.escape(stage)}: [a-z_]+\(0x[0-9a-f]+\): "
    if len(lines) != 1 or not re.match(pattern, lines[0]):
        return "caught, without one proper line", err
    return "caught", lines[0]


def stage_debug_in_cxx(probes, libraries):
    """Stage 2's own debug mode is taken in a program linked with libstdc++ (which allocates
    before any constructor runs; the probes are such a program), and a refused entry says why,
    also one whose stage name is misspelt (it was skipped without a word, as another stage's)."""
    library = libraries.get("stage2_pools")
    if library is None:
        return []
    problems = []
    env = dict(os.environ, LD_PRELOAD=os.path.abspath(library), EDU_OPTIONS="stage2_pools.debug=on")
    done = subprocess.run([probes, "overflow"], env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != -signal.SIGABRT or "buffer overflow" not in done.stderr or "EDU_OPTIONS" in done.stderr:
        problems.append(f"stage2_pools.debug=on not in force in a C++ program: {done.stderr.strip()}")
    env["EDU_OPTIONS"] = "stage2_pools.debug=maybe stage2_pools.colour=red debg=on stage2_pool.debug=on"
    done = subprocess.run([probes, "huge_malloc"], env=env, capture_output=True, text=True, timeout=60)
    for why in ("'stage2_pools.debug=maybe' gives no value of the option; its values: off|on",
                "'stage2_pools.colour=red' names no option of this stage; its options: geometry, debug",
                "'debg=on' is not a contract option",
                "'stage2_pool.debug=on' names no stage; the stages: "
                "stage1_brk, stage2_pools, stage3_segments, stage4_threads"):
        if why not in done.stderr:
            problems.append(f"no line saying {why!r}: {done.stderr.strip()}")
    return problems


def main():
    docs, probes, *stages = sys.argv[1:]
    columns, table = parse_table(docs)
    names = subprocess.run([probes, "--list"], capture_output=True, text=True, check=True).stdout.split()
    problems = []
    if sorted(names) != sorted(table):
        problems.append(f"docs table rows {sorted(table)} differ from the probes {sorted(names)}")
    runs = [("glibc", None, False, None)]
    for spec in stages:
        stage, library = spec.split("=", 1)
        number = re.match(r"stage(\d)", stage).group(1)
        runs.append((f"stage {number}", os.path.abspath(library), False, stage))
        runs.append((f"stage {number} debug", os.path.abspath(library), True, stage))
    seen = {}
    for probe in names:
        for column, library, debug, stage in runs:
            code, answer, err = run(probes, probe, library, debug)
            got, line = verdict(code, err, stage)
            seen[(probe, column)] = got
            want = table.get(probe, {}).get(column)
            print(f"{probe:22} {column:16} {got:10} {answer or line[:150]}")
            if want is None:
                problems.append(f"{probe}, {column}: no cell in the docs table")
            elif is_answer(want):
                if got != "missed" or answer != want:
                    problems.append(f"{probe}, {column}: table says {want}, got {got} {answer!r}: {err.strip()[:300]}")
            elif want.startswith("missed"):
                if got != "missed":
                    problems.append(f"{probe}, {column}: table says {want}, got {got}: {err.strip()[:300]}")
            elif want.startswith("caught"):
                words = want.partition(":")[2].strip()
                if got != "caught" or words not in line:
                    problems.append(f"{probe}, {column}: table says '{want}', got {got}: {err.strip()[:300]}")
            elif got != want.partition(" (")[0]:  # crash: SIGNAL, perhaps with a reason
                problems.append(f"{probe}, {column}: table says '{want}', got {got}: {err.strip()[:300]}")
    # The targets: default mode catches what glibc catches; debug mode catches all misuse.
    for probe in names:
        for column, _, debug, stage in runs[1:]:
            cell = table.get(probe, {}).get(column, "")
            excused = cell.startswith(("missed (", "crash")) and cell.endswith(")")  # a reason given
            if not debug and seen[(probe, "glibc")] == "caught" and seen[(probe, column)] != "caught" and not excused:
                problems.append(f"{probe}: glibc catches it, {column} does not")
            answer = is_answer(table.get(probe, {}).get("glibc", ""))
            if debug and not answer and seen[(probe, column)] != "caught":
                problems.append(f"{probe}: {column} misses it")
    libraries = dict(spec.split("=", 1) for spec in stages)
    problems += stage_debug_in_cxx(probes, libraries)
    for problem in problems:
        print("FAIL:", problem, file=sys.stderr)
    print(f"misuse: {len(names)} probes x {len(runs)} allocators, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
