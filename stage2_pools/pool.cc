// stage2_pools/pool.cc: the cold halves of pool.h: starting a pool, lazy carving, the
// state transitions that relink pools, and the diagnosis of a pointer that is not a block.
// Also the definition of g_heap, whose ring heads must point at themselves before main.
#include "stage2_pools/pool.h"

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include

#include "contract/diagnostics.h"
#include "stage2_pools/arena.h"
#include "stage2_pools/radix.h"

namespace edu::stage2 {
namespace {

constexpr Heap make_heap(Heap* self) {
    Heap heap{};
    for (unsigned c = 0; c < kClassCount; ++c)
        heap.used[c] = PoolLinks{&self->used[c], &self->used[c]};
    apply_geometry(heap, kClassic);
    heap.usable = heap.unused = kNoArena;
    for (uint32_t& last : heap.last_with) last = kNoArena;
    return heap;
}

// [S2.30] The ring links live in pool headers, and a pool's header follows the last block of
// the pool below it, with no gap when the class fills a pool exactly (248 blocks of 16 bytes in
// a classic pool): an overflow out of that block rewrites `next`, then `prev`. Relinking through
// a forged link is the classic unlink write (`pool->next->prev = pool->prev` stores where the
// program chose), or a SIGSEGV. So every link a relink follows must lead to the class's ring
// head or to a pool header of ours (pool-aligned, in an arena or a pool of stage 1's, [S2.35]:
// reading it cannot fault) that links back. Only the state changes of [S2.9] relink, all out of
// line; only a link to a pool of stage 1's pays the raw table's probe.
bool ring_member(const PoolLinks* link, unsigned c) {
    auto at = reinterpret_cast<uintptr_t>(link);
    return link == &g_heap.used[c] ||
           ((at & ~g_heap.pool_mask) == 0 && (radix_lookup(at) != 0 || stage1_pool_of(at) != nullptr));
}

// A neighbour of `pool` in class c's ring failed the test above. A pool being unlinked is
// either full (malloc took its last block) or empty (free returned its last); one being linked
// comes from malloc at the front or from free at the back.
[[noreturn, gnu::cold]] void ring_corrupted(const PoolLinks* pool, const char* call) {
    die(kStageName, call, pool,
        "pool ring corrupted: a pool header's links lead out of its ring (an overflow from the "
        "last block of the pool below into its header?)");
}

// Links `pool` into class c's ring right after `where` (its head or a pool of the ring).
void link_after(PoolLinks* where, Pool* pool, unsigned c, const char* call) {
    PoolLinks* next = where->next;
    if (!ring_member(next, c) || next->prev != where) [[unlikely]]
        ring_corrupted(where == &g_heap.used[c] ? next : where, call);
    pool->next = next;
    pool->prev = where;
    next->prev = pool;
    where->next = pool;
}

// The three helpers below are called only from lab parts' code (docs/teaching.md): a student's
// part that links without them must still build under -Werror, hence [[maybe_unused]].
[[maybe_unused]] void link_front(Pool* pool, unsigned c) { link_after(&g_heap.used[c], pool, c, "malloc"); }

// A pool that was full rejoins its ring at the back ([S2.9]).
[[maybe_unused]] void link_back(Pool* pool, unsigned c) { link_after(g_heap.used[c].prev, pool, c, "free"); }

[[maybe_unused]] void unlink(Pool* pool) {
    PoolLinks* next = pool->next;
    PoolLinks* prev = pool->prev;
    unsigned c = pool->class_index;
    if (c >= kClassCount || !ring_member(next, c) || !ring_member(prev, c) || next->prev != pool ||
        prev->next != pool) [[unlikely]]
        ring_corrupted(pool, pool->used == 0 ? "free" : "malloc");
    prev->next = next;
    next->prev = prev;
}

}  // namespace

// Constant-initialised: a malloc that runs before any constructor finds the rings ready.
constinit Heap g_heap = make_heap(&g_heap);

// [S2.11] Lazy carving. A pool's free list never holds more than the blocks freed into it
// plus one: when the list runs dry, one block is cut from the never-used tail at next_offset.
// A fresh pool costs no loop over its blocks, and its untouched pages stay untouched.
void pool_refill(Pool* pool) {
    // [lab S2.carve begin]
    if (pool->next_offset <= pool->max_next_offset) {
        Block* block =
            reinterpret_cast<Block*>(reinterpret_cast<uintptr_t>(pool) + pool->next_offset);
        block->next = nullptr;
        block->mark = freed_mark(block);   // on a free list now, so it carries the freed mark ([S2.28])
        pool->free = block;
        pool->next_offset += pool->block_size;
        return;
    }
    unlink(pool);  // used -> full: the last block just went out
    // [lab S2.carve end]
}

void* pool_refill_after(Pool* pool, void* block) {
    pool_refill(pool);
    return block;
}

void* pool_malloc_slow(unsigned c) {
    // [lab S2.usedpools begin]
    Pool* pool = arena_take_pool();
    if (!pool) return enomem();
    link_front(pool, c);
    // [S2.13] An empty pool that last served this same class keeps a valid header and
    // a free list holding all its carved blocks: use it as it is. Otherwise start it afresh:
    // block 0 becomes the only free block, and carving continues behind it.
    if (pool->next_offset == 0 || pool->class_index != c) {
        pool->class_index = c;
        pool->block_size = class_size(c);
        pool->max_next_offset = g_heap.pool_bytes - pool->block_size;
        Block* first =
            reinterpret_cast<Block*>(reinterpret_cast<uintptr_t>(pool) + g_heap.header_bytes);
        first->next = nullptr;
        first->mark = freed_mark(first);
        pool->free = first;
        pool->next_offset = g_heap.header_bytes + pool->block_size;
        // An empty pool's live bitmap is already all zero: every bit was cleared by a free.
    }
    Block* block = pool->free;
    uint32_t index = pool_pop_index(pool, block, "malloc");
    pool->used = 1;
    pool_bitmap(pool)[index >> 6] |= uint64_t{1} << (index & 63);
    if ((pool->free = block->next) == nullptr) pool_refill(pool);
    return block;
    // [lab S2.usedpools end]
}

void pool_free_slow(Pool* pool, bool was_full) {
    // [lab S2.pool_states begin]
    if (pool->used == 0) {  // used -> empty
        unlink(pool);
        arena_take_back_pool(pool);
        return;
    }
    if (was_full) link_back(pool, pool->class_index);  // full -> used, last in its ring
    // [lab S2.pool_states end]
}

void small_reject(const void* user, uintptr_t block, const char* call) {
    Pool* pool = pool_of(block);
    uint32_t offset = static_cast<uint32_t>(block - reinterpret_cast<uintptr_t>(pool));
    const char* what;
    char text[128];
    if (pool->next_offset == 0) {
        what = "not a block: inside an arena, in a pool never used";
    } else if (pool->class_index >= kClassCount) {
        what = "pool header corrupted (size class out of range): overflow from the pool below?";
    } else if (offset < g_heap.header_bytes) {
        what = "not a block: points into a pool header";
    } else {
        // An interior pointer is one whatever the pool's state: into an empty pool's block too.
        uint32_t size = class_size(pool->class_index);
        uint32_t start = g_heap.header_bytes + block_index(offset, pool->class_index) * size;
        if (start != offset) {
            LineWriter(text, sizeof text)
                .str("interior pointer: ")
                .dec(offset - start)
                .str(" bytes into a ")
                .dec(size)
                .str("-byte block");
            what = text;
        } else if (offset >= pool->next_offset) {
            what = "not a block: never handed out";
        } else if (pool->used == 0) {
            what = "double free: the block is already free (its pool has no block in use)";
        } else {
            what = "double free: the block is already free";
        }
    }
    die(kStageName, call, user, what);
}

void pool_pop_refused(const Pool* pool, const Block* block, const char* call) {
    uintptr_t at = reinterpret_cast<uintptr_t>(block), base = reinterpret_cast<uintptr_t>(pool);
    bool carved = at >= base + g_heap.header_bytes && at < base + pool->next_offset && at % kAlignment == 0;
    if (carved) die_lost_mark(kStageName, call, block);   // [S2.28]
    char text[160];
    LineWriter(text, sizeof text)
        .str("free list corrupted: the free ")
        .dec(pool->block_size)
        .str("-byte blocks of pool ")
        .ptr(pool)
        .str(" link to no free block of the pool (a write after free, or an overflow into a free block)");
    die(kStageName, call, block, text);
}

}  // namespace edu::stage2
