#!/usr/bin/env bash
# tests/preload/sort_test.sh: the stage can be GNU sort's malloc, threads included. Sorts 200,000
# generated lines in four ways (plain, numeric key, unique folded, two threads with a small
# buffer and temporary files) with and without the preload, and requires identical output.
source tests/preload/preload_lib.sh
preload_init "$@"

lines="$WORK/lines.txt"
/usr/bin/python3 -I tests/preload/make_lines.py 200000 >"$lines"
[[ $(wc -l <"$lines") -eq 200000 ]] || fail "make_lines.py wrote the wrong number of lines"

export LC_ALL=C
run_both sort-plain /usr/bin/sort "$lines"
run_both sort-numeric /usr/bin/sort -t ' ' -k2,2n -k1,1 "$lines"
run_both sort-unique /usr/bin/sort -u -f "$lines"
run_both sort-parallel /usr/bin/sort --parallel=2 -S 1M -T "$WORK" "$lines"
