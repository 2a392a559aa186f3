#!/usr/bin/env bash
# tests/preload/python_test.sh: the stage can be CPython's malloc. Proves it by running
# workload.py (dicts, lists, strings, bytes of many sizes, MiB objects, gc) under /usr/bin/python3
# with and without the preload and requiring the same digest. PYTHONMALLOC=malloc sends every
# object to malloc; pymalloc asks malloc only for objects over 512 bytes. (Not `python3 -I`:
# isolated mode ignores PYTHONMALLOC and PYTHONHASHSEED.)
source tests/preload/preload_lib.sh
preload_init "$@"

export PYTHONHASHSEED=0
PYTHONMALLOC=malloc run_both python-malloc /usr/bin/python3 -s -B tests/preload/workload.py
PYTHONMALLOC=pymalloc run_both python-pymalloc /usr/bin/python3 -s -B tests/preload/workload.py
