#!/usr/bin/env bash
# tests/preload/threads_test.sh: the stage's thread-safe entry and fork hooks hold up under
# threads.cc (threads that allocate, realloc, hand blocks to each other, and a fork in the
# middle), which prints a checksum that must not change under the preload: with statistics
# and the check at exit (run_both), and as a user gets it (run_usual), where stage 3's inline
# fast paths must hand a threaded process to its lock.
source tests/preload/preload_lib.sh
preload_init "$@"

run_both threads tests/preload/threads
grep -q '^fork child: ok$' "$WORK/threads.edu.out" || fail "the forked child did not report"
run_usual threads tests/preload/threads
