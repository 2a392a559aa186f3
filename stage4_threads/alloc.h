// stage4_threads/alloc.h: the fast paths of malloc and free for the calling thread's heap,
// inline, instantiated once per mode (stats on/off) so a mode that is off costs nothing.
// Entry points: heap_alloc<M>, heap_free<M>. Everything they cannot finish goes out of line:
// malloc_generic, page_event (heap.h), free_generic (free.h), or the caller's `miss` (S4.64).
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage4_threads/free.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/stats.h"
#include "stage4_threads/types.h"

#define S4_LIKELY(x) __builtin_expect(!!(x), 1)
#define S4_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define S4_INLINE __attribute__((always_inline)) inline

namespace edu::stage4 {

template <bool kStats, bool kSecure = false>
struct Mode {
    static constexpr bool stats = kStats;
    static constexpr bool secure = kSecure;   // [S4.56]
};

// [S4.32] malloc's fast path: stage 3's (S3.24), for the heap of the calling thread, which one
// thread-local load provides. The heap is the thread's own, so the page and its list are too:
// no atomic, no lock, no fence. The empty heap of a thread that never allocated sends it to
// malloc_generic like an exhausted page does. The block must still carry the freed mark, or it
// is on the list a second time (a double free that the local free let through, S4.33), and
// handing it out again would give one block to two owners. Then the mark is cleared (a block
// in use does not carry it) by a store of 0. Stage 3's one `xor` into the block (S3.40) would
// do both in one instruction, but its store must wait for the block's line, where this store's
// value is ready at once: the xor was tried here and measured slower on the programs whose
// blocks have left the cache (chapter, Measured: "The fast paths (section 5)").
// It serves the sizes `direct(size)` admits from heap->direct, and hands the others to `miss`:
// for every entry size <= kDirectMax and malloc_generic (the overload below), for the drop-in
// library's exported malloc its gate, whose bound is 0 while it is closed (drop_in.h, S4.64).
// A size it admits but cannot serve goes to malloc_generic: admitted, the gate was open.
// `alignment`: kAlignment for malloc; an aligned request's, whose `size` is its bin's ([S4.115]).
template <class M, class Direct, class Miss>
S4_INLINE void* heap_alloc(Heap* heap, std::size_t size, std::size_t requested, Direct direct,
                           Miss miss, std::size_t alignment = kAlignment) {
    if (S4_LIKELY(direct(size))) {
        Page* page = heap->direct[(size + 7) >> 3];
        Block* b = page->free;
        // Stage 3's chunk test (S3.65) stands for the null test: an exhausted page's null head
        // and a head that an overflow or a write after free rewrote (the free neighbour's link,
        // which the mark test cannot see) both fail it and go generic, which names the second
        // before reading through it. Two instructions more than `b != nullptr`.
        asm("" : "+a"(b));   // b in %rax, the return register (as stage 3: one `mov` fewer)
        if (S4_LIKELY(block_in_page_chunk(b, page))) {
            if (S4_UNLIKELY(b->mark != freed_mark(b))) freed_twice(b);
            uintptr_t next = b->link;
            if constexpr (M::secure) {   // the link must decode to a block of the page (S3.10)
                next = decode(page, next);
                if (S4_UNLIKELY(next != 0 && !page_owns_block(page, next)))
                    stage3::die_corrupted_link(kStageName, "malloc", b);
            }
            page->free = reinterpret_cast<Block*>(next);
            ++page->used;
            b->mark = 0;   // not free any more
            if constexpr (M::stats) count_malloc(heap, requested, page->block_size);
            return b;
        }
        if (alignment > kAlignment) return malloc_generic_aligned(size, requested, heap, alignment);
        return malloc_generic(size, requested, heap);
    }
    return miss();
}
template <class M>
S4_INLINE void* heap_alloc(Heap* heap, std::size_t size, std::size_t requested, std::size_t alignment = kAlignment) {
    return heap_alloc<M>(
        heap, size, requested, [](std::size_t n) { return n <= kDirectMax; },
        [=] {
            if (alignment > kAlignment) return malloc_generic_aligned(size, requested, heap, alignment);
            return malloc_generic(size, requested, heap);
        },
        alignment);
}

// [S4.33] free's fast path. Stage 3 asked a global map "is this segment ours?"; stage 4 asks
// "is it mine?", of the thread's own heap: the pointer's arena slot indexes heap->owned[], one
// byte the heap alone writes. A pointer outside the arena (null too: the empty heap's base is
// 0, and any heap's subtraction wraps) or in another thread's segment fails that test and goes
// to free_generic, which sorts foreign from remote. Then stage 3's validity test (S3.25) and
// the push on local_free: the local free touches no shared word.
// [S4.49] Then stage 3's test of the freed mark (S3.25): a block that carries it goes to
// free_generic, whose owner's search of the four lists (S4.31) confirms the double free and
// reports it in the free that makes it, wherever the block sits on its lists: free(p); free(q);
// free(p) dies at the second free of p, as under glibc (whose tcache key plays the mark's
// part). The keyed mark (S4.48) means a live block never looks free by accident, and the
// search means that even a forged mark is never called a double free. The mark is computed
// for the store anyway; its load and compare replace the two comparisons with the list heads
// an earlier version made instead (it read nothing of the block), so the pair costs no
// instruction more (the chapter has the counts, and what the load costs where blocks are
// freed long after they were made).
// Like malloc's, it takes its bound (the arena slots `arena(slot)` admits) and its `miss` from
// the caller: slots below kArenaSlots and free_generic for every entry, the gate for the
// exported free (S4.64). A slot it admits goes to free_generic if any later test fails.
template <class M, class Arena, class Miss>
S4_INLINE void heap_free(void* p, Arena arena, Miss miss) {
    Heap* heap = t_heap;
    uintptr_t slot = (reinterpret_cast<uintptr_t>(p) - heap->arena_base) >> kSegmentShift;
    if (S4_UNLIKELY(!arena(slot))) return miss();
    if (S4_LIKELY(heap->owned[slot])) {
        Page* page = page_of(p);
        auto* b = static_cast<Block*>(p);
        uint64_t mark = freed_mark(b);
        if (S4_LIKELY(page_is_block(page, reinterpret_cast<uintptr_t>(p)) && b->mark != mark)) {
            b->mark = mark;
            uintptr_t link = reinterpret_cast<uintptr_t>(page->local_free);
            b->link = M::secure ? encode(page, link) : link;
            page->local_free = b;
            if constexpr (M::stats) count_free(heap, page->block_size);
            if (S4_UNLIKELY(--page->used == 0)) page_event(heap, page);
            return;
        }
    }
    free_generic(p);
}
template <class M>
S4_INLINE void heap_free(void* p) {
    heap_free<M>(p, [](uintptr_t slot) { return slot < kArenaSlots; }, [p] { free_generic(p); });
}

// [S4.58] realloc and usable_size ask "whose block is this, and is it live?" too. For the
// caller's own live block, the answer costs what the local free pays for it (S4.33, S4.49):
// its arena slot is the heap's, it is a carved block of a page with room (the validity test),
// and it carries neither the freed mark nor the suspect one (S4.46), which differ from each
// other in bit 0 alone. That page is returned; anything else (another thread's block, a full
// page, a marked block, a bad pointer) gives nullptr, and find_block sorts it out with every
// check and its diagnostics. Asking find_block every time would cost each realloc a call and
// every check (the chapter has the count; espresso reallocates once in 30 calls).
S4_INLINE Page* own_live_block(const void* p) {
    Heap* heap = t_heap;
    auto a = reinterpret_cast<uintptr_t>(p);
    uintptr_t slot = (a - heap->arena_base) >> kSegmentShift;
    if (S4_LIKELY(slot < kArenaSlots && heap->owned[slot])) {
        Page* page = page_of(p);
        if (S4_LIKELY(page_is_block(page, a) && (static_cast<const Block*>(p)->mark ^ freed_mark(p)) > 1)) return page;
    }
    return nullptr;
}

}  // namespace edu::stage4
