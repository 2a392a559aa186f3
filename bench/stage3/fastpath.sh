#!/usr/bin/env bash
# bench/stage3/fastpath.sh: instructions per malloc + free pair on the fast path, stage 3
# against mimalloc, counted by valgrind's callgrind on the same tight loop (fastpath_loop.cc),
# and the disassembly of stage 3's fast paths as compiled. Per pair = (Ir at 2N - Ir at N) / N,
# so start-up and warm-up cancel out; the per-function lines count the allocator's own code.
# Run: bazel run --config=opt //bench/stage3:fastpath [-- N [size]]
set -euo pipefail

loop="$1"; shift
usage="usage: bazel run --config=opt //bench/stage3:fastpath [-- N [size]]   (N iterations, default 1000000; size in bytes, default 32)"
if [[ "${1:-}" == --help || "${1:-}" == -h ]]; then echo "$usage"; exit 0; fi
n="${1:-1000000}"
size="${2:-32}"
# Each is a positive whole number: anything else reached the loop as 0 and printed zeros.
for arg in "$n" "$size"; do
    [[ "$arg" =~ ^[1-9][0-9]*$ ]] || { echo "fastpath.sh: $arg: not a positive whole number" >&2; echo "$usage" >&2; exit 2; }
done
(( $# <= 2 )) || { echo "fastpath.sh: $3: too many arguments" >&2; echo "$usage" >&2; exit 2; }
for tool in valgrind callgrind_annotate objdump; do
    command -v "$tool" >/dev/null || { echo "fastpath.sh: $tool is not installed" >&2; exit 1; }
done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Total instructions of one run.
total() { valgrind --tool=callgrind --callgrind-out-file="$work/$1.$2" "$loop" "$1" "$2" "$size" 2>&1 |
          sed -n 's/.*Collected : *//p'; }
# Self instructions of the functions whose names match $3 in run $1.$2.
self() { callgrind_annotate --threshold=100 "$work/$1.$2" 2>/dev/null | grep -E "$3" |
         awk '{ gsub(",", "", $1); s += $1 } END { print s + 0 }'; }

echo "instructions per malloc($size) + free, fast path, callgrind (N = $n):"
printf '  %-10s %18s %14s %14s\n' allocator "loop iteration" "malloc" "free"
for a in mimalloc stage3; do
    t1=$(total "$a" "$n"); t2=$(total "$a" "$((2 * n))")
    if [[ $a == mimalloc ]]; then mpat=':malloc \['; fpat=':free \['
    else mpat='api_malloc<'; fpat='api_free<'; fi
    m1=$(self "$a" "$n" "$mpat"); m2=$(self "$a" "$((2 * n))" "$mpat")
    f1=$(self "$a" "$n" "$fpat"); f2=$(self "$a" "$((2 * n))" "$fpat")
    awk -v a="$a" -v t1="$t1" -v t2="$t2" -v m1="$m1" -v m2="$m2" -v f1="$f1" -v f2="$f2" -v n="$n" \
        'BEGIN { printf "  %-10s %18.2f %14.2f %14.2f\n", a, (t2 - t1) / n, (m2 - m1) / n, (f2 - f1) / n }'
done
echo "  (loop iteration = the allocator's instructions plus the loop's own, identical for both)"

# The disassembly of stage 3's plain-mode fast paths, as linked into the loop binary.
echo
for fn in api_malloc api_free; do
    echo "stage 3 $fn (secure off, stats off):"
    # awk reads all of objdump's output (no early exit: pipefail would see objdump's SIGPIPE).
    objdump -d -C --no-show-raw-insn "$loop" |
        awk -v want="$fn<edu::stage3::Mode<false, false> >" '
            /^[0-9a-f]+ <.*>:$/ { on = index($0, want) > 0; if (on) print; next }
            on && NF == 0 { on = 0 }
            on && $1 != "..." { print }'
    echo
done
