#!/usr/bin/env bash
# tests/preload/stats_test.sh: EDU_ALLOC_STATS=1 makes the library print its statistics block,
# naming the stage, on stderr at exit, with counts that match the program; without it (or with
# any other value) the library prints nothing. The program makes 3,000 bytearrays through malloc.
# A stage with a "stats" switch (stages 2-4) counts only when EDU_ALLOC_STATS or
# EDU_ALLOC_CHECK asks for it, unless EDU_OPTIONS says otherwise.
source tests/preload/preload_lib.sh
preload_init "$@"

program='keep = [bytearray(1000 + i) for i in range(3000)]; print(len(keep))'
run() { env LD_PRELOAD="$PRELOAD" PYTHONMALLOC=malloc "$@" /usr/bin/python3 -s -B -c "$program"; }
died() { tail -n 5 "$1" >&2; fail "python3 failed under the preload${2:+ with $2}"; }   # why, then FAIL

run EDU_ALLOC_STATS=1 >"$WORK/on.out" 2>"$WORK/on.err" || died "$WORK/on.err"
[[ "$(cat "$WORK/on.out")" == 3000 ]] || fail "python3 printed $(cat "$WORK/on.out")"
grep -Eq "$(stats_header_pattern)" "$WORK/on.err" || { cat "$WORK/on.err" >&2; fail "no statistics block"; }
for row in mallocs frees "bytes requested" "live blocks" "live bytes" "peak live bytes" \
    footprint "peak footprint"; do
    [[ -n "$(stats_value "$WORK/on.err" "$row")" ]] || fail "statistics lack the row '$row'"
done
mallocs="$(stats_value "$WORK/on.err" mallocs)"
requested="$(stats_value "$WORK/on.err" "bytes requested")"
peak="$(stats_value "$WORK/on.err" "peak live bytes")"
peak_footprint="$(stats_value "$WORK/on.err" "peak footprint")"
[[ $mallocs -ge 3000 ]] || fail "only $mallocs mallocs counted for 3000 bytearrays"
# The bytearrays alone request sum(1000 + i) = 7,498,500 bytes and are live together at the end.
[[ $requested -ge 7498500 ]] || fail "bytes requested $requested < 7498500"
[[ $peak -ge 7498500 ]] || fail "peak live bytes $peak < 7498500"
[[ $peak_footprint -ge $peak ]] || fail "peak footprint $peak_footprint < peak live bytes $peak"
cat "$WORK/on.err"

run >"$WORK/off.out" 2>"$WORK/off.err" || died "$WORK/off.err"
[[ ! -s "$WORK/off.err" ]] || { cat "$WORK/off.err" >&2; fail "stderr not empty without EDU_ALLOC_STATS"; }
run EDU_ALLOC_STATS=0 >"$WORK/zero.out" 2>"$WORK/zero.err" || died "$WORK/zero.err"
[[ ! -s "$WORK/zero.err" ]] || fail "EDU_ALLOC_STATS=0 printed something"
option() { env LD_PRELOAD="$PRELOAD" "$@" tests/preload/option stats; }
name="$(option | cut -d' ' -f1)"
if [[ "$(option)" != "$name stats=(none)" ]]; then
    [[ "$(option)" == "$name stats=off" ]] || fail "counting is on by default: $(option)"
    [[ "$(option EDU_ALLOC_STATS=1)" == "$name stats=on" ]] || fail "EDU_ALLOC_STATS=1 left counting off"
    [[ "$(option EDU_ALLOC_CHECK=1)" == "$name stats=on" ]] || fail "EDU_ALLOC_CHECK=1 left counting off"
    [[ "$(option EDU_OPTIONS="$name.stats=on")" == "$name stats=on" ]] || fail "EDU_OPTIONS cannot turn counting on"
    # Turned on at run time through the library's descriptor, counting reaches the program's
    # own malloc calls (the library's per-call slots follow the stage's table).
    set="$(env LD_PRELOAD="$PRELOAD" tests/preload/option stats on)"
    [[ "$set" =~ ^"$name stats=on counted="([0-9]+)$ ]] || fail "set_option through the library: '$set'"
    [[ ${BASH_REMATCH[1]} -ge 1000 ]] || fail "stats=on set at run time counted ${BASH_REMATCH[1]} of 1000 mallocs"
fi

# C has errno 0 when main begins. The library's constructor keeps a copy of stderr for the report
# (F_DUPFD_CLOEXEC), which fails with EBADF when the program starts with stderr closed.
for asked in EDU_ALLOC_STATS=1 EDU_OPTIONS=debug=on; do
    at_start="$(env LD_PRELOAD="$PRELOAD" "$asked" tests/preload/option errno 2>&-)"
    [[ "$at_start" == errno=0 ]] || fail "with $asked and stderr closed, main began with '$at_start'"
done

# The copy of stderr is the report's only when it still is stderr's file: a program that closed
# every descriptor above 2, opened its own file (on the copy's number) and closed stderr at exit
# got the statistics block, or the debug layer's leak lines, written into that file.
for asked in EDU_ALLOC_STATS=1 EDU_OPTIONS=debug=on; do
    env LD_PRELOAD="$PRELOAD" "$asked" tests/preload/option reuse "$WORK/reuse.txt" 2>/dev/null ||
        fail "option reuse failed with $asked"
    [[ "$(cat "$WORK/reuse.txt")" == "the program's only line" ]] ||
        { cat "$WORK/reuse.txt" >&2; fail "with $asked the library wrote into the program's own file"; }
done

# A stage with the option stats=off (its benchmark mode) counts no requests: the block says so
# rather than print near-zero counts.
if [[ "$(option)" == "$name stats=(none)" ]]; then
    echo "($name has no stats option)"
else
    run EDU_ALLOC_STATS=1 EDU_OPTIONS="$name.stats=off" >"$WORK/off.out" 2>"$WORK/off.err" ||
        died "$WORK/off.err" "$name.stats=off"
    grep -q "requests not counted ($name.stats=off)" "$WORK/off.err" ||
        { cat "$WORK/off.err" >&2; fail "stats=off printed no word that requests were not counted"; }
    ! grep -q "^  mallocs " "$WORK/off.err" || fail "stats=off still printed a mallocs row"
fi
echo "ok: statistics block for stage $STAGE with $mallocs mallocs; silent when not asked"
