#!/usr/bin/env bash
# tests/preload/calloc_test.sh: calloc zeroes without making memory resident (calloc.cc), with
# the checks at exit and as a user gets it.
source tests/preload/preload_lib.sh
preload_init "$@"

run_both calloc tests/preload/calloc
run_usual calloc tests/preload/calloc
