// bench/fastpath_loop.h: the tight loop that callgrind counts, shared by the stages' fast-path
// benchmarks: one block of `size` bytes stays allocated (so its page never empties), a warm-up,
// then `iterations` times p = malloc(size), write its first byte, free(p). The calls go through
// function pointers read from a volatile, so every allocator is called the same way.
#pragma once

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "contract/allocator.h"

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

// The main of a stage's fast-path benchmark: `PROGRAM [N=1000000] [OPTIONS] [SIZE=32]` sets the
// stage's options (EDU_OPTIONS syntax without the stage prefix, comma-separated; `options`
// when none are given), then runs the loop N times on the stage's in-process entry.
inline int fastpath_main(const Stage& stage, const char* options, int argc, char** argv) {
    unsigned long iterations = argc > 1 ? std::strtoul(argv[1], nullptr, 0) : 1000000;
    char text[256];
    std::snprintf(text, sizeof text, "%s", argc > 2 ? argv[2] : options);
    for (char* entry = std::strtok(text, ","); entry; entry = std::strtok(nullptr, ",")) {
        char* value = std::strchr(entry, '=');
        if (!value || (*value++ = 0, !stage.set_option(entry, value))) {
            std::fprintf(stderr, "%s: bad option %s\n", argv[0], entry);
            return 2;
        }
    }
    std::size_t size = argc > 3 ? std::strtoul(argv[3], nullptr, 0) : 32;
    fastpath_loop(stage.single_thread->malloc, stage.single_thread->free, iterations, size);
    return 0;
}

}  // namespace edu::bench
