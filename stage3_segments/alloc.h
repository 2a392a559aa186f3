// stage3_segments/alloc.h: the fast paths of malloc and free, inline, instantiated once per
// mode (secure on/off x stats on/off) so a mode that is off costs no instruction.
// Entry points: heap_alloc<M>, heap_free<M>. Everything they cannot finish goes out of line:
// malloc_generic and page_event (heap.h), free_generic (free.cc).
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/heap.h"
#include "stage3_segments/page.h"
#include "stage3_segments/secure.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/stats.h"
#include "stage3_segments/types.h"

#define S3_LIKELY(x) __builtin_expect(!!(x), 1)
#define S3_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define S3_INLINE __attribute__((always_inline)) inline

namespace edu::stage3 {

template <bool kSecure, bool kStats>
struct Mode {
    static constexpr bool secure = kSecure;
    static constexpr bool stats = kStats;
};

// The cold ends of the fast paths (free.cc).
[[gnu::noinline]] void free_generic(void* p);
[[gnu::cold, noreturn]] void die_corrupted_list(const Block* b);

// [S3.24] malloc's fast path: one compare, one table load, pop, one unlikely branch. Requests
// up to 1 KiB index heap->direct by words; the slot names a page whose free list is popped.
// An empty slot names g_empty_page, whose list is empty, so there is no page NULL test: the
// branch that catches an exhausted page catches it too. Everything else is malloc_generic,
// which is not inlined: inlining it would make this function save registers on every call.
// `alignment`: kAlignment for malloc; an aligned request's, whose `size` is its bin's ([S3.97]).
template <class M>
S3_INLINE void* heap_alloc(Heap* heap, std::size_t size, std::size_t requested, std::size_t alignment = kAlignment) {
    if (S3_LIKELY(size <= kDirectMax)) {
        Page* page = heap->direct[(size + 7) >> 3];
        Block* b = page->free;
        // [S3.65] The block lies in its page's 4 MiB chunk (block_in_page_chunk, types.h). A
        // null b (an exhausted page, g_empty_page) fails the same test and goes generic, so it
        // replaces the null test, at two instructions more; so does a link that an overflow or
        // a write after free rewrote (the free neighbour's first word, which the mark test
        // cannot see), before anything reads through it: page_pop_checked says so in one line.
        // The empty asm keeps b in %rax, the return register: without it gcc 12 put the page
        // there and paid a `mov` before `ret`.
        asm("" : "+a"(b));
        if (S3_LIKELY(block_in_page_chunk(b, page))) {
            // [S3.40] Every block on a list carries the freed mark ([S3.4]); one that lost it
            // was written after it was freed (an underflow from the block above, an overflow,
            // a use after free). Its line is being read for the link anyway. The test also
            // clears the mark ([S3.4]: a block in use does not carry it): mark ^= expected
            // leaves 0 exactly when the mark was there, and x86's xor into memory sets the
            // flag the branch reads, one instruction where a compare and a store of 0 are two.
            b->mark ^= M::secure ? freed_mark(page) : kFreedMark;
            if (S3_UNLIKELY(b->mark != 0)) die_mark_gone(b);
            uintptr_t next = b->link;
            if constexpr (M::secure) {
                next = decode(page, next);
                if (S3_UNLIKELY(next != 0 && !page_owns_block(page, next))) die_corrupted_list(b);
            }
            page->free = reinterpret_cast<Block*>(next);
            ++page->used;
            if constexpr (M::stats) count_malloc(requested, page->block_size);
            return b;
        }
    }
    if (alignment > kAlignment) return malloc_generic_aligned(size, requested, heap, alignment);
    return malloc_generic(size, requested, heap);
}

// [S3.25] free's fast path. Before it trusts anything it reads about `p` it checks, cheaply:
//   1. the segment map, read through the map's window [S3.60]: p's 4 MiB chunk lies in the
//      window (null fails here), and its entry is p's segment, or g_foreign when the chunk is
//      not ours, whose page fails the next test,
//   2. the validity test [S3.6]: p is the start of a carved block of its page (a multiply),
//   3. the freed mark [S3.4]: p does not look already free (one compare).
// Then the push on local_free and --used; an empty page is the one unlikely exit after the
// push. Any failed check goes to free_generic, which finds out what is wrong and dies with one
// line, or frees after all: a block of a full page (whose constants fail on purpose, [S3.6]),
// or a live block whose second word happened to equal the mark. Each failed check leaves at
// once, so the path taken runs straight to `ret` (written as one nested `if`, gcc laid it out
// with a taken jump over the cold call on every free).
template <class M>
S3_INLINE void heap_free(void* p) {
    uintptr_t chunk = window_chunk(p);
    if (S3_UNLIKELY(chunk >= g_map_window.chunks)) return free_generic(p);   // (S3.60: outside, it asks the map)
    Page* page = g_map_window.leaf[chunk]->page_of[(reinterpret_cast<uintptr_t>(p) >> kSlotShift) & (kSlots - 1)];
    auto* b = static_cast<Block*>(p);
    uint64_t mark = M::secure ? freed_mark(page) : kFreedMark;
    if (S3_UNLIKELY(!page_is_block(page, reinterpret_cast<uintptr_t>(p)) || b->mark == mark)) return free_generic(p);
    b->mark = mark;
    uintptr_t link = reinterpret_cast<uintptr_t>(page->local_free);
    if constexpr (M::secure) link = encode(page, link);
    b->link = link;
    page->local_free = b;
    if constexpr (M::stats) count_free(page->block_size);
    if (S3_UNLIKELY(--page->used == 0)) page_event(page);
}

// [S3.93] The page of `p` when p is plainly a live block, by free's checks ([S3.25]) made
// exact: the window's segment map, a page in use, p the start of one of its carved blocks
// (page_has_block, which full pages pass too), and no freed mark. Null when any of them fails:
// then validate_block (after the mapped blocks, [S3.39]) finds out what p is, and dies with its
// line or confirms a live block whose second word happened to equal the mark. usable_size and
// realloc ask it first; redis asks usable_size at every malloc and free to count its memory,
// and validate_block alone cost 55 instructions a call there, with the mapped lookup another 16.
template <class M>
S3_INLINE Page* live_block_page(const void* p) {
    uintptr_t chunk = window_chunk(p);
    if (S3_UNLIKELY(chunk >= g_map_window.chunks)) return nullptr;
    auto a = reinterpret_cast<uintptr_t>(p);
    Page* page = g_map_window.leaf[chunk]->page_of[(a >> kSlotShift) & (kSlots - 1)];
    uint64_t mark = M::secure ? freed_mark(page) : kFreedMark;
    if (S3_UNLIKELY(!page->in_use || !page_has_block(page, a) || static_cast<const Block*>(p)->mark == mark))
        return nullptr;
    return page;
}

}  // namespace edu::stage3
