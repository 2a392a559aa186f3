// doctest's runner and main(), compiled once; test files include <doctest/doctest.h> only.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
