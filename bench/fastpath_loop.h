// bench/fastpath_loop.h: the tight loop that callgrind counts, shared by the stages' fast-path
// benchmarks: one block of `size` bytes stays allocated (so its page never empties), a warm-up,
// then `iterations` times p = malloc(size), write its first byte, free(p). The calls go through
// function pointers read from a volatile, so every allocator is called the same way.
#pragma once

#include <cstddef>

namespace edu::bench {

inline void fastpath_loop(void* (*malloc_fn)(std::size_t), void (*free_fn)(void*), unsigned long iterations,
                          std::size_t size) {
    void* (*volatile do_malloc)(std::size_t) = malloc_fn;
    void (*volatile do_free)(void*) = free_fn;
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
}

}  // namespace edu::bench
