#!/usr/bin/env bash
# bench/smallest_limit.sh [--lib LIB] [--data] [--step KIB] [--max MIB] CMD...: the smallest
# RLIMIT_AS (prlimit --as; with --data, RLIMIT_DATA: prlimit --data), in KiB, under which CMD exits 0, found by bisection between 0 and MIB MiB (256)
# in steps of KIB KiB (256). With LIB, CMD runs with LD_PRELOAD=LIB and EDU_ALLOC_STATS=1, and a
# run counts only if it printed the stage's statistics: ld.so skips a library that cannot be
# mapped under the limit, and CMD then runs on glibc. Stage 3's chapter, section 8; limits_test.
set -euo pipefail
lib="" step_kib=256 max_mib=256 kind=as
while (($#)); do
    case "$1" in
        --lib) lib="$2"; shift 2 ;;
        --data) kind=data; shift ;;
        --step) step_kib="$2"; shift 2 ;;
        --max) max_mib="$2"; shift 2 ;;
        *) break ;;
    esac
done
(($#)) || { echo "usage: $0 [--lib LIB] [--data] [--step KIB] [--max MIB] CMD..." >&2; exit 2; }
[[ -z "$lib" || -f "$lib" ]] || { echo "$0: $lib: no such library" >&2; exit 2; }

# runs LIMIT CMD...: whether CMD exits 0 under LIMIT bytes (and, with LIB, the stage served it).
runs() {
    local limit="$1" err
    shift
    if [[ -z "$lib" ]]; then
        timeout 60 prlimit --"$kind"="$limit" "$@" >/dev/null 2>&1
        return
    fi
    err="$(timeout 60 env LD_PRELOAD="$(realpath "$lib")" EDU_ALLOC_STATS=1 prlimit --"$kind"="$limit" "$@" 2>&1 >/dev/null)" || return 1
    grep -Eq '^edu-alloc stage[0-9]+_[a-z0-9_]+ statistics$' <<<"$err"
}

step=$((step_kib << 10)) lo=0 hi=$((max_mib << 20))
runs "$hi" "$@" || { echo "$0: $* does not run under $max_mib MiB" >&2; exit 1; }
while ((hi - lo > step)); do
    mid=$(((lo + hi) / 2 / step * step))
    if runs "$mid" "$@"; then hi=$mid; else lo=$mid; fi
done
echo $((hi >> 10))
