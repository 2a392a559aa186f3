// tests/doctest_runner.cc: doctest's implementation, compiled once for every stage's battery.
// Each battery's main (battery_main.cc) drives it through doctest::Context.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
