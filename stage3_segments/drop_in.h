// stage3_segments/drop_in.h: malloc and free of the drop-in library's usual mode (statistics and
// secure mode off), thread-safe entry, inline, so that contract/preload.cc's exported malloc and
// free are the fast paths themselves rather than a jump to them. Entry point: DropIn.
#pragma once

#include <sys/single_threaded.h>

#include <cstddef>

#include "stage3_segments/alloc.h"

namespace edu::stage3 {

// The locked paths of this mode's thread-safe entry (stage3.cc), out of line.
[[gnu::noinline]] void* drop_in_malloc_locked(std::size_t size);
[[gnu::noinline]] void drop_in_free_locked(void* p);

// The gate of the exported paths (below): glibc's __libc_single_threaded while open, else
// kClosed. Written by `open` (stage3.cc), read relaxed: either byte can always be read.
inline constexpr char kClosed = 0;
extern const char* g_gate __attribute__((visibility("hidden")));   // hidden: no GOT load

// [S3.57] The thread-safe entry of Mode<false, false> (S3.50) as contract/locked.h's `call`
// builds it: the flag test, then this mode's fast path, or the lock. The entry's table in
// stage3.cc holds `malloc` and `free`, so contract/preload.cc can tell that the entry it chose
// is this one, opens the gate (`open`), and compiles `exported_malloc` and `exported_free` into
// its own malloc and free: no jump between the program's call and the fast path. Their one test
// reads the byte g_gate points at: glibc's flag while the gate is open, so the same test says
// "this entry" and "one thread", three instructions a call, where a flag of the preload's and
// then glibc's took six. When it reads 0, `closed` (the preload's slot) runs `malloc`, which
// tests glibc's flag again and takes the lock.
struct DropIn {
    // [S3.74] The exported malloc and free start on a 64-byte line (contract/preload.cc aligns
    // them by this), as stage 4's do (its S4.81, which says why): no instruction changes, and
    // the rings ran faster by CPU time (chapter, "Measured").
    static constexpr std::size_t kEntryAlignment = 64;

    static void* malloc(std::size_t size) {
        if (__libc_single_threaded) [[likely]] return heap_alloc<Mode<false, false>>(&g_default_heap, size, size);
        return drop_in_malloc_locked(size);
    }
    static void free(void* p) {
        if (__libc_single_threaded) [[likely]] return heap_free<Mode<false, false>>(p);
        drop_in_free_locked(p);
    }

    static void open(bool yes) { __atomic_store_n(&g_gate, yes ? &__libc_single_threaded : &kClosed, __ATOMIC_RELEASE); }

    template <class Closed>
    static void* exported_malloc(std::size_t size, Closed closed) {
        if (*__atomic_load_n(&g_gate, __ATOMIC_RELAXED)) [[likely]]
            return heap_alloc<Mode<false, false>>(&g_default_heap, size, size);
        return closed(size);
    }
    template <class Closed>
    static void exported_free(void* p, Closed closed) {
        if (*__atomic_load_n(&g_gate, __ATOMIC_RELAXED)) [[likely]] return heap_free<Mode<false, false>>(p);
        closed(p);
    }
};

}  // namespace edu::stage3
