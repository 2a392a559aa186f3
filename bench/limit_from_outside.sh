#!/usr/bin/env bash
# bench/limit_from_outside.sh LIMITS MIB [SIZE]: a limit set from outside while the program runs
# (stage 4's chapter, [S4.68]). Starts LIMITS (tests/preload/limits) in its `outside` mode, waits
# for its "ready" (it has malloc'd once), lowers its RLIMIT_AS to MIB MiB with prlimit --pid, lets
# it go on, and prints what it prints. LD_PRELOAD in the environment chooses the malloc.
#   bazel build --config=opt //tests/preload:limits //stage4_threads:libedu_stage4.so
#   LD_PRELOAD=bazel-bin/stage4_threads/libedu_stage4.so bench/limit_from_outside.sh bazel-bin/tests/preload/limits 64
set -euo pipefail
(($# >= 2)) || { echo "usage: $0 LIMITS MIB [SIZE]" >&2; exit 2; }
limits="$1" mib="$2" size="${3:-100000}"

coproc program { exec "$limits" outside "$size"; }
pid="$program_PID"
exec {from}<&"${program[0]}" {to}>&"${program[1]}"   # bash unsets program[] when it exits
read -r ready <&"$from" || { echo "$0: $limits exited before it was ready" >&2; exit 1; }
[[ "$ready" == ready ]] || { echo "$0: $limits said '$ready', not 'ready'" >&2; exit 1; }
env -u LD_PRELOAD prlimit --pid "$pid" --as=$((mib << 20))
echo go >&"$to"
exec {to}>&-
cat <&"$from"
wait "$pid"
