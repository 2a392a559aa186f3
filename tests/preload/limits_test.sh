#!/usr/bin/env bash
# tests/preload/limits_test.sh: the stage works within resource limits that glibc works within
# (an address-space limit, as `ulimit -v` or a container sets, with five threads allocating;
# a data limit, with one; 80 MiB of small blocks under an address-space limit of 192 MiB; 200
# blocks of 100 KB under 40 MiB, 64 MiB on stage 4, whose arena reserves half the limit
# up front: its large blocks take mappings of their own under a limit, [S4.66], but 20 of the
# 40 MiB stay reserved for small blocks and 171 fit),
# serves what fits and answers NULL with ENOMEM when memory runs out: limits.cc prints the
# same lines as with glibc under each limit.
source tests/preload/preload_lib.sh
preload_init "$@"

run_both limits_as prlimit --as=$((256 << 20)) tests/preload/limits threads
run_both limits_data prlimit --data=$((16 << 20)) tests/preload/limits
run_both limits_as_small prlimit --as=$((192 << 20)) tests/preload/limits small
large_mib=40
[[ $STAGE == 4 ]] && large_mib=64
run_both limits_as_large prlimit --as=$((large_mib << 20)) tests/preload/limits large
