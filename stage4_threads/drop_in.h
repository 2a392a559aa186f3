// stage4_threads/drop_in.h: malloc and free of the drop-in library's usual mode (statistics and
// secure mode off), inline, so that contract/preload.cc's exported malloc and free are the fast
// paths themselves, as mimalloc's are, rather than a jump to them. Entry point: DropIn.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage4_threads/alloc.h"

namespace edu::stage4 {

// The gate of the exported paths (below): the bounds their fast paths test, malloc's size bound
// and free's arena-slot bound, while open; zeros while closed. Written by `open`, read relaxed.
struct Gate {
    std::size_t below;   // malloc serves sizes below it: kDirectMax + 1, or 0
    uintptr_t slots;     // free looks up arena slots below it: kArenaSlots, or 0
};
extern Gate g_gate __attribute__((visibility("hidden")));   // hidden: no GOT load (stage4.cc)

// [S4.64] Stage 3's S3.57 for this stage's fast paths, which need no lock: the table of
// Mode<false> (stage4.cc) holds `malloc` and `free`, so contract/preload.cc can tell that the
// entry it chose is this one, opens the gate (`open`), and compiles `exported_malloc` and
// `exported_free` into its own malloc and free; with the gate closed they call `closed` (the
// preload's slot). The gate costs no test of its own: it is the bound each fast path compares
// with anyway, read from g_gate instead of being a constant (one load a call). A closed gate's
// zeros make every call miss, and only a miss asks whether the bound it read was 0, on its way
// to malloc_generic or free_generic. A flag tested first (three instructions a call), the flag
// tested by one `cmpb`, and a gate folded into the load of the heap were measured against it:
// chapter, 14.
struct DropIn {
    static void* malloc(std::size_t size) { return heap_alloc<Mode<false>>(t_heap, size, size); }
    static void free(void* p) { heap_free<Mode<false>>(p); }

    static void open(bool yes) {
        __atomic_store_n(&g_gate.slots, yes ? kArenaSlots : 0, __ATOMIC_RELEASE);
        __atomic_store_n(&g_gate.below, yes ? kDirectMax + 1 : 0, __ATOMIC_RELEASE);
    }

    template <class Closed>
    static void* exported_malloc(std::size_t size, Closed closed) {
        Heap* heap = t_heap;
        std::size_t below = __atomic_load_n(&g_gate.below, __ATOMIC_RELAXED);
        return heap_alloc<Mode<false>>(heap, size, size, below, [&] {
            if (below != 0) [[likely]] return malloc_generic(size, size, heap);
            return closed(size);
        });
    }
    template <class Closed>
    static void exported_free(void* p, Closed closed) {
        uintptr_t slots = __atomic_load_n(&g_gate.slots, __ATOMIC_RELAXED);
        heap_free<Mode<false>>(p, slots, [&] {
            if (slots != 0) [[likely]] return free_generic(p);
            closed(p);
        });
    }
};

}  // namespace edu::stage4
