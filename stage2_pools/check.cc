// stage2_pools/check.cc: check_heap verifies arenas, pools, rings, the usable list and the
// counters, then asks stage 1; walk_heap reports arenas (depth 0), pools (1), blocks (2).
#include "stage2_pools/check.h"

#include <algorithm>

#include "contract/diagnostics.h"
#include "stage2_pools/arena.h"
#include "stage2_pools/debug.h"
#include "stage2_pools/pool.h"
#include "stage2_pools/radix.h"
#include "stage2_pools/raw.h"

namespace edu::stage2 {
namespace {

// Collects the first violation; later ones are ignored.
struct Checker {
    CheckResult result;
    uint64_t quarantined = 0;
    uint64_t used_pools = 0;  // pools found in state "used" by the arena scan

    bool fail(const char* what, uintptr_t where = 0, uint64_t a = 0, uint64_t b = 0) {
        return violation(&result, what, where, a, b);
    }
};

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The blocks of one pool in use: free list, bitmap, counts, and (debug mode) fences.
bool check_used_pool(Checker& k, Pool* pool, uint32_t index) {
    uintptr_t base = addr(pool);
    if (pool->arena_index != index)
        return k.fail("pool names the wrong arena", base, pool->arena_index, index);
    unsigned c = pool->class_index;
    if (c >= kClassCount) return k.fail("pool size class out of range", base, c, kClassCount);
    uint32_t size = class_size(c);
    if (pool->block_size != size)
        return k.fail("pool block size differs from its class", base, pool->block_size, size);
    uint32_t tail = index == kNoArena ? kStage1PoolTail : 0;   // [S2.36]
    if (pool->max_next_offset != g_heap.pool_bytes - tail - size)
        return k.fail("pool max_next_offset is not pool bytes - block size (- kStage1PoolTail)", base);
    if (pool->next_offset < g_heap.header_bytes + size || pool->next_offset > pool->max_next_offset + size ||
        (pool->next_offset - g_heap.header_bytes) % size)
        return k.fail("pool next_offset off the block grid", base, pool->next_offset, size);
    uint32_t capacity = pool_capacity(pool);
    uint32_t carved = (pool->next_offset - g_heap.header_bytes) / size;
    uint64_t free_count = 0;
    for (Block* b = pool->free; b; b = b->next) {
        uintptr_t at = addr(b);
        if (++free_count > carved)
            return k.fail("pool free list longer than its carved blocks (a cycle?)", base);
        if (at < base + g_heap.header_bytes || at >= base + pool->next_offset ||
            (at - base - g_heap.header_bytes) % size)
            return k.fail("free-list entry is not a carved block of its pool", at);
        if (block_live(pool, block_index(pool, at)))
            return k.fail("free-list block marked live in the bitmap", at);
        if (b->mark != freed_mark(b)) return k.fail("free-list block lost its freed mark", at);
    }
    uint64_t bits = 0;
    for (uint32_t w = 0; w < g_heap.bitmap_words; ++w)
        bits += __builtin_popcountll(pool_bitmap(pool)[w]);
    if (bits != pool->used)
        return k.fail("live bitmap count differs from pool used", base, bits, pool->used);
    uint32_t uncarved = (pool->max_next_offset + size - pool->next_offset) / size;
    if (pool->used + free_count + uncarved != capacity)
        return k.fail("pool: used + free list + uncarved != blocks per pool", base,
                      pool->used + free_count + uncarved, capacity);
    if (pool->free) ++k.used_pools;  // "used"; a full pool has no free block
    for (uint32_t i = 0; i < carved; ++i) {
        if (!block_live(pool, i)) continue;
        uintptr_t block = base + g_heap.header_bytes + uint64_t{i} * size;
        if (!g_heap.debug) {
            ++k.result.live_blocks;
            k.result.live_bytes += size;
            continue;
        }
        bool quarantined;
        char why[160];
        if (!debug_inspect(block, block + kFrontBytes, block + size, &quarantined, why, sizeof why))
            return k.fail(why);
        if (quarantined) {
            ++k.quarantined;
        } else {
            ++k.result.live_blocks;
            k.result.live_bytes += load_word(block);
        }
    }
    k.result.free_blocks += free_count + uncarved;
    return true;
}

bool check_arena(Checker& k, uint32_t index) {
    const Arena& a = g_heap.arenas[index];
    uintptr_t end = a.address + g_heap.arena_bytes;
    if (a.address & (g_heap.arena_bytes - 1))
        return k.fail("arena not aligned to its size", a.address);
    if (radix_lookup(a.address) != index + 1 || radix_lookup(end - 1) != index + 1)
        return k.fail("radix tree does not map the arena to its slot", a.address);
    if (a.ntotal != kPoolsPerArena)
        return k.fail("arena pool count wrong", a.address, a.ntotal, kPoolsPerArena);
    if (a.fresh < a.address || a.fresh > end || (a.fresh - a.address) % g_heap.pool_bytes)
        return k.fail("arena fresh-pool pointer off the pool grid", a.address);
    uint64_t empties = 0;
    for (Pool* p = a.free_pools; p; p = static_cast<Pool*>(p->next)) {
        if (++empties > kPoolsPerArena)
            return k.fail("arena empty-pool list too long (a cycle?)", a.address);
        if (addr(p) < a.address || addr(p) >= a.fresh || addr(p) & (g_heap.pool_bytes - 1))
            return k.fail("empty-pool list entry outside the arena's used pools", addr(p));
        if (p->used != 0)
            return k.fail("pool on an empty-pool list has used blocks", addr(p), p->used, 0);
    }
    uint64_t never_used = (end - a.fresh) / g_heap.pool_bytes;
    if (a.nfree != empties + never_used)
        return k.fail("arena nfree != empty pools + never-used pools", a.address, a.nfree,
                      empties + never_used);
    uint64_t empty_seen = 0;
    for (uintptr_t p = a.address; p < a.fresh; p += g_heap.pool_bytes) {
        Pool* pool = reinterpret_cast<Pool*>(p);
        if (pool->used == 0) {
            ++empty_seen;
            for (uint32_t w = 0; w < g_heap.bitmap_words; ++w)
                if (pool_bitmap(pool)[w]) return k.fail("empty pool has live bits", p);
            continue;
        }
        if (!check_used_pool(k, pool, index)) return false;
    }
    if (empty_seen != empties)
        return k.fail("empty pools differ from the empty-pool list", a.address, empty_seen,
                      empties);
    return true;
}

// [S2.23] The ring of every class holds exactly the pools in state "used"; the
// usable list holds exactly the arenas with a free pool, in non-decreasing order of free
// pools, `last_with[n]` names the last arena with n free pools, and at most one entirely free
// arena is kept, at the tail (before it, only arenas whose munmap was refused, fresh: [S2.33]).
bool check_lists(Checker& k, uint64_t live_arenas, uint64_t arenas_with_free) {
    uint64_t ringed = 0;
    uint64_t bound = live_arenas * kPoolsPerArena + g_heap.stage1_pools + 1;
    for (unsigned c = 0; c < kClassCount; ++c) {
        PoolLinks* head = &g_heap.used[c];
        for (PoolLinks* l = head->next; l != head; l = l->next) {
            Pool* pool = static_cast<Pool*>(l);
            if (++ringed > bound) return k.fail("usedpools ring does not close (a cycle?)");
            if (l->next->prev != l)
                return k.fail("usedpools ring: next->prev is not the pool", addr(l));
            uint32_t arena = radix_lookup(addr(pool));
            bool ours = pool_of(addr(pool)) == pool &&
                        (arena ? arena - 1 == pool->arena_index
                               : stage1_pool_of(addr(pool)) == pool && pool->arena_index == kNoArena);
            if (!ours)
                return k.fail("usedpools ring holds something that is not a pool of ours",
                              addr(pool));
            if (pool->class_index != c)
                return k.fail("pool in the ring of another class", addr(pool), pool->class_index,
                              c);
            if (pool->used == 0 || !pool->free)
                return k.fail("pool in a usedpools ring is not in state used", addr(pool));
        }
    }
    if (ringed != k.used_pools)
        return k.fail("pools in usedpools rings != pools in state used", 0, ringed, k.used_pools);

    uint64_t listed = 0, entirely_free = 0;
    uint32_t prev = kNoArena;
    for (uint32_t i = g_heap.usable; i != kNoArena; prev = i, i = g_heap.arenas[i].next) {
        const Arena& a = g_heap.arenas[i];
        if (++listed > live_arenas) return k.fail("usable arena list too long (a cycle?)");
        if (!a.address) return k.fail("usable arena list holds an unused slot", 0, i, 0);
        if (a.prev != prev) return k.fail("usable arena list: prev link wrong", a.address);
        if (a.nfree == 0) return k.fail("full arena on the usable list", a.address);
        if (prev != kNoArena && g_heap.arenas[prev].nfree > a.nfree)
            return k.fail("usable arenas not sorted by free pools (fullest first)", a.address,
                          g_heap.arenas[prev].nfree, a.nfree);
        bool last = a.next == kNoArena || g_heap.arenas[a.next].nfree != a.nfree;
        if ((g_heap.last_with[a.nfree] == i) != last) {
            // The line names n and which way it is wrong: two bare numbers would name neither.
            char text[120];
            LineWriter(text, sizeof text)
                .str("last_with[")
                .dec(a.nfree)
                .str(last ? "] does not name the last arena with that many free pools"
                          : "] names an arena that another with as many free pools follows");
            return k.fail(text, a.address);
        }
        // Before the tail, only an arena whose munmap was refused, fresh again ([S2.33]).
        if (a.nfree == a.ntotal && ++entirely_free && a.next != kNoArena && a.fresh != a.address)
            return k.fail("an entirely free arena kept before the tail", a.address);
    }
    if (listed != arenas_with_free)
        return k.fail("usable list != arenas with a free pool", 0, listed, arenas_with_free);
    for (uint32_t n = 1; n <= kPoolsPerArena; ++n) {
        uint32_t i = g_heap.last_with[n];
        if (i != kNoArena &&
            (i >= g_heap.arena_slots || g_heap.arenas[i].nfree != n || !g_heap.arenas[i].address))
            return k.fail("last_with[n] names an arena without n free pools", 0, n, 0);
    }
    return true;
}

// [S2.35] The pools of stage 1's, found through their raw-table entries: each pool-aligned, in
// no arena, naming no arena, in use (an empty one goes back to stage 1), its blocks checked as
// an arena pool's are; as many as g_heap.stage1_pools says. Before check_lists, which counts
// the pools in state "used" of both kinds.
bool check_stage1_pools(Checker& k) {
    uint64_t pools = 0;
    for (uint64_t i = 0; i < raw_capacity(); ++i) {
        const RawEntry& e = *raw_slot(i);
        if (!e.user || !raw_is_pool(e)) continue;
        ++pools;
        if ((e.user & ~g_heap.pool_mask) || e.block != (e.user | kPoolEntry) || e.usable != g_heap.pool_bytes)
            return k.fail("raw table entry of a pool of stage 1's is not a pool's", e.user);
        if (radix_lookup(e.user)) return k.fail("pool of stage 1's inside an arena", e.user);
        Pool* pool = reinterpret_cast<Pool*>(e.user);
        if (pool->arena_index != kNoArena)
            return k.fail("pool of stage 1's names an arena", e.user, pool->arena_index, kNoArena);
        if (pool->used == 0) return k.fail("pool of stage 1's is empty, not given back", e.user);
        if (!check_used_pool(k, pool, kNoArena)) return false;
    }
    if (pools != g_heap.stage1_pools)
        return k.fail("pools of stage 1's found != pools counted", 0, pools, g_heap.stage1_pools);
    return true;
}

bool check_raw(Checker& k) {
    uint64_t count = 0;
    for (uint64_t i = 0; i < raw_capacity(); ++i) {
        const RawEntry& e = *raw_slot(i);
        if (!e.user) continue;
        ++count;
        if (raw_find(e.user) != &e)
            return k.fail("raw table entry unreachable from its hash", e.user);
        if (raw_is_pool(e)) continue;   // its blocks: check_stage1_pools
        uintptr_t block = e.block & ~kQuarantined;
        if (radix_lookup(block)) return k.fail("raw block inside an arena", block);
        if (g_heap.debug) {
            bool quarantined;
            char why[160];
            uintptr_t end = block + raw_block_usable(reinterpret_cast<void*>(block));
            if (!debug_inspect(block, e.user, end, &quarantined, why, sizeof why))
                return k.fail(why);
            if (quarantined != static_cast<bool>(e.block & kQuarantined))
                return k.fail("raw block quarantine flag differs from its fences", e.user);
            if (quarantined) {
                ++k.quarantined;
                continue;
            }
        }
        ++k.result.live_blocks;
        k.result.live_bytes += e.usable;
    }
    if (count != raw_count()) return k.fail("raw table count wrong", 0, count, raw_count());
    CheckResult below = raw_check();
    if (!below.ok) {
        k.result.ok = false;
        LineWriter(k.result.message, sizeof k.result.message)
            .str("raw domain (stage 1): ")
            .str(below.message);
        return false;
    }
    k.result.free_blocks += below.free_blocks;
    return true;
}

}  // namespace

CheckResult check_heap() {
    Checker k;
    uint64_t live_arenas = 0, arenas_with_free = 0, unused = 0;
    for (uint32_t i = 0; i < g_heap.arena_slots; ++i) {
        const Arena& a = g_heap.arenas[i];
        if (!a.address) continue;
        ++live_arenas;
        if (a.nfree) ++arenas_with_free;
        if (!check_arena(k, i)) return k.result;
    }
    for (uint32_t i = g_heap.unused; i != kNoArena; i = g_heap.arenas[i].next)
        if (++unused > g_heap.arena_slots || g_heap.arenas[i].address) {
            k.fail("unused arena slot list broken", 0, i, 0);
            return k.result;
        }
    if (unused + live_arenas != g_heap.arena_slots)
        k.fail("arena slots lost", 0, unused + live_arenas, g_heap.arena_slots);
    if (live_arenas != g_heap.counters.arenas_live)
        k.fail("arena count differs from arenas_live", 0, live_arenas, g_heap.counters.arenas_live);
    if (!k.result.ok || !check_stage1_pools(k) || !check_lists(k, live_arenas, arenas_with_free) || !check_raw(k))
        return k.result;
    const Counters& c = g_heap.counters;
    bool counted = g_heap.counting;  // counting off, the live counters are stale ([S2.27])
    if (counted && k.result.live_blocks != c.live_blocks)
        k.fail("live blocks found != blocks counted live", 0, k.result.live_blocks, c.live_blocks);
    else if (counted && k.result.live_bytes != c.live_bytes)
        k.fail("live bytes found != bytes counted live", 0, k.result.live_bytes, c.live_bytes);
    else if (k.quarantined != debug_quarantined())
        k.fail("quarantined blocks found != quarantine ring", 0, k.quarantined,
               debug_quarantined());
    return k.result;
}

namespace {

// The header and blocks of a pool in use, at `depth`: header as meta, then each block used,
// free or unused (not carved yet); in debug mode as the program sees it. False if `visit` said stop.
bool walk_pool(Pool* pool, unsigned depth, WalkFn visit, void* context) {
    if (!visit(WalkEntry{"pool header", WalkState::meta, pool, g_heap.header_bytes, depth}, context))
        return false;
    uint32_t size = pool->block_size;
    if (pool->class_index >= kClassCount || size != class_size(pool->class_index))
        return true;   // a damaged header (check_heap names it): its blocks cannot be placed
    uint32_t capacity = std::min(pool_capacity(pool), blocks_per_pool(pool->class_index));  // a damaged end too
    uint32_t carved = (pool->next_offset - g_heap.header_bytes) / size;
    for (uint32_t k = 0; k < capacity; ++k) {
        uintptr_t block = addr(pool) + g_heap.header_bytes + uint64_t{k} * size;
        WalkEntry e{"block", WalkState::unused, reinterpret_cast<void*>(block), size, depth};
        if (k < carved) e.state = block_live(pool, k) ? WalkState::used : WalkState::free;
        if (g_heap.debug && e.state == WalkState::used) {
            uintptr_t user = block + kFrontBytes;
            if (load_word(user - 8) != kForbiddenWord)
                e.state = WalkState::free;  // quarantined: freed, not yet reusable
            e.address = reinterpret_cast<void*>(user);
            e.size = load_word(block);
        }
        if (!visit(e, context)) return false;
    }
    return true;
}

// Debug mode: stage 1's used blocks are wrappers (fences around the program's bytes), so they
// pass as meta, and the raw table supplies the blocks the program sees, one level deeper. In
// either mode, the raw table when it is a block of stage 1's is meta too, and so is a pool of
// stage 1's ([S2.35]), its header and blocks one level deeper.
struct Forward {
    WalkFn visit;
    void* context;
    bool stopped;
};

// A used block of stage 1's is part of the raw table when it had to live there ([S2.34]): meta.
bool forward_wrapper(const WalkEntry& entry, void* context) {
    auto* f = static_cast<Forward*>(context);
    WalkEntry e = entry;
    Pool* pool = e.state == WalkState::used ? stage1_pool_of(addr(e.address)) : nullptr;
    if (pool && addr(pool) == addr(e.address)) {
        e.kind = "pool";
        e.state = WalkState::meta;
        f->stopped = !f->visit(e, f->context) || !walk_pool(pool, e.depth + 1, f->visit, f->context);
        return !f->stopped;
    }
    if (e.state == WalkState::used && raw_table_holds(e.address)) {
        e.kind = "raw table";
        e.state = WalkState::meta;
    } else if (e.state == WalkState::used && g_heap.debug) {
        e.kind = "debug wrapper";
        e.state = WalkState::meta;
    }
    f->stopped = !f->visit(e, f->context);
    return !f->stopped;
}

void walk_raw(WalkFn visit, void* context) {
    if (!g_heap.debug && !raw_table_blocks_in_stage1() && !g_heap.stage1_pools) {
        raw_walk(visit, context);
        return;
    }
    Forward f{visit, context, false};
    raw_walk(&forward_wrapper, &f);
    if (f.stopped || !g_heap.debug) return;
    for (uint64_t i = 0; i < raw_capacity(); ++i) {
        const RawEntry& r = *raw_slot(i);
        if (!r.user || raw_is_pool(r)) continue;
        WalkState state = (r.block & kQuarantined) ? WalkState::free : WalkState::used;
        WalkEntry e{"block", state, reinterpret_cast<void*>(r.user), r.usable, 1};
        if (!visit(e, context)) return;
    }
}

}  // namespace

// [S2.24] The walk: each arena (depth 0, meta), its 64 pools (depth 1: meta = in use,
// free = empty, unused = never used), and the blocks of each pool in use (depth 2: the
// header as meta, then used / free / unused = not carved yet). Only blocks are ever "used".
// Then stage 1's regions and blocks, as it reports them, a pool of stage 1's among them as a
// "pool" (meta) with its header and blocks one level deeper ([S2.35]). In debug mode a block is
// shown as the program sees it, user pointer and n bytes; a stage-1 block that wraps one becomes meta.
void walk_heap(WalkFn visit, void* context) {
    for (uint32_t i = 0; i < g_heap.arena_slots; ++i) {
        const Arena& a = g_heap.arenas[i];
        if (!a.address) continue;
        if (!visit(WalkEntry{"arena", WalkState::meta, reinterpret_cast<void*>(a.address),
                             g_heap.arena_bytes, 0},
                   context))
            return;
        for (uintptr_t p = a.address; p < a.address + g_heap.arena_bytes; p += g_heap.pool_bytes) {
            Pool* pool = reinterpret_cast<Pool*>(p);
            WalkState state = p >= a.fresh ? WalkState::unused
                              : pool->used ? WalkState::meta
                                           : WalkState::free;
            if (!visit(WalkEntry{"pool", state, pool, g_heap.pool_bytes, 1}, context)) return;
            if (state == WalkState::meta && !walk_pool(pool, 2, visit, context)) return;
        }
    }
    walk_raw(visit, context);
}

}  // namespace edu::stage2
