// stage2_pools/raw.cc: calls into stage 1, and the open-addressing table of live raw blocks
// (its slots in pieces of 3 KiB; grows by doubling into a fresh mapping, or into blocks of
// stage 1's when the OS refuses one; deletion shifts entries back, so no tombstones).
#include "stage2_pools/raw.h"

#include <cerrno>
#include <cstring>

#include "contract/allocator.h"
#include "contract/diagnostics.h"
#include "stage1_brk/stage1.h"
#include "stage2_pools/os.h"
#include "stage2_pools/stats.h"

namespace edu::stage2 {
namespace {

// Tricky: stage 2 is single-threaded, yet it calls stage 1's *thread-safe* entry. Stage 1
// has one heap per process; if any other code uses stage 1 directly from another thread,
// only stage 1's own lock keeps the two apart. An uncontended lock costs far less than the
// segregated-fit search behind it, and the fork hooks in stage2.cc take both locks in order.
const Api& stage1() { return *stage1::descriptor.thread_safe; }
// A fault stage 1 finds in a block it holds for us is reported as ours: the program called
// stage 2 (contract/diagnostics.h), so every call below that hands stage 1 a block says so.

// After any call into stage 1 its footprint may have moved.
void refresh_footprint() {
    g_heap.counters.raw_footprint = stage1().stats().footprint;
    note_footprint();
}

// [S2.34] The table's slots live in pieces of 128 (3 KiB: a freed 4,000-byte block holds one),
// found through directory pages of 256 pieces (2 KiB) and a top array of directory pages (8 bytes
// for 32,768 slots): slot i is top[i / 32768][i / 128 % 256][i % 128]. That is the table the OS
// would not map, made of separate blocks of stage 1's, so that it needs no room of stage 1's
// larger than 3 KiB in one place (its top array reaches 4 KiB at 16 M slots); a mapped table is
// its slots alone, one array.
constexpr uint64_t kPieceShift = 7;
constexpr uint64_t kPieceSlots = uint64_t{1} << kPieceShift;
constexpr uint64_t kDirShift = 8;
constexpr uint64_t kDirPieces = uint64_t{1} << kDirShift;

struct Table {
    RawEntry* flat = nullptr;   // a mapped table's slots, one array: probes skip the directory
    RawEntry*** top = nullptr;  // directory pages, each of up to kDirPieces pieces
    uint64_t capacity = 0;      // slots, a power of two (0 before the first raw block)
    std::size_t bytes = 0;      // the mapping's bytes (its slots); 0 if below
    bool below = false;         // pieces, directory pages and top are blocks of stage 1's
};
Table g_table;
uint64_t g_count = 0;  // live entries

uint64_t piece_count(uint64_t capacity) { return capacity > kPieceSlots ? capacity >> kPieceShift : 1; }
uint64_t piece_slots(uint64_t capacity) { return capacity < kPieceSlots ? capacity : kPieceSlots; }
uint64_t page_count(uint64_t capacity) {
    uint64_t pieces = piece_count(capacity);
    return pieces > kDirPieces ? pieces >> kDirShift : 1;
}
uint64_t page_pieces(uint64_t capacity) {
    uint64_t pieces = piece_count(capacity);
    return pieces < kDirPieces ? pieces : kDirPieces;
}

// The two ways to a slot. Each operation below is written once, over its accessor `at` (a
// FlatSlots or a PieceSlots, chosen once per call by with_slots), so that a probe of a mapped
// table indexes one array and never reads a directory.
struct FlatSlots {
    RawEntry* slots;
    RawEntry& operator()(uint64_t i) const { return slots[i]; }
};
struct PieceSlots {
    RawEntry*** top;
    RawEntry& operator()(uint64_t i) const {
        return top[i >> (kPieceShift + kDirShift)][(i >> kPieceShift) & (kDirPieces - 1)][i & (kPieceSlots - 1)];
    }
};
template <class Op>
decltype(auto) with_slots(const Table& t, Op op) {
    if (t.flat) [[likely]] return op(FlatSlots{t.flat});
    return op(PieceSlots{t.top});
}
RawEntry& slot(const Table& t, uint64_t i) {
    return with_slots(t, [i](auto at) -> RawEntry& { return at(i); });
}
uint64_t g_found = 0;  // the index of the slot raw_find returned last (raw_untrack starts there)

uint64_t home(uintptr_t user, uint64_t capacity) {
    return ((user >> 4) * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(capacity));
}

void put(const Table& t, const RawEntry& entry) {
    with_slots(t, [&t, &entry](auto at) {
        uint64_t i = home(entry.user, t.capacity);
        while (at(i).user) i = (i + 1) & (t.capacity - 1);
        at(i) = entry;
    });
}

// Every block of a table in stage 1's heap, made or not (nullptr), top last.
void release_below(const Table& t) {
    for (uint64_t d = 0; t.top && d < page_count(t.capacity); ++d) {
        for (uint64_t k = 0; t.top[d] && k < page_pieces(t.capacity); ++k)
            if (t.top[d][k]) raw_release(t.top[d][k]);
        if (t.top[d]) raw_release(t.top[d]);
    }
    if (t.top) raw_release(t.top);
}

void release_table(const Table& t) {
    if (!t.capacity) return;
    if (t.below) return release_below(t);
    os_unmap(t.flat, t.bytes);
}

// A zeroed block of stage 1's, errno kept.
void* zeroed_below(std::size_t bytes) {
    int saved = errno;
    void* p = raw_alloc(bytes, 16);
    errno = saved;
    if (p) std::memset(p, 0, bytes);
    return p;
}

// An empty table of `capacity` slots: one mapping of the slots alone, probed as one array (no
// directory: 512 slots fill their three pages exactly); or, when the OS refuses it (the limit
// that stopped the arenas), every piece, directory page and the top a block of stage 1's, whose
// heap may hold the room that large blocks freed. errno stays as it was.
bool make_table(uint64_t capacity, bool may_use_stage1, Table* t) {
    const uint64_t pages = page_count(capacity);
    const std::size_t bytes = (capacity * sizeof(RawEntry) + kPage - 1) & ~(kPage - 1);
    *t = Table{nullptr, nullptr, capacity, 0, false};
    if (auto* base = os_map(bytes)) {
        t->flat = static_cast<RawEntry*>(base);
        t->bytes = bytes;
        return true;
    }
    if (!may_use_stage1) return false;
    t->below = true;
    t->top = static_cast<RawEntry***>(zeroed_below(pages * sizeof(RawEntry**)));
    bool made = t->top != nullptr;
    for (uint64_t d = 0; made && d < pages; ++d) {
        t->top[d] = static_cast<RawEntry**>(zeroed_below(page_pieces(capacity) * sizeof(RawEntry*)));
        made = t->top[d] != nullptr;
        for (uint64_t k = 0; made && k < page_pieces(capacity); ++k) {
            t->top[d][k] = static_cast<RawEntry*>(zeroed_below(piece_slots(capacity) * sizeof(RawEntry)));
            made = t->top[d][k] != nullptr;
        }
    }
    if (made) return true;
    release_below(*t);
    *t = Table{};
    return false;
}

// [S2.32] A table of twice the slots, every entry moved over.
bool grow(bool may_use_stage1) {
    Table bigger;
    if (!make_table(g_table.capacity ? 2 * g_table.capacity : 256, may_use_stage1, &bigger)) return false;
    for (uint64_t i = 0; i < g_table.capacity; ++i)
        if (slot(g_table, i).user) put(bigger, slot(g_table, i));
    release_table(g_table);
    g_table = bigger;
    return true;
}

}  // namespace

void* raw_alloc(std::size_t bytes, std::size_t alignment) {
    OnBehalfOf scope(kStageName);
    void* block =
        alignment <= 16 ? stage1().malloc(bytes) : stage1().aligned_alloc(alignment, bytes);
    refresh_footprint();
    return block;
}

void* raw_resize(void* block, std::size_t bytes) {
    OnBehalfOf scope(kStageName);
    void* moved = stage1().realloc(block, bytes);
    refresh_footprint();
    return moved;
}

void raw_release(void* block) {
    OnBehalfOf scope(kStageName);
    stage1().free(block);
    g_heap.stage1_pool_refused = false;   // room for a pool again, perhaps ([S2.37])
    refresh_footprint();
}

std::size_t raw_block_usable(const void* block) {
    OnBehalfOf scope(kStageName);
    return stage1().usable_size(block);
}

CheckResult raw_check() { return stage1().check(); }

Stats raw_stats() { return stage1().stats(); }

void raw_walk(WalkFn visit, void* context) { stage1().walk(visit, context); }

// [S2.32] The table grows at half load; a growth the OS refuses (the limit that made a large
// block's neighbours fail, or the map count) is no reason to refuse a block stage 1 could give:
// linear probing works at any load below full, so the table takes entries up to all but one
// slot (an empty slot ends every probe), slower, and tries to grow at each one. [S2.34] Room of
// stage 1's is the program's room once the OS says no: the table grows into it only past three
// quarters load, where a mapping is asked for from one half on.
bool raw_track(uintptr_t user, uintptr_t block, uint64_t usable) {
    const uint64_t load = g_count + 1, capacity = g_table.capacity;
    if (2 * load > capacity && !grow(4 * load > 3 * capacity) && load >= capacity) return false;
    put(g_table, RawEntry{user, block, usable});
    ++g_count;
    return true;
}

RawEntry* raw_find(uintptr_t user) {
    if (!g_table.capacity || !user) return nullptr;
    const Table& t = g_table;
    return with_slots(t, [&t, user](auto at) -> RawEntry* {
        for (uint64_t i = home(user, t.capacity);; i = (i + 1) & (t.capacity - 1)) {
            RawEntry& e = at(i);
            if (e.user == user) {
                g_found = i;
                return &e;
            }
            if (!e.user) return nullptr;
        }
    });
}

// Backward-shift deletion: walk the run after the hole; an entry whose home lies cyclically
// outside (hole, i] can move into the hole, which then moves to i.
void raw_untrack(RawEntry* entry) {
    const Table& t = g_table;
    with_slots(t, [&t, entry](auto at) {
        uint64_t mask = t.capacity - 1;
        uint64_t hole = g_found;  // the entry's index: raw_find's, or found from its home on
        if (hole >= t.capacity || &at(hole) != entry)
            for (hole = home(entry->user, t.capacity); &at(hole) != entry;) hole = (hole + 1) & mask;
        for (uint64_t i = (hole + 1) & mask; at(i).user; i = (i + 1) & mask) {
            uint64_t want = home(at(i).user, t.capacity);
            if (((i - want) & mask) >= ((i - hole) & mask)) {
                at(hole) = at(i);
                hole = i;
            }
        }
        at(hole) = RawEntry{};
    });
    --g_count;
}

void raw_retrack(RawEntry* entry, uintptr_t user, uintptr_t block, uint64_t usable) {
    raw_untrack(entry);
    put(g_table, RawEntry{user, block, usable});  // the freed slot keeps the load
    ++g_count;
}

RawEntry* raw_slot(uint64_t i) { return &slot(g_table, i); }
uint64_t raw_capacity() { return g_table.capacity; }
uint64_t raw_count() { return g_count; }
uint64_t raw_table_bytes() { return g_table.bytes; }
uint64_t raw_table_blocks_in_stage1() {
    const Table& t = g_table;
    return t.below ? piece_count(t.capacity) + page_count(t.capacity) + 1 : 0;
}

// A walk's question, for each used block of stage 1's: is it a piece, a directory page or the
// top of the table ([S2.34])? Only while they live there, by a look through them: a diagnostic.
bool raw_table_holds(const void* block) {
    const Table& t = g_table;
    if (!t.below) return false;
    if (block == t.top) return true;
    for (uint64_t d = 0; d < page_count(t.capacity); ++d) {
        if (block == t.top[d]) return true;
        for (uint64_t k = 0; k < page_pieces(t.capacity); ++k)
            if (block == t.top[d][k]) return true;
    }
    return false;
}

}  // namespace edu::stage2
