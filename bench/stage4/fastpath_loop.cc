// bench/stage4/fastpath_loop.cc: bench/fastpath_loop.h's loop on stage 4's in-process entry
// (descriptor.single_thread, the stage linked in, no drop-in library, so no memcheck layer
// under valgrind). Options (EDU_OPTIONS syntax, e.g. "stats=off") are set first. Instructions per pair = (Ir at 2N - Ir
// at N) / N:
//   valgrind --tool=callgrind bazel-bin/bench/stage4/fastpath_loop N stats=off|on
#include "bench/fastpath_loop.h"
#include "stage4_threads/stage4.h"

int main(int argc, char** argv) { return edu::bench::fastpath_main(edu::stage4::descriptor, "stats=off", argc, argv); }
