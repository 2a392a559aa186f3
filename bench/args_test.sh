#!/usr/bin/env bash
# bench/args_test.sh RANDOM_MIXED FASTPATH_SH FASTPATH_LOOP THREADS LIB1 LIB2 LIB3 LIB4: the
# benchmarks the chapters run with options (stage 3's random_mixed and fastpath, stage 4's
# threads) check them before they measure: --help prints the usage and exits 0, and an argument
# they cannot use stops them at once with exit 2 and a line naming it. Before, "--help" or a typo
# was measured as if never given (threads ran every workload for minutes) or read as 0
# (random_mixed printed zeros and NaN ratios, or crashed). Each call must end within 10 s: one
# that started measuring fails. threads gets the four stage libraries, as `bazel run` passes them.
set -uo pipefail
random_mixed="$PWD/$1"
fastpath=("$PWD/$2" "$PWD/$3")
threads=("$PWD/$4" --lib=stage1="$5" --lib=stage2="$6" --lib=stage3="$7" --lib=stage4="$8")
failed=0

expect() {   # expect STATUS TEXT COMMAND...: exit STATUS within 10 s, TEXT in what it printed
    local status="$1" text="$2"
    shift 2
    local out got
    out="$(timeout 10 "$@" 2>&1)"
    got=$?
    if [[ $got -ne $status || "$out" != *"$text"* ]]; then
        echo "${1##*/} ${*: -1}: exit $got (want $status), output wanted to hold '$text':"
        echo "$out" | head -5
        failed=1
    fi
}

expect 0 "usage: random_mixed" "$random_mixed" --help
expect 2 "random_mixed: 10M: not a positive number of cycles" "$random_mixed" 10M
expect 2 "random_mixed: 0: not a positive number of repetitions" "$random_mixed" 1000 0
expect 2 "random_mixed: jemalloc: names none of the allocators" "$random_mixed" 1000 1 jemalloc
expect 2 "random_mixed: 300: no ring of that many slots" "$random_mixed" 1000 1 stage3 300
expect 0 "usage: bazel run --config=opt //bench/stage3:fastpath" "${fastpath[@]}" --help
expect 2 "fastpath.sh: 1e6: not a positive whole number" "${fastpath[@]}" 1e6
expect 2 "fastpath.sh: -32: not a positive whole number" "${fastpath[@]}" 1000 -32
expect 0 "usage: threads" "${threads[@]}" --help
expect 2 "threads: --thread=4: unknown argument" "${threads[@]}" --thread=4
expect 2 "threads: --threads=3: the thread counts measured are 1, 2, 4 and 8" "${threads[@]}" --threads=3
expect 2 "threads: --only=larsen: no such workload" "${threads[@]}" --only=larsen
expect 2 "threads: --repetitions=0: not a positive count" "${threads[@]}" --repetitions=0
expect 2 "threads: --lib=/x.so: not NAME=PATH" "${threads[@]}" --lib=/x.so
exit $failed
