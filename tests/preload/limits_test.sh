#!/usr/bin/env bash
# tests/preload/limits_test.sh: the stage works within the resource limits glibc works within,
# and answers NULL with ENOMEM when memory runs out (limits.cc prints the same lines as with
# glibc): an address-space limit (`ulimit -v`, containers) of 256 MiB with five threads
# allocating; a data limit of 16 MiB; 80 MiB of small blocks under 192 MiB; 200 blocks of
# 100 KB under 40 MiB (stage 4 held 171 while its arena reserved half the limit, [S4.67]); a
# limit of 256 MiB the program sets itself after its first malloc, then four threads at once and
# the main thread (stage 4's threads were refused while its arena held 64 GiB, [S4.68]).
source tests/preload/preload_lib.sh
preload_init "$@"

run_both limits_as prlimit --as=$((256 << 20)) tests/preload/limits threads
run_both limits_data prlimit --data=$((16 << 20)) tests/preload/limits
run_both limits_as_small prlimit --as=$((192 << 20)) tests/preload/limits small
run_both limits_as_large prlimit --as=$((40 << 20)) tests/preload/limits large
run_both limits_as_late tests/preload/limits late 256
