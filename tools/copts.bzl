"""Compiler flags shared by every edu-alloc target, in one place.

EDU_COPTS: project code. Warnings are errors; -fno-builtin keeps the compiler from turning
  `malloc` + `memset` into a `calloc` call (infinite recursion once the library replaces
  calloc) and from assuming the C library's allocator semantics inside the allocator.
  -fno-exceptions: allocator code never throws, and without unwinding tables for its lock
  guards the preload libraries need no libstdc++ (which allocates while it loads).
EDU_TEST_COPTS: tests and tools, which may use the C++ library freely.
"""

EDU_WARNINGS = [
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Wshadow",
    "-Wconversion",
    "-Wno-sign-conversion",
    "-Werror",
]

EDU_COPTS = EDU_WARNINGS + [
    "-fno-builtin",
    "-fno-exceptions",
    "-fvisibility=hidden",
]

EDU_TEST_COPTS = EDU_WARNINGS
