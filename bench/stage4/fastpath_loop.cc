// bench/stage4/fastpath_loop.cc: bench/fastpath_loop.h's loop on stage 4's in-process entry
// (descriptor.single_thread, the stage linked in, no drop-in library, so no memcheck layer
// under valgrind). Options (EDU_OPTIONS syntax, e.g. "stats=off") are set first. Instructions per pair = (Ir at 2N - Ir
// at N) / N:
//   valgrind --tool=callgrind bazel-bin/bench/stage4/fastpath_loop N stats=off|on
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench/fastpath_loop.h"
#include "stage4_threads/stage4.h"

int main(int argc, char** argv) {
    const edu::Stage& stage = edu::stage4::descriptor;
    unsigned long iterations = argc > 1 ? std::strtoul(argv[1], nullptr, 0) : 1000000;
    char options[256] = "stats=off";
    if (argc > 2) std::snprintf(options, sizeof options, "%s", argv[2]);
    for (char* entry = std::strtok(options, ","); entry; entry = std::strtok(nullptr, ",")) {
        char* value = std::strchr(entry, '=');
        if (!value || (*value++ = 0, !stage.set_option(entry, value))) {
            std::fprintf(stderr, "%s: bad option %s\n", argv[0], entry);
            return 2;
        }
    }
    std::size_t size = argc > 3 ? std::strtoul(argv[3], nullptr, 0) : 32;
    edu::bench::fastpath_loop(stage.single_thread->malloc, stage.single_thread->free, iterations, size);
    return 0;
}
