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

# run_checked OUT WHAT CMD...: runs CMD with stdout in OUT.out and stderr in OUT.err, and fails
# (naming WHAT) unless it exits 0.
run_checked() {
    local out="$1" what="$2" status
    shift 2
    set +e
    "$@" >"$out.out" 2>"$out.err"
    status=$?
    set -e
    [[ $status -eq 0 ]] || { tail -n 30 "$out.err" >&2; fail "$what: exit status $status"; }
}

# same_output A B WHAT: fails unless files A and B are equal.
same_output() {
    if ! cmp -s "$1" "$2"; then
        diff "$1" "$2" | head -n 20 >&2 || true
        fail "$3: output differs"
    fi
}

# run_both NAME CMD...: see the banner. Outputs are kept in $WORK/NAME.{plain,edu}.{out,err}.
run_both() {
    local name="$1"
    shift
    local plain="$WORK/$name.plain" edu="$WORK/$name.edu"
    run_checked "$plain" "$name without the preload" "$@"
    run_checked "$edu" "$name with $PRELOAD" env LD_PRELOAD="$PRELOAD" EDU_ALLOC_STATS=1 EDU_ALLOC_CHECK=1 "$@"
    same_output "$plain.out" "$edu.out" "$name under the preload"
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
    local usual="$WORK/$name.usual"
    run_checked "$usual" "$name with $PRELOAD in its usual mode" \
        env -u EDU_ALLOC_STATS -u EDU_ALLOC_CHECK -u EDU_OPTIONS LD_PRELOAD="$PRELOAD" "$@"
    same_output "$WORK/$name.plain.out" "$usual.out" "$name under the preload in its usual mode"
    echo "ok: $name in the usual mode ($(wc -l <"$usual.out") lines identical)"
}
