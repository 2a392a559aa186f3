// stage4_threads/drop_in.h: malloc and free of the drop-in library's usual mode (statistics and
// secure mode off), inline, so that contract/preload.cc's exported malloc and free are the fast
// paths themselves, as mimalloc's are, rather than a jump to them. Entry point: DropIn.
#pragma once

#include <cstddef>

#include "stage4_threads/alloc.h"

namespace edu::stage4 {

// The gate of the exported paths (below): true while they may run. Written by `open`
// (stage4.cc), read relaxed.
extern bool g_gate_open __attribute__((visibility("hidden")));   // hidden: no GOT load

// [S4.64] Stage 3's S3.57 for this stage's fast paths, which need no lock: the table of
// Mode<false> (stage4.cc) holds `malloc` and `free`, so contract/preload.cc can tell that the
// entry it chose is this one, opens the gate (`open`), and compiles `exported_malloc` and
// `exported_free` into its own malloc and free; with the gate closed they call `closed` (the
// preload's slot). The gate is a flag: three instructions a call (a load, a test, a branch).
// Three cheaper gates, folded into the load of the heap or into the bounds the fast paths test
// (two instructions fewer a call) and the flag tested by one `cmpb` (one fewer), ran no
// faster, on the rings a little slower: chapter, 14.
struct DropIn {
    static void* malloc(std::size_t size) { return heap_alloc<Mode<false>>(t_heap, size, size); }
    static void free(void* p) { heap_free<Mode<false>>(p); }

    static void open(bool yes) { __atomic_store_n(&g_gate_open, yes, __ATOMIC_RELEASE); }

    template <class Closed>
    static void* exported_malloc(std::size_t size, Closed closed) {
        if (__atomic_load_n(&g_gate_open, __ATOMIC_RELAXED)) [[likely]] return malloc(size);
        return closed(size);
    }
    template <class Closed>
    static void exported_free(void* p, Closed closed) {
        if (__atomic_load_n(&g_gate_open, __ATOMIC_RELAXED)) [[likely]] return free(p);
        closed(p);
    }
};

}  // namespace edu::stage4
