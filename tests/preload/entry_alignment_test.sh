#!/usr/bin/env bash
# tests/preload/entry_alignment_test.sh LIB...: the exported malloc and free of each drop-in
# library with inline fast paths (stages 3 and 4) start on a 64-byte line, as their DropIn's
# kEntryAlignment asks (S3.74, S4.81). The linker aligns functions to 16 bytes otherwise, and
# where they land then moves with any code placed before them.
set -euo pipefail

[[ $# -ge 1 ]] || { echo "usage: $0 LIBRARY..." >&2; exit 2; }
for lib in "$@"; do
    [[ -f "$lib" ]] || { echo "FAIL: no library at $lib" >&2; exit 1; }
    for name in malloc free; do
        address="$(nm -D --defined-only "$lib" | awk -v n="$name" '$3 == n { print $1 }')"
        [[ -n "$address" ]] || { echo "FAIL: $lib exports no $name" >&2; exit 1; }
        if (( 16#$address % 64 != 0 )); then
            echo "FAIL: $lib: $name at 0x$address, $(( 16#$address % 64 )) bytes into a 64-byte line" >&2
            exit 1
        fi
        echo "$lib: $name at 0x$address"
    done
done
