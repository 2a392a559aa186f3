#!/usr/bin/env bash
# tests/preload/churn_test.sh: churn.cc (every thread frees, resizes and checks the blocks of
# the others; every allocating entry, alignments up to 64 MiB, threads that end, forks) with
# the stage preloaded, under an address-space limit of 96 and of 160 MiB, a data limit of
# 48 MiB and no limit: it must print what it prints with glibc, NULL coming only with ENOMEM,
# with the heap checked at exit, as a user gets the library (stages 3 and 4 then run their
# inline fast paths), and in debug mode. Each run has a seed of its own. With the libraries of
# the commit before S3.97 / S4.115, stages 3 and 4 handed an aligned request a misaligned block
# under 96 MiB on every seed tried (12 runs; seed 1 is the first run here), under 160 MiB on
# 9 of 12 (not on seed 2), and under 256 MiB on 1 of 12.
source tests/preload/preload_lib.sh
preload_init "$@"

churn=tests/preload/churn
run_both churn_as_96 prlimit --as=$((96 << 20)) "$churn" 1
run_both churn_as_160 prlimit --as=$((160 << 20)) "$churn" 2
run_usual churn_as_160 prlimit --as=$((160 << 20)) "$churn" 2
run_both churn_data_48 prlimit --data=$((48 << 20)) "$churn" 3
run_usual churn_data_48 prlimit --data=$((48 << 20)) "$churn" 3
# No limit: fewer steps, as the 40 MiB blocks then stay until freed (a few hundred MiB live).
run_both churn_unlimited "$churn" 4 4 4000 3
run_usual churn_unlimited "$churn" 4 4 4000 3
run_checked "$WORK/churn_debug" "churn with $PRELOAD in debug mode" \
    env -u EDU_ALLOC_STATS -u EDU_ALLOC_CHECK EDU_OPTIONS=debug=on LD_PRELOAD="$PRELOAD" \
    prlimit --as=$((160 << 20)) "$churn" 5
grep -qx 'churn 5: ok' "$WORK/churn_debug.out" || fail "churn in debug mode did not finish"
echo "ok: churn in debug mode under 160 MiB"
