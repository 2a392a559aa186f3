# tests/preload/preload_lib.sh: what every real-program test does, sourced by *_test.sh.
# `preload_init LIB STAGE` finds the library; `run_both NAME CMD...` runs CMD with the C
# library's malloc and again with the stage preloaded (heap checked at exit), and fails unless
# both exit 0, print the same stdout, and the stage really served allocations; `run_usual`
# runs it once more as a user gets it (no statistics). The scripts run from the runfiles tree
# ($TEST_SRCDIR/edu_alloc), as Bazel starts them.

set -euo pipefail

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# preload_init LIB STAGE: sets PRELOAD (absolute, so children in other folders find it),
# STAGE and WORK (a scratch folder).
preload_init() {
    [[ $# -eq 2 ]] || fail "usage: $0 LIBRARY STAGE"
    PRELOAD="$PWD/$1"
    STAGE="$2"
    [[ -f "$PRELOAD" ]] || fail "no preload library at $PRELOAD"
    WORK="${TEST_TMPDIR:-$(mktemp -d)}"
}

# The stats block the library prints at exit when EDU_ALLOC_STATS=1 (contract/report.cc).
stats_header_pattern() { echo "^edu-alloc stage${STAGE}_[a-z0-9_]+ statistics\$"; }

# stats_value FILE LABEL: the number on the row LABEL of the first stats block in FILE.
stats_value() {
    awk -v label="$2" '
        index($0, "  " label " ") == 1 {
            rest = substr($0, length(label) + 3)
            sub(/^ +/, "", rest)
            split(rest, words, " ")
            if (rest ~ /\(/) { v = rest; sub(/.*\(/, "", v); sub(/\).*/, "", v); print v }
            else print words[1]
            exit
        }' "$1"
}

# run_both NAME CMD...: see the banner. Outputs are kept in $WORK/NAME.{plain,edu}.{out,err}.
run_both() {
    local name="$1"
    shift
    local plain="$WORK/$name.plain" edu="$WORK/$name.edu" status
    set +e
    "$@" >"$plain.out" 2>"$plain.err"
    status=$?
    set -e
    [[ $status -eq 0 ]] || { cat "$plain.err" >&2; fail "$name: exit status $status without the preload"; }

    set +e
    env LD_PRELOAD="$PRELOAD" EDU_ALLOC_STATS=1 EDU_ALLOC_CHECK=1 "$@" >"$edu.out" 2>"$edu.err"
    status=$?
    set -e
    [[ $status -eq 0 ]] || { tail -n 30 "$edu.err" >&2; fail "$name: exit status $status with $PRELOAD"; }

    if ! cmp -s "$plain.out" "$edu.out"; then
        diff "$plain.out" "$edu.out" | head -n 20 >&2 || true
        fail "$name: output differs under the preload"
    fi
    grep -Eq "$(stats_header_pattern)" "$edu.err" ||
        { cat "$edu.err" >&2; fail "$name: no stage $STAGE statistics at exit: was the library loaded?"; }
    local mallocs
    mallocs="$(stats_value "$edu.err" mallocs)"
    [[ "${mallocs:-0}" -gt 0 ]] || fail "$name: the stage served no allocation"
    echo "ok: $name ($(wc -l <"$edu.out") lines identical, $mallocs mallocs served by stage $STAGE)"
}

# run_usual NAME CMD...: after run_both NAME, runs CMD once more with the stage preloaded as a
# user gets it (no statistics, no check at exit: stages 3 and 4 then run their fast paths inside
# the exported malloc and free, drop_in.h) and fails unless it exits 0 with the same stdout.
run_usual() {
    local name="$1"
    shift
    local usual="$WORK/$name.usual" status
    set +e
    env -u EDU_ALLOC_STATS -u EDU_ALLOC_CHECK -u EDU_OPTIONS LD_PRELOAD="$PRELOAD" "$@" >"$usual.out" 2>"$usual.err"
    status=$?
    set -e
    [[ $status -eq 0 ]] || { tail -n 30 "$usual.err" >&2; fail "$name: exit status $status with $PRELOAD in its usual mode"; }
    if ! cmp -s "$WORK/$name.plain.out" "$usual.out"; then
        diff "$WORK/$name.plain.out" "$usual.out" | head -n 20 >&2 || true
        fail "$name: output differs under the preload in its usual mode"
    fi
    echo "ok: $name in the usual mode ($(wc -l <"$usual.out") lines identical)"
}

