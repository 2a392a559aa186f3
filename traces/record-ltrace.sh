#!/usr/bin/env bash
# traces/record-ltrace.sh NAME PROGRAM [ARGS...]: records a real program's malloc, calloc,
# realloc and free calls with ltrace and converts them to traces/ltrace-NAME.rep with the stage
# diff's converter (calls the C library makes to itself are dropped; leaks are freed at the end).
# Give PROGRAM as an ELF path (ltrace cannot follow a shell shim such as pyenv's python3).
# Recorded traces are committed as they are: a second recording may differ (ASLR, hashing).
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; shift
raw="$(mktemp)"
trap 'rm -f "$raw"' EXIT
ltrace -e malloc+free+calloc+realloc -o "$raw" "$@" > /dev/null
bazel build -c opt --ui_event_filters=-info --noshow_progress //tools/diff:stagediff
out="traces/ltrace-$name.rep"
{ echo "# Recorded: ltrace -e malloc+free+calloc+realloc $*"
  echo "# by traces/record-ltrace.sh $name $*; converted by stagediff --convert-ltrace."
  bazel-bin/tools/diff/stagediff --convert-ltrace="$raw"; } > "$out"
echo "wrote $out ($(grep -c '^[afr] ' "$out") operations)"
