#!/usr/bin/env bash
# tests/preload/limits_test.sh: the stage works within resource limits that glibc works within
# (an address-space limit, as `ulimit -v` or a container sets, with five threads allocating;
# a data limit, with one; 80 MiB of small blocks under an address-space limit of 192 MiB; 200
# blocks of 100 KB under 40 MiB, not yet on stage 4, whose large blocks take 4 MiB each),
# serves what fits and answers NULL with ENOMEM when memory runs out: limits.cc prints the
# same lines as with glibc under each limit.
source tests/preload/preload_lib.sh
preload_init "$@"

run_both limits_as prlimit --as=$((256 << 20)) tests/preload/limits threads
run_both limits_data prlimit --data=$((16 << 20)) tests/preload/limits
run_both limits_as_small prlimit --as=$((192 << 20)) tests/preload/limits small
[[ $STAGE == 4 ]] || run_both limits_as_large prlimit --as=$((40 << 20)) tests/preload/limits large
