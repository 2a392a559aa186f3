// stage2_pools/types.h: the layout of stage 2's heap: size classes, geometry, pool and arena
// headers, and the one `Heap` record every file shares. Diagrams and tunables live here.
// No code beyond one-line helpers: pool.h allocates, arena.h maps, check.cc verifies.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu::stage2 {

inline constexpr const char* kStageName = "stage2_pools";   // in every diagnostic

// [S2.1] The layers. Stage 2 only serves small requests itself; everything else falls
// through to the layer below, the way CPython's object allocator falls through to its raw
// malloc. Here the layer below is stage 1's brk heap.
//
//    request of n bytes
//         |
//         +-- n <= 512 --> size class (n-1)/16 --> a pool of that class --> a block
//         |                                      (pools live in arenas, mmap'd)
//         +-- n  > 512, or an alignment a class cannot give --> the raw domain: stage 1
//
// `free(p)` asks the radix tree (radix.h) whether p lies in one of our arenas; if not, the
// raw table (raw.h) must know p as a live stage-1 block, or p is foreign and we abort.

// [S2.2] Size classes. Every 16 bytes up to 512: 32 classes, at most 15 bytes of waste a block.
//
//    request bytes   class   block size        request bytes   class   block size
//        0 .. 16       0        16               257 .. 272     16        272
//       17 .. 32       1        32                    ...      ...        ...
//       33 .. 48       2        48               497 .. 512     31        512
//
// Invariants: kSmallMax % kAlignment == 0; every block size is a multiple of kAlignment, so
// with a pool header that is a multiple of kHeaderAlign every block is 16-byte aligned.
inline constexpr std::size_t kAlignment = 16;   // bytes; payload alignment of every block
inline constexpr std::size_t kSmallMax = 512;   // bytes; largest request a pool serves
inline constexpr unsigned kClassCount = kSmallMax / kAlignment;  // 32
static_assert(kSmallMax % kAlignment == 0);

// Class of a request of n bytes, n <= kSmallMax (0 shares class 0 with 1..16).
constexpr unsigned class_of(std::size_t n) { return n ? static_cast<unsigned>((n - 1) >> 4) : 0; }
constexpr uint32_t class_size(unsigned c) { return (c + 1) * static_cast<uint32_t>(kAlignment); }

// Tricky: `block index = offset / block size` runs on every malloc and free, and a hardware
// divide costs tens of cycles. For offsets below 2^16 and divisors of at most 512,
// (offset * (floor(2^32 / size) + 1)) >> 32 is exactly offset / size: the error term
// offset / 2^32 stays below 2^-16, smaller than the 1/size gap between quotients.
struct Reciprocals {
    uint64_t of[kClassCount];
};
constexpr Reciprocals make_reciprocals() {
    Reciprocals r{};
    for (unsigned c = 0; c < kClassCount; ++c) r.of[c] = (uint64_t{1} << 32) / class_size(c) + 1;
    return r;
}
inline constexpr Reciprocals kReciprocal = make_reciprocals();

// [S2.3] Geometry: how big a pool and an arena are. Two are offered (option "geometry"):
//
//    classic   4 KiB pools in 256 KiB arenas   (pymalloc as designed: a pool is a page)
//    modern   16 KiB pools in   1 MiB arenas   (CPython 3.10+ on 64-bit machines)
//
// Both give 64 pools per arena. Inequalities every geometry must keep:
//    pool bytes - header bytes >= 2 * kSmallMax   (a pool holds two blocks of any class, so
//                                                 no single free takes a pool from full to empty:
//                                                 pool_free_slow relies on it)
//    pool bytes <= 2^kMaxPoolShift                (offsets fit the reciprocal trick, bitmap fits)
//    arena bytes is a power of two                (arenas are mapped aligned to their size, so
//                                                 `address >> arena_shift` names an arena)
struct Geometry {
    const char* name;        // option value
    unsigned pool_shift;     // log2(pool bytes)
    unsigned arena_shift;    // log2(arena bytes)
};
inline constexpr Geometry kClassic{"classic", 12, 18};
inline constexpr Geometry kModern{"modern", 14, 20};
inline constexpr unsigned kMaxPoolShift = 14;
inline constexpr unsigned kMinArenaShift = 18;
inline constexpr unsigned kPoolsPerArena = 64;
static_assert(kClassic.arena_shift - kClassic.pool_shift == 6);
static_assert(kModern.arena_shift - kModern.pool_shift == 6);

// [S2.4] A pool: one header, then blocks of one size class, carved lazily from the front.
//
//    pool (aligned to pool bytes)
//    +--------------------+--------------+---------+---------+---------+-- ... --+------+
//    | Pool header        | live bitmap  | block 0 | block 1 | block 2 |         | tail |
//    | next prev free ... | 1 bit/block  |  used   |  free   |  never  |         | < sz |
//    +--------------------+--------------+---------+---------+---------+-- ... --+------+
//    0                    48             header    |         ^
//                                        bytes     |         next_offset: first never-used
//                                                  free list (first word of a free block,
//                                                  its freed mark in the second, [S2.28])
//
// Invariant (checked by check.cc), per pool in use:
//    used + |free list| + (pool bytes - next_offset) / block size == blocks per pool
//    popcount(live bitmap) == used
// `max_next_offset` = pool bytes - block size: the largest offset at which a block still fits
// (kStage1PoolTail less in a pool of stage 1's, [S2.36]).
struct Block {
    Block* next;               // free-list link, kept in the first word of a free block
    uint64_t mark;             // freed_mark(this) while on a free list ([S2.28])
};

// The two links of a pool header. `Heap::used` holds only this much per class.
struct PoolLinks {
    PoolLinks* next;           // next pool in the list (usedpools[class] or an arena's empties)
    PoolLinks* prev;           // previous pool in usedpools[class]; unused for empty pools
};

struct Pool : PoolLinks {
    Block* free;               // free-list head; nullptr iff the pool is full (or never used)
    uint32_t used;             // blocks handed out and not freed
    uint32_t class_index;      // size class served
    uint32_t block_size;       // bytes, class_size(class_index)
    uint32_t arena_index;      // slot of the owning arena in Heap::arenas; kNoArena: stage 1's ([S2.35])
    uint32_t next_offset;      // bytes from the pool start to the first never-carved block
    uint32_t max_next_offset;  // bytes; next_offset <= max_next_offset means one more fits
};
static_assert(sizeof(Pool) == 48);

// The live bitmap follows the fixed header: bit k is set iff block k is handed out (or, in
// debug mode, waiting in quarantine). It makes a double free cost one bit test.
inline uint64_t* pool_bitmap(Pool* pool) { return reinterpret_cast<uint64_t*>(pool + 1); }

// Header bytes are rounded up to kHeaderAlign, so blocks of a class whose size is a multiple of
// 32 or 64 are 32- or 64-byte aligned: aligned_alloc(64, 100) gets a block of the 128-byte class.
inline constexpr uint32_t kHeaderAlign = 64;   // bytes; a power of two, >= kAlignment
static_assert(kHeaderAlign % kAlignment == 0);

// Header bytes of a pool under `geometry`: the fixed header, a bitmap with one bit per block
// of the smallest class, rounded up to kHeaderAlign.
constexpr uint32_t bitmap_words_of(const Geometry& geometry) {
    return ((uint32_t{1} << geometry.pool_shift) / static_cast<uint32_t>(kAlignment) + 63) / 64;
}
constexpr uint32_t header_bytes_of(const Geometry& geometry) {
    uint32_t raw = static_cast<uint32_t>(sizeof(Pool)) + bitmap_words_of(geometry) * 8;
    return (raw + kHeaderAlign - 1) & ~(kHeaderAlign - 1);
}

// The inequalities of [S2.3], for every geometry offered: a change that breaks one fails here.
constexpr bool keeps_the_inequalities(const Geometry& g) {
    return (uint32_t{1} << g.pool_shift) - header_bytes_of(g) >= 2 * kSmallMax &&
           g.pool_shift <= kMaxPoolShift && g.arena_shift >= kMinArenaShift;
}
static_assert(keeps_the_inequalities(kClassic),
              "[S2.3] classic geometry: pool bytes - header bytes >= 2 * kSmallMax fails (pool_free_slow "
              "relies on it: a full pool never becomes empty in one free)");
static_assert(keeps_the_inequalities(kModern),
              "[S2.3] modern geometry: pool bytes - header bytes >= 2 * kSmallMax fails");

// [S2.5] An arena: 64 pools in one mapping aligned to its size. The arena's record lives
// outside it, in the table Heap::arenas, so an empty arena can be unmapped whole.
//
//    arena (aligned to arena bytes)
//    +--------+--------+--------+--------+-------------------- ... --------+
//    | pool 0 | pool 1 | pool 2 | pool 3 |   never used: fresh .. end      |
//    | used   | full   | empty  | used   |                                 |
//    +--------+--------+--------+--------+-------------------- ... --------+
//                         ^                ^
//            free_pools --+                fresh (next pool to hand out for the first time)
//
// Invariant: nfree == |free_pools| + (address + arena bytes - fresh) / pool bytes.
inline constexpr uint32_t kNoArena = UINT32_MAX;   // "none" in the index links below

struct Arena {
    uintptr_t address;         // start of the mapping; 0 marks an unused table slot
    uintptr_t fresh;           // first pool never handed out; address + arena bytes when none
    Pool* free_pools;          // empty pools, linked through PoolLinks::next
    uint32_t nfree;            // empty pools + never-used pools
    uint32_t ntotal;           // pools in the arena (kPoolsPerArena)
    uint32_t next;             // usable list (or unused-slot list): table index, or kNoArena
    uint32_t prev;             // usable list: table index, or kNoArena
};

// [S2.35] A pool of stage 1's. When no arena can be mapped (an address-space or data limit used
// up, or the map count), a pool is carved from stage 1's heap instead: one block of stage 1's,
// pool bytes long and aligned to them, so `address & pool_mask` still names its pool. It is a
// pool like any other (the same pool.h functions carve, link and free it) but with arena_index
// == kNoArena and no arena around it: the radix tree does not know it; the raw table does, by an
// entry keyed by the pool's address with kPoolEntry set in its `block` (raw.h). A free the radix
// tree misses and the raw table misses too probes the table once more, at the block's pool
// address: only raw and foreign frees pay that second probe. The pool goes back to stage 1 when
// its last block is freed, not to an arena's empty pools.
//
//    a block of stage 1's                   its entry in the raw table
//    +-----+------+--------+----- ... --+    +-----------+---------------------------+-------------+
//    | hdr | Pool | bitmap | blocks      |    | user = P  | block = P | kPoolEntry    | pool bytes  |
//    +-----+------+--------+----- ... --+    +-----------+---------------------------+-------------+
//          ^ P, aligned to pool bytes

// [S2.36] Pools of stage 1's packed: a block of stage 1's carries an 8-byte header just below
// its payload, so a block of exactly pool bytes, aligned, would leave the next one's header in
// the first 8 bytes of the next aligned pool, and the pools that follow could not be packed:
// each would cost two pools' room (a hole of 100,000 bytes would hold 12, not 24). So a pool of
// stage 1's is a block of pool bytes - kStage1PoolTail, and its blocks leave the last
// kStage1PoolTail bytes of the pool alone (there lies the next block's header): its
// max_next_offset is kStage1PoolTail lower, which costs some classes a block (a classic pool of
// 16-byte blocks holds 247, not 248). Consecutive pools then follow one another pool bytes apart.
inline constexpr uint32_t kStage1PoolTail = 16;   // bytes; >= stage 1's header, a multiple of 16

// What stage 2 counts of itself (stats.h turns it into edu::Stats).
struct Counters {
    uint64_t mallocs = 0;            // successful allocations, as in edu::Stats
    uint64_t frees = 0;              // blocks released
    uint64_t bytes_requested = 0;    // sum of requested sizes
    uint64_t live_blocks = 0;        // blocks the program holds (quarantined ones excluded)
    uint64_t live_bytes = 0;         // usable bytes of those
    uint64_t peak_live_bytes = 0;
    uint64_t mapped_bytes = 0;       // arenas + metadata mapped by stage 2 and not unmapped
    uint64_t raw_footprint = 0;      // stage 1's footprint after our last call into it
    uint64_t peak_footprint = 0;     // max of mapped_bytes + raw_footprint
    uint64_t os_calls[static_cast<unsigned>(OsCall::count)] = {};  // stage 2's own
    uint64_t arenas_allocated = 0;   // arenas mapped, ever
    uint64_t arenas_freed = 0;       // arenas unmapped, ever
    uint64_t arenas_live = 0;        // mapped now
    uint64_t arenas_highwater = 0;   // max of arenas_live
};

// [S2.6] The whole small-object heap. `used[c]` is the head of a circular, doubly linked list
// of the pools of class c that have a free block. Only the links of a header are stored per
// class (16 bytes, not 48), yet the head can stand in the ring like a pool:
//
//    used[c]              Pool A                   Pool B
//    +--------+  next    +----------------+ next  +----------------+  next
//    | next   |--------->| next   prev    |------>| next   prev    |------> back to used[c]
//    | prev   |<---------| free   used .. |<------| free   used .. |
//    +--------+  prev    +----------------+ prev  +----------------+
//    16 bytes: a head    48 bytes + bitmap        (used[c].prev points at B)
//    An empty list is a head pointing at itself: used[c].next == used[c].prev == &used[c].
//
// "Class c has a pool with a free block" is `used[c].next != &used[c]`: one load, one
// compare, no NULL test. CPython gets the same saving by pointing a Pool* 16 bytes before an
// array of pointers ("Major obscurity" in obmalloc.c); in C++ the links are a base struct, so
// the head is a real PoolLinks object and no pointer pretends.
struct Heap {
    PoolLinks used[kClassCount];             // usedpools, one ring head per class
    const Geometry* geometry;                // kClassic or kModern
    uintptr_t pool_mask;                     // ~(pool bytes - 1): pool of an address
    uint32_t pool_bytes;
    uint32_t header_bytes;                   // Pool + bitmap, rounded up to kHeaderAlign
    uint32_t bitmap_words;                   // 64-bit words of live bitmap per pool
    uint32_t arena_shift;
    uint64_t arena_bytes;
    Arena* arenas;                           // table, mapped; grows by doubling
    uint32_t arena_slots;                    // entries in the table
    uint32_t usable;                         // head of usable arenas (fewest free pools first)
    uint32_t unused;                         // head of the list of unused table slots
    uint32_t last_with[kPoolsPerArena + 1];  // last usable arena with exactly n free pools
    uintptr_t map_hint;                      // where the next arena would likely fit, aligned
    uint32_t stage1_pools;                   // pools of stage 1's now ([S2.35]), all in use
    bool stage1_pool_refused;                // stage 1 had no room for one, and nothing went back since
    uint64_t mark_key;                       // key of the freed mark ([S2.28]); 0: not drawn
    bool debug;                              // option "debug"
    bool counting = true;                    // option "stats": the note_* of stats.h count
    Counters counters;
};

extern Heap g_heap;

// Sets the geometry-derived fields of `heap` (no arena may be mapped).
constexpr void apply_geometry(Heap& heap, const Geometry& geometry) {
    heap.geometry = &geometry;
    heap.pool_bytes = uint32_t{1} << geometry.pool_shift;
    heap.pool_mask = ~(uintptr_t{heap.pool_bytes} - 1);
    heap.bitmap_words = bitmap_words_of(geometry);
    heap.header_bytes = header_bytes_of(geometry);
    heap.arena_shift = geometry.arena_shift;
    heap.arena_bytes = uint64_t{1} << geometry.arena_shift;
}

// [S2.28] The freed mark: every block on a pool's free list carries, in its second word (every
// block is at least 16 bytes), its own address XOR a key drawn once, before the first arena is
// mapped (top bit set: never 0, never an address). free writes it, carving writes it, and the
// pop refuses a block that lost it: a write after free, or an underflow from the block above,
// which in the 16-byte class lands exactly on it. Keyed, the value that belongs at p + 8
// appears nowhere but at p + 8 while p is free, so no data of the program matches it by accident.
inline uint64_t freed_mark(const void* block) {
    return reinterpret_cast<uintptr_t>(block) ^ g_heap.mark_key;
}

inline Pool* pool_of(uintptr_t address) {
    return reinterpret_cast<Pool*>(address & g_heap.pool_mask);
}

// Blocks a pool of class c holds under the current geometry.
inline uint32_t blocks_per_pool(unsigned c) {
    return (g_heap.pool_bytes - g_heap.header_bytes) / class_size(c);
}

// Blocks `pool` holds: blocks_per_pool of its class, or as many as end kStage1PoolTail bytes
// before the pool's end in a pool of stage 1's ([S2.36]). Its class must be in range.
inline uint32_t pool_capacity(const Pool* pool) {
    return (pool->max_next_offset + pool->block_size - g_heap.header_bytes) / pool->block_size;
}

}  // namespace edu::stage2
