// bench/stage3/fastpath_loop.cc: bench/fastpath_loop.h's loop, the one callgrind counts, on
// stage 3 or mimalloc: every call stays on the fast path of both allocators.
// Usage: fastpath_loop stage3|mimalloc [iterations=1000000] [size=32]
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench/fastpath_loop.h"
#include "bench/stage3/allocators.h"

int main(int argc, char** argv) {
    using namespace edu::bench;
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s stage3|mimalloc [iterations] [size]\n", argv[0]);
        return 2;
    }
    Allocator a = std::strcmp(argv[1], "mimalloc") == 0 ? mimalloc_allocator()
                                                          : stage3_allocator("stage3", "off", "off");
    activate(a);
    unsigned long iterations = argc > 2 ? std::strtoul(argv[2], nullptr, 0) : 1000000;
    std::size_t size = argc > 3 ? std::strtoul(argv[3], nullptr, 0) : 32;
    fastpath_loop(a.malloc, a.free, iterations, size);
    return 0;
}
