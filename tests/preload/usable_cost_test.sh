#!/usr/bin/env bash
# tests/preload/usable_cost_test.sh LIBRARY STAGE MAX: malloc_usable_size through the drop-in
# library costs at most MAX instructions a call (the loop's own few included), with the lock on.
# callgrind counts usable_cost at R and 2R rounds of 64 blocks; (Ir(2R) - Ir(R)) / (64 R) is the
# cost of one call, start-up and exit cancelled. Redis asks it at every malloc and free: it was
# stage 3's costliest entry there (118 instructions a call before S3.93; jemalloc 40).
source tests/preload/preload_lib.sh
[[ $# -eq 3 ]] || fail "usage: $0 LIBRARY STAGE MAX"
max="$3"
preload_init "$1" "$2"
command -v valgrind >/dev/null || fail "valgrind is not installed"

rounds=2000
count() {   # total instructions of usable_cost at $1 rounds
    env LD_PRELOAD="$PRELOAD" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$1" \
        tests/preload/usable_cost "$1" >"$WORK/out.$1" 2>"$WORK/err.$1" ||
        { cat "$WORK/err.$1" >&2; fail "usable_cost $1 failed under callgrind"; }
    sed -n 's/.*Collected : *//p' "$WORK/err.$1"
}
one="$(count $rounds)"
two="$(count $((2 * rounds)))"
[[ "$(cat "$WORK/out.$rounds")" == "$(cat "$WORK/out.$((2 * rounds))")" ]] || fail "the two runs saw other sizes"
per_call="$(awk -v a="$one" -v b="$two" -v n=$((64 * rounds)) 'BEGIN { printf "%.1f", (b - a) / n }')"
echo "stage $STAGE: malloc_usable_size $per_call instructions a call (at most $max)"
awk -v x="$per_call" -v m="$max" 'BEGIN { exit !(x > 0 && x <= m) }' ||
    fail "malloc_usable_size costs $per_call instructions a call, more than $max"
