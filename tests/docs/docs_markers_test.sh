#!/usr/bin/env bash
# tests/docs/docs_markers_test.sh: every marker a chapter cites exists in its stage's code and
# every marker the code defines is cited. Checks the live source tree, found through this
# script's runfiles link, so new chapters and stage folders are picked up with no BUILD edit;
# the target is tagged "external" so Bazel never reuses a stale verdict.
set -euo pipefail

checker="$PWD/$1"
root="$(dirname "$(dirname "$(dirname "$(readlink -f "$0")")")")"
[[ -f "$root/WORKSPACE" && -d "$root/docs" ]] || { echo "FAIL: no source tree at $root" >&2; exit 1; }
exec "$checker" "$root"
