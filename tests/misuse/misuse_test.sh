#!/usr/bin/env bash
# tests/misuse/misuse_test.sh: runs misuse_test.py (see its docstring) from the runfiles tree.
set -euo pipefail
exec python3 -B tests/misuse/misuse_test.py "$@"
