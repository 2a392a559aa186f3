#!/usr/bin/env bash
# tests/preload/aligned_test.sh: the rest of the family (posix_memalign, memalign, valloc,
# pvalloc, aligned_alloc, reallocarray, malloc_usable_size) keeps its C contract under the
# preload. aligned.cc checks every result itself and prints OK; it refuses to run unpreloaded.
source tests/preload/preload_lib.sh
preload_init "$@"

out="$(env LD_PRELOAD="$PRELOAD" EDU_ALLOC_CHECK=1 tests/preload/aligned 2>&1)" ||
    { echo "$out" >&2; fail "aligned checks failed under the preload"; }
echo "$out"
[[ "$(tail -n 1 <<<"$out")" == "OK" ]] || fail "aligned did not print OK"
grep -Eq "^stage ${STAGE}: stage${STAGE}_" <<<"$out" || fail "aligned ran under another stage"
