// bench/stage3/allocators.h: the allocators stage 3's benchmarks compare, behind one pair of
// function pointers: stage 3 (its single-thread entry, in a chosen mode), mimalloc (Debian's
// libmimalloc.so.2, dlopen'ed with RTLD_LOCAL so it serves only the calls routed to it) and
// glibc. Entry points: Allocator, stage3_allocator, mimalloc_allocator, glibc_allocator,
// activate. Stage 3's modes are process-wide (they decide how free lists are stored), so a
// stage 3 record only takes effect through activate(), called while it holds no block.
#pragma once

#include <cstddef>

namespace edu::bench {

struct Allocator {
    const char* label;
    void* (*malloc)(std::size_t);
    void (*free)(void*);
    const char* secure = nullptr;   // stage 3 only: its options while this record runs
    const char* stats = nullptr;
};

// Stage 3 with options "secure" and "stats" as given ("on"/"off").
Allocator stage3_allocator(const char* label, const char* secure, const char* stats);
// Makes `a` ready to run: for stage 3, sets its options and reads the entry table they select
// (exits if an option is refused); nothing for the others.
void activate(Allocator& a);
// mimalloc's mi_malloc / mi_free; exits with a message if the library cannot be loaded.
Allocator mimalloc_allocator();
Allocator glibc_allocator();

}  // namespace edu::bench
