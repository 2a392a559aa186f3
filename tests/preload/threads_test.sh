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
# Debug mode: the debug layer's mutexes meet threads.cc's early fork handlers too (contract/
# debug.cc, its guard: a handler that allocates runs as the fork's holder instead of waiting).
run_checked "$WORK/threads.debug" "threads with $PRELOAD in debug mode" \
    env -u EDU_ALLOC_STATS -u EDU_ALLOC_CHECK EDU_OPTIONS=debug=on LD_PRELOAD="$PRELOAD" tests/preload/threads
same_output "$WORK/threads.plain.out" "$WORK/threads.debug.out" "threads under the preload in debug mode"
echo "ok: threads in debug mode"
