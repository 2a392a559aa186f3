// bench/stage3/fastpath_loop.cc: the tight loop whose instructions callgrind counts: one block
// of `size` bytes stays allocated (so its page never empties), then `iterations` times:
// p = malloc(size), write its first byte, free(p). Every call stays on the fast path of both
// allocators. The calls go through function pointers read from a volatile, for both alike.
// Usage: fastpath_loop stage3|mimalloc [iterations=1000000] [size=32]
#include <cstdio>
#include <cstdlib>
#include <cstring>

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
    void* (*volatile do_malloc)(std::size_t) = a.malloc;
    void (*volatile do_free)(void*) = a.free;
    void* (*m)(std::size_t) = do_malloc;
    void (*f)(void*) = do_free;
    void* anchor = m(size);
    for (int i = 0; i < 1000; ++i) f(m(size));   // warm: page carved, direct slot set
    for (unsigned long i = 0; i < iterations; ++i) {
        void* p = m(size);
        *static_cast<volatile char*>(p) = 1;
        f(p);
    }
    f(anchor);
    return 0;
}
