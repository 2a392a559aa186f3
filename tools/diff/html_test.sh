#!/usr/bin/env bash
# tools/diff/html_test.sh: runs html_test.py (and repl_test.py) with Debian's python3, which has python3-selenium
# (tools/setup installs it with chromium and chromium-driver). Arguments: the script, then its
# own arguments (the binaries it runs).
set -euo pipefail
script="$1"
shift
exec /usr/bin/python3 "$script" "$@"
