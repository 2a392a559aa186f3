// bench/stage3/allocators.cc: building the Allocator records (see allocators.h).
#include "bench/stage3/allocators.h"

#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "stage3_segments/stage3.h"

namespace edu::bench {

Allocator stage3_allocator(const char* label, const char* secure, const char* stats) {
    Allocator a{label, nullptr, nullptr, secure, stats};
    return a;
}

void activate(Allocator& a) {
    if (!a.secure) return;
    const Stage& s = stage3::descriptor;
    if (!s.set_option("secure", a.secure) || !s.set_option("stats", a.stats)) {
        std::fprintf(stderr, "stage 3 refused secure=%s stats=%s\n", a.secure, a.stats);
        std::exit(1);
    }
    a.malloc = s.single_thread->malloc;
    a.free = s.single_thread->free;
}

Allocator mimalloc_allocator() {
    void* lib = dlopen("libmimalloc.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        std::fprintf(stderr, "cannot load mimalloc: %s (apt-get install libmimalloc2.0)\n", dlerror());
        std::exit(1);
    }
    auto m = reinterpret_cast<void* (*)(std::size_t)>(dlsym(lib, "mi_malloc"));
    auto f = reinterpret_cast<void (*)(void*)>(dlsym(lib, "mi_free"));
    if (!m || !f) {
        std::fprintf(stderr, "mimalloc lacks mi_malloc / mi_free\n");
        std::exit(1);
    }
    return Allocator{"mimalloc 2.0.9", m, f};
}

Allocator glibc_allocator() { return Allocator{"glibc", &std::malloc, &std::free}; }

}  // namespace edu::bench
