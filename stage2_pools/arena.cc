// stage2_pools/arena.cc: the arena table, the usable list sorted by free pools, mapping and
// unmapping arenas (os.h) and registering them in the radix tree (radix.h).
#include "stage2_pools/arena.h"

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include
#include <cstring>

#include "contract/diagnostics.h"
#include "stage2_pools/os.h"
#include "stage2_pools/radix.h"
#include "stage2_pools/raw.h"

namespace edu::stage2 {
namespace {

uint64_t g_table_bytes = 0;

Arena& at(uint32_t index) { return g_heap.arenas[index]; }

void usable_unlink(uint32_t index) {
    Arena& a = at(index);
    if (a.prev != kNoArena)
        at(a.prev).next = a.next;
    else
        g_heap.usable = a.next;
    if (a.next != kNoArena) at(a.next).prev = a.prev;
    a.next = a.prev = kNoArena;
}

// Links arena `index` right after `after` (kNoArena: at the head).
void usable_insert_after(uint32_t index, uint32_t after) {
    Arena& a = at(index);
    a.prev = after;
    a.next = after == kNoArena ? g_heap.usable : at(after).next;
    if (after == kNoArena)
        g_heap.usable = index;
    else
        at(after).next = index;
    if (a.next != kNoArena) at(a.next).prev = index;
}

// Doubles the arena table; the new slots join the unused list. Links are indices, so the
// copy needs no fixing (CPython's table holds pointers and must rebuild them).
bool grow_table() {
    uint32_t old_slots = g_heap.arena_slots;
    std::size_t bytes = old_slots ? 2 * g_table_bytes : kPage;
    Arena* table = static_cast<Arena*>(os_map(bytes));
    if (!table) return false;
    if (old_slots) {
        std::memcpy(table, g_heap.arenas, old_slots * sizeof(Arena));
        os_unmap(g_heap.arenas, g_table_bytes);
    }
    uint32_t slots = static_cast<uint32_t>(bytes / sizeof(Arena));
    for (uint32_t i = slots; i-- > old_slots;) {
        table[i] = Arena{};
        table[i].next = g_heap.unused;
        g_heap.unused = i;
    }
    g_heap.arenas = table;
    g_heap.arena_slots = slots;
    g_table_bytes = bytes;
    return true;
}

// Maps an arena into an unused slot; kNoArena when out of memory.
uint32_t new_arena() {
    // The freed mark's key ([S2.28]), drawn before the first arena: no block exists before it.
    if (g_heap.mark_key == 0) g_heap.mark_key = edu::draw_mark_key();
    if (g_heap.unused == kNoArena && !grow_table()) return kNoArena;
    void* memory = os_map_aligned(g_heap.arena_bytes, g_heap.arena_bytes,
                                  reinterpret_cast<void*>(g_heap.map_hint));
    if (!memory) return kNoArena;
    uintptr_t address = reinterpret_cast<uintptr_t>(memory);
    uint32_t index = g_heap.unused;
    if (!radix_set(address, index + 1)) {
        os_unmap(memory, g_heap.arena_bytes);
        return kNoArena;
    }
    g_heap.unused = at(index).next;
    at(index) =
        Arena{address, address, nullptr, kPoolsPerArena, kPoolsPerArena, kNoArena, kNoArena};
    g_heap.map_hint = address > g_heap.arena_bytes ? address - g_heap.arena_bytes : 0;
    Counters& c = g_heap.counters;
    ++c.arenas_allocated;
    if (++c.arenas_live > c.arenas_highwater) c.arenas_highwater = c.arenas_live;
    return index;
}

// [S2.33] An entirely free arena, already off the usable list, goes back to the OS. The kernel
// refuses the munmap at the map count's limit when the arena shares one mapping with its
// neighbours (arenas are mapped next to each other: [S2.8]), so it would be split in three.
// Forgetting it then would leave its bytes mapped and resident yet counted as unmapped, so
// os_unmap gives its pages back (they read zero, as a fresh arena's do, and errno is kept) and
// the arena stays as a fresh one, on the usable list just before the empty arena kept at its
// tail (the checker allows a fresh one there). False when it stays.
bool release_arena(uint32_t index) {
    Arena& a = at(index);
    if (!os_unmap(reinterpret_cast<void*>(a.address), g_heap.arena_bytes)) {
        uintptr_t address = a.address;
        a = Arena{address, address, nullptr, kPoolsPerArena, kPoolsPerArena, kNoArena, kNoArena};
        uint32_t kept = g_heap.last_with[kPoolsPerArena];
        if (kept != kNoArena) {   // just before the kept empty arena, which stays the tail
            usable_insert_after(index, at(kept).prev);
            return false;
        }
        uint32_t tail = g_heap.usable;
        while (tail != kNoArena && at(tail).next != kNoArena) tail = at(tail).next;
        usable_insert_after(index, tail);
        g_heap.last_with[kPoolsPerArena] = index;
        return false;
    }
    radix_set(a.address, 0);  // the nodes exist, so forgetting cannot fail
    g_heap.map_hint = a.address;  // the next arena may well fit where this one was
    a = Arena{};
    a.next = g_heap.unused;
    g_heap.unused = index;
    ++g_heap.counters.arenas_freed;
    --g_heap.counters.arenas_live;
    return true;
}

// [S2.35] No arena to be had: a pool from stage 1's heap, whose room large blocks may have
// freed, instead of a block of stage 1's for each small request (a block header of stage 1's
// and a raw-table entry of 24 bytes each). One aligned block and one raw-table entry a pool (the
// block kStage1PoolTail short of the pool, [S2.36]: pool_malloc_cold keeps the blocks clear of
// it); its header zeroed, so pool_malloc_slow starts it afresh and its live bitmap is clear.
//
// [S2.37] A refusal is remembered: stage 1 without room for a pool (holes of 4,000 bytes hold no
// aligned 4 KiB) gains some only when a block goes back to it (raw_release forgets the refusal)
// or when its break can move again (the program gave memory back on its own: raw blocks use that
// room until the next release). Without this, each small malloc with its ring empty would search
// stage 1's free blocks for a pool in vain before asking for a block of its own (what that costs
// a fill of holes under a data limit: the chapter's [S2.37]).
Pool* pool_from_stage1() {
    if (g_heap.stage1_pool_refused) return nullptr;
    void* block = raw_alloc(g_heap.pool_bytes - kStage1PoolTail, g_heap.pool_bytes);
    if (!block) {
        g_heap.stage1_pool_refused = true;
        return nullptr;
    }
    auto address = reinterpret_cast<uintptr_t>(block);
    if (!raw_track(address, address | kPoolEntry, g_heap.pool_bytes)) {
        raw_release(block);
        return nullptr;
    }
    std::memset(block, 0, g_heap.header_bytes);
    Pool* pool = static_cast<Pool*>(block);
    pool->arena_index = kNoArena;
    ++g_heap.stage1_pools;
    return pool;
}

// [S2.35] Its last block freed, a pool of stage 1's goes back to stage 1: it has no arena whose
// empty pools it could join, and stage 1 can give its room to any request.
void pool_back_to_stage1(Pool* pool) {
    raw_untrack(raw_find(reinterpret_cast<uintptr_t>(pool)));
    --g_heap.stage1_pools;
    raw_release(pool);
}

}  // namespace

Pool* stage1_pool_of(uintptr_t address) {
    uintptr_t pool = address & g_heap.pool_mask;
    RawEntry* entry = raw_find(pool);
    return entry && raw_is_pool(*entry) ? reinterpret_cast<Pool*>(pool) : nullptr;
}

// [S2.12] Pools come from the head of the usable list: the arena with the fewest free
// pools. Allocation piles into nearly full arenas, so the nearly empty ones at the tail can
// drain and go back to the OS. The head holds the smallest count n; after taking a pool it is
// the only arena with n - 1, so the order holds without moving anything.
Pool* arena_take_pool() {
    if (g_heap.usable == kNoArena) {
        uint32_t fresh = new_arena();
        if (fresh == kNoArena) return pool_from_stage1();   // [S2.35]
        usable_insert_after(fresh, kNoArena);
        g_heap.last_with[kPoolsPerArena] = fresh;
    }
    uint32_t index = g_heap.usable;
    Arena& a = at(index);
    Pool* pool;
    if (a.free_pools) {
        pool = a.free_pools;
        // [S2.30] The link sits in the pool's header, in reach of an overflow from the pool
        // below: the next empty pool must be one of this arena's pools handed out before.
        auto next = reinterpret_cast<uintptr_t>(pool->next);
        if (next != 0 && (next - a.address >= a.fresh - a.address || (next & ~g_heap.pool_mask) != 0))
            [[unlikely]] die(kStageName, "malloc", pool,
                             "empty-pool list corrupted: an empty pool's link leads out of its arena "
                             "(an overflow from the last block of the pool below into its header?)");
        a.free_pools = static_cast<Pool*>(pool->next);
    } else {
        pool = reinterpret_cast<Pool*>(a.fresh);  // zero-filled by mmap: next_offset == 0
        a.fresh += g_heap.pool_bytes;
        pool->arena_index = index;
    }
    if (g_heap.last_with[a.nfree] == index) g_heap.last_with[a.nfree] = kNoArena;
    if (--a.nfree == 0)
        usable_unlink(index);  // full arenas leave the list
    else
        g_heap.last_with[a.nfree] = index;
    return pool;
}

// [S2.16] A pool came back: its arena has n = nfree + 1 free pools now and moves
// right, behind every arena with n - 1 or n free pools. `last_with[n]` names the last arena
// with n free pools, so the move is O(1) however many arenas there are (CPython: nfp2lasta,
// since 3.8, bpo-37029: walking the list to re-sort it was quadratic with many arenas).
void arena_take_back_pool(Pool* pool) {
    if (pool->arena_index == kNoArena) return pool_back_to_stage1(pool);   // [S2.35]
    // [lab S2.arena_return begin]
    uint32_t index = pool->arena_index;
    Arena& a = at(index);
    pool->next = a.free_pools;
    a.free_pools = pool;
    uint32_t n = ++a.nfree;
    if (n == 1) {  // was full, so not listed: it joins at the head, among the fullest
        usable_insert_after(index, kNoArena);
        if (g_heap.last_with[1] == kNoArena) g_heap.last_with[1] = index;
        return;
    }
    uint32_t old_last = g_heap.last_with[n - 1];
    if (old_last == index)
        g_heap.last_with[n - 1] =
            (a.prev != kNoArena && at(a.prev).nfree == n - 1) ? a.prev : kNoArena;
    // [S2.17] Entirely free: unmap it, unless it is the tail of the list. An arena
    // behind it has at least as many free pools to absorb the next burst; with none behind
    // it, this is the arena a program that allocates and frees in a loop would map again
    // (CPython keeps it too, since 3.9, bpo-37257).
    if (n == a.ntotal && a.next != kNoArena) {
        usable_unlink(index);
        release_arena(index);
        return;
    }
    uint32_t after = g_heap.last_with[n] != kNoArena ? g_heap.last_with[n] : old_last;
    if (after != index) {
        usable_unlink(index);
        usable_insert_after(index, after);
    }
    g_heap.last_with[n] = index;
    // [lab S2.arena_return end]
}

bool arena_set_geometry(const Geometry& geometry) {
    if (g_heap.geometry == &geometry) return true;
    if (g_heap.stage1_pools) return false;   // [S2.35]: each is in use
    // Every mapped arena must be listed and entirely free: no pool in use anywhere.
    uint64_t listed = 0;
    for (uint32_t i = g_heap.usable; i != kNoArena; i = at(i).next, ++listed)
        if (at(i).nfree != at(i).ntotal) return false;
    if (listed != g_heap.counters.arenas_live) return false;
    while (g_heap.usable != kNoArena) {
        uint32_t index = g_heap.usable;
        usable_unlink(index);
        if (g_heap.last_with[kPoolsPerArena] == index) g_heap.last_with[kPoolsPerArena] = kNoArena;
        if (!release_arena(index)) return false;  // [S2.33]: it stays, on the list
    }
    for (uint32_t& last : g_heap.last_with) last = kNoArena;
    g_heap.map_hint = 0;
    apply_geometry(g_heap, geometry);
    return true;
}

uint64_t arena_table_bytes() { return g_table_bytes; }

}  // namespace edu::stage2
