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
    uint64_t below;   // malloc serves sizes below it: kDirectMax + 1, or 0
    uint64_t slots;   // free looks up arena slots below it: kArenaSlots, or 0
};
extern Gate g_gate __attribute__((visibility("hidden")));   // hidden: no GOT load (stage4.cc)

// [S4.64] Stage 3's S3.57 for this stage's fast paths, which need no lock: the table of
// Mode<false> (stage4.cc) holds `malloc` and `free`, so contract/preload.cc can tell that the
// entry it chose is this one, opens the gate (`open`), and compiles `exported_malloc` and
// `exported_free` into its own malloc and free; with the gate closed they call `closed` (the
// preload's slot). The gate costs no instruction of its own: it is the bound each fast path
// compares with anyway, in g_gate instead of being a constant, and the compare reads it from
// memory (below_gate). A closed gate's zeros make every call miss, and only a miss reads the
// bound again and asks whether it is 0, on its way to malloc_generic or free_generic. A flag
// tested first (three instructions a call), the flag tested by one `cmpb`, a gate folded into
// the load of the heap, and the bound loaded into a register first (one instruction a call)
// were measured against it: chapter, Measured: "realloc and the table (section 14)".
struct DropIn {
    // [S4.81] Where the exported malloc and free start: on a 64-byte line (contract/preload.cc
    // aligns them by this). At the linker's 16 bytes, free's 31 instructions spanned three
    // lines and the next change of any code before them could move either path across one
    // more; aligned, each spans two, wherever it lands. No instruction changes; the rings ran
    // 2% to 3% faster by CPU time (chapter, "Measured"). The cause is a guess (fetch and the
    // op cache work in 64-byte windows); this machine has no counters to show it.
    static constexpr std::size_t kEntryAlignment = 64;

    static void* malloc(std::size_t size) { return heap_alloc<Mode<false>>(t_heap, size, size); }
    static void free(void* p) { heap_free<Mode<false>>(p); }

    static void open(bool yes) {
        __atomic_store_n(&g_gate.slots, yes ? kArenaSlots : 0, __ATOMIC_RELEASE);
        __atomic_store_n(&g_gate.below, yes ? kDirectMax + 1 : 0, __ATOMIC_RELEASE);
    }

    // Whether x < *bound, the bound read by the compare itself: `cmp bound(%rip), x`. gcc loads
    // a relaxed atomic into a register before it compares (one instruction more a call); the
    // compare reads the word once, as that load did, and the branch tests its flag. A miss reads
    // the bound again: the gate changes only when the chosen entry does, and either reading
    // picks a path that is right for the entry chosen when it was read (0: the slot, which is
    // the chosen entry; the open bound: DropIn's generic paths, DropIn being the chosen entry).
    static bool below_gate(uint64_t x, const uint64_t* bound) {
        bool below;
        asm("cmp %[bound], %[x]" : "=@ccb"(below) : [bound] "m"(*bound), [x] "r"(x));
        return below;
    }
    static bool gate_open(const uint64_t* bound) { return __atomic_load_n(bound, __ATOMIC_RELAXED) != 0; }

    template <class Closed>
    static void* exported_malloc(std::size_t size, Closed closed) {
        Heap* heap = t_heap;
        return heap_alloc<Mode<false>>(
            heap, size, size, [](std::size_t n) { return below_gate(n, &g_gate.below); }, [&] {
                if (gate_open(&g_gate.below)) [[likely]] return malloc_generic(size, size, heap);
                return closed(size);
            });
    }
    template <class Closed>
    static void exported_free(void* p, Closed closed) {
        heap_free<Mode<false>>(p, [](uintptr_t slot) { return below_gate(slot, &g_gate.slots); }, [&] {
            if (gate_open(&g_gate.slots)) [[likely]] return free_generic(p);
            closed(p);
        });
    }
};

}  // namespace edu::stage4
