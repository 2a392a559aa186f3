#!/usr/bin/env bash
# tests/misuse/memcheck_test.sh LIBRARY PROGRAM: runs PROGRAM (a read after free) under
# valgrind's memcheck with LIBRARY preloaded, and requires memcheck's "Invalid read" report at
# the read and no other error (the stage's own code works on freed memory with reports turned
# off). somalloc=nouserintercepts keeps the stage as the malloc: by default valgrind would
# replace any library's malloc with its own, and the stage would not run at all.
set -euo pipefail
library="$PWD/$1"
program="$PWD/$2"
log="${TEST_TMPDIR:-$(mktemp -d)}/memcheck.log"
export EDU_OPTIONS=stage1_brk.break=reserved   # valgrind's brk segment is 8 MiB
LD_PRELOAD="$library" valgrind --tool=memcheck --soname-synonyms=somalloc=nouserintercepts --error-exitcode=9 --log-file="$log" "$program" ||
    status=$?
cat "$log"
[[ "${status:-0}" == 9 ]] || { echo "FAIL: memcheck found no error (exit ${status:-0})"; exit 1; }
grep -A1 "Invalid read of size 1" "$log" | grep -q "read_after_free.c:12" ||
    { echo "FAIL: no invalid read reported at the read"; exit 1; }
grep -q "edu::.*m_free\|edu::.*announce" "$log" || { echo "FAIL: the stage did not serve the program"; exit 1; }
grep -q "ERROR SUMMARY: 1 errors" "$log" || { echo "FAIL: errors other than the read after free"; exit 1; }
echo "ok: memcheck reports the read after free on $(basename "$library")"
