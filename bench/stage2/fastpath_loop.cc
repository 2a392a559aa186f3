// bench/stage2/fastpath_loop.cc: bench/fastpath_loop.h's loop on stage 2's in-process entry
// (descriptor.single_thread, the stage linked in, no drop-in library). Options (EDU_OPTIONS
// syntax without the stage prefix, e.g. "geometry=classic") are set first. Instructions per
// pair = (Ir at 2N - Ir at N) / N:
//   valgrind --tool=callgrind bazel-bin/bench/stage2/fastpath_loop N [OPTIONS] [SIZE]
#include "bench/fastpath_loop.h"
#include "stage2_pools/stage2.h"

int main(int argc, char** argv) { return edu::bench::fastpath_main(edu::stage2::descriptor, "", argc, argv); }
