// stage2_pools/pool.h: blocks inside pools: the inline hot paths (pool_malloc, small_find,
// pool_free) and the out-of-line transitions between pool states. Where pools come from and
// go back to: arena.h. Who calls these, and counts: stage2.cc and debug.cc.
#pragma once

#include <cstdint>

#include "stage2_pools/types.h"

namespace edu::stage2 {

// [S2.9] Pool states, and what moves a pool between them.
//
//    state   test                       where the pool is
//    used    used > 0, free != nullptr  in g_heap.used[class]: malloc looks only here
//    full    free == nullptr            in no list: nothing to hand out, free will find it
//    empty   used == 0                  in its arena's free_pools: any class may take it
//
//            malloc (arena_take_pool)        malloc takes the last block
//    empty ---------------------------> used ---------------------------> full
//      ^                                 |  ^                               |
//      +---- free of the last block -----+  +------------ free -------------+
//
// full -> empty in one step cannot happen: every pool holds at least two blocks ([S2.3]).
// full -> used puts the pool at the back of its ring, behind the pools malloc is draining, so
// it gathers more frees before malloc reaches it (pymalloc puts it at the front: then the next
// malloc of the class takes the block just freed and the pool is full again, and in a
// random-order workload most frees and mallocs of small blocks leave the inline path).

// Out of line: the cold half of each operation, so the inline halves stay a few instructions.
void* pool_malloc_slow(unsigned c);              // used[c] is empty: take an empty pool
void* pool_malloc_cold(unsigned c);              // pool_malloc_slow, or stage 1 ([S2.31], stage2.cc)
void pool_refill(Pool* pool);                    // free list ran dry: carve a block or go full
void* pool_refill_after(Pool* pool, void* block);  // pool_refill, then returns `block`
void pool_free_slow(Pool* pool, bool was_full);  // full -> used, or used -> empty
[[noreturn]] void small_reject(const void* user, uintptr_t block, const char* call);
[[noreturn, gnu::cold]] void pool_pop_refused(const Pool* pool, const Block* block, const char* call);

// Index of the block at byte `offset` (>= header) of a pool of class c.
inline uint32_t block_index(uint32_t offset, unsigned c) {
    uint64_t rel = offset - g_heap.header_bytes;
    return static_cast<uint32_t>((rel * kReciprocal.of[c]) >> 32);
}
inline uint32_t block_index(const Pool* pool, uintptr_t block) {
    uintptr_t offset = block - reinterpret_cast<uintptr_t>(pool);
    return block_index(static_cast<uint32_t>(offset), pool->class_index);
}

// [S2.26] The head of a pool's free list came from a link stored in a free block, which a
// write after free or an overflow from the block below can have changed. Before the pop reads
// through it or sets its bit, it must lie in the carved part of this pool, 16-byte aligned:
// one unsigned compare of its distance from the first block with the carved bytes (an address
// below the pool wraps to a huge distance) and one test of its low bits. Anything else dies
// naming the call and the link: "free list corrupted". A 16-byte-aligned link into the middle
// of a larger block, or to a live block, passes (only the multiply-back of the index and a
// read of the live bit would see those: more than this range check costs, section 3).
// Then, the block's line being read for its link anyway, its freed mark ([S2.28]): a block
// that lost it was written after it was freed, and dies naming it: "lost its freed mark".
// Returns the block's index in the live bitmap.
inline uint32_t pool_pop_index(Pool* pool, const Block* block, const char* call) {
    uintptr_t rel = reinterpret_cast<uintptr_t>(block) - reinterpret_cast<uintptr_t>(pool) - g_heap.header_bytes;
    // One call site for both refusals: with two, gcc sets up a frame on the path that passes.
    if (__builtin_expect(rel >= pool->next_offset - g_heap.header_bytes || (rel & (kAlignment - 1)) != 0 ||
                             block->mark != freed_mark(block), 0))
        pool_pop_refused(pool, block, call);
    return static_cast<uint32_t>((rel * kReciprocal.of[pool->class_index]) >> 32);
}

// [S2.10] The hot path: the first pool of the class's ring always has a free block, so
// allocation is: find the ring head, pop the pool's free list (its head checked, S2.26),
// count, mark. Only when the list runs dry (pool_refill) or the ring is empty
// (pool_malloc_cold, which calls pool_malloc_slow) does a call happen.
inline void* pool_malloc(unsigned c) {
    PoolLinks* head = &g_heap.used[c];
    PoolLinks* first = head->next;
    if (__builtin_expect(first == head, 0)) return pool_malloc_cold(c);
    Pool* pool = static_cast<Pool*>(first);
    Block* block = pool->free;
    uint32_t index = pool_pop_index(pool, block, "malloc");
    ++pool->used;
    pool_bitmap(pool)[index >> 6] |= uint64_t{1} << (index & 63);
    // A tail call: nothing of this function is live across it, so the path above saves no register.
    if (__builtin_expect((pool->free = block->next) == nullptr, 0)) return pool_refill_after(pool, block);
    return block;
}

// A live block, found and checked.
struct SmallRef {
    Pool* pool;
    Block* block;
    uint32_t index;        // in the pool's live bitmap
};

// [S2.14] `block` lies in one of our arenas (radix_lookup said so). It is a live block
// only if it sits inside the carved part of its pool, exactly on a block boundary, with its
// bit set in the live bitmap. Anything else dies naming `call` and `user` (the pointer the
// program passed). The bitmap makes every double free of a small block a one-bit test.
inline SmallRef small_find(uintptr_t block, const void* user, const char* call) {
    Pool* pool = pool_of(block);
    uint32_t offset = static_cast<uint32_t>(block - reinterpret_cast<uintptr_t>(pool));
    unsigned c = pool->class_index;
    if (__builtin_expect(offset < g_heap.header_bytes || offset >= pool->next_offset ||
                             c >= kClassCount, 0))
        small_reject(user, block, call);
    uint32_t index = block_index(offset, c);
    uint64_t bit = uint64_t{1} << (index & 63);
    bool on_boundary = g_heap.header_bytes + index * class_size(c) == offset;
    if (__builtin_expect(!on_boundary || !(pool_bitmap(pool)[index >> 6] & bit), 0))
        small_reject(user, block, call);
    return SmallRef{pool, reinterpret_cast<Block*>(block), index};
}

// [S2.15] Push the block on its pool's free list, its freed mark written (LIFO: the block
// reused next is the one most likely still in cache). Two unlikely cases leave the inline
// path: the pool was full (it rejoins the ring of its class) or it just became empty (it goes
// back to its arena).
inline void pool_free(const SmallRef& ref) {
    Pool* pool = ref.pool;
    pool_bitmap(pool)[ref.index >> 6] &= ~(uint64_t{1} << (ref.index & 63));
    Block* head = pool->free;
    ref.block->next = head;
    ref.block->mark = freed_mark(ref.block);   // [S2.28]
    pool->free = ref.block;
    uint32_t left = --pool->used;
    if (__builtin_expect(head == nullptr || left == 0, 0)) pool_free_slow(pool, head == nullptr);
}

// True if pool `pool`'s bit for `index` is set (the checker and walker read it).
inline bool block_live(Pool* pool, uint32_t index) {
    return (pool_bitmap(pool)[index >> 6] >> (index & 63)) & 1;
}

}  // namespace edu::stage2
