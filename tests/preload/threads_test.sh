#!/usr/bin/env bash
# tests/preload/threads_test.sh: the stage's thread-safe entry and fork hooks hold up under
# threads.cc (threads that allocate, realloc, hand blocks to each other, and a fork in the
# middle), which prints a checksum that must not change under the preload.
source tests/preload/preload_lib.sh
preload_init "$@"

run_both threads tests/preload/threads
grep -q '^fork child: ok$' "$WORK/threads.edu.out" || fail "the forked child did not report"
