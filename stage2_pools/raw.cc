// stage2_pools/raw.cc: calls into stage 1, and the open-addressing table of live raw blocks
// (grows by doubling into a fresh mapping, or a block of stage 1's when the OS refuses one;
// deletion shifts entries back, so no tombstones).
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

constexpr std::size_t kPage = 4096;
RawEntry* g_slots = nullptr;
uint64_t g_capacity = 0;  // slots, a power of two (0 before the first raw block)
uint64_t g_count = 0;     // live entries
uint64_t g_bytes = 0;     // bytes of g_slots
bool g_slots_below = false;  // g_slots is a block of stage 1's, not a mapping ([S2.32])

uint64_t home(uintptr_t user, uint64_t capacity) {
    return ((user >> 4) * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(capacity));
}

void put(RawEntry* slots, uint64_t capacity, const RawEntry& entry) {
    uint64_t i = home(entry.user, capacity);
    while (slots[i].user) i = (i + 1) & (capacity - 1);
    slots[i] = entry;
}

// [S2.32] Keeps the load at most one half. The table is a mapping of its own; when the OS
// refuses one (the limit that stopped the arenas), it is a block of stage 1's, whose heap may
// hold the room that large blocks freed, and errno stays as it was.
bool grow() {
    uint64_t capacity = g_capacity ? 2 * g_capacity : 256;
    std::size_t bytes = (capacity * sizeof(RawEntry) + kPage - 1) & ~(kPage - 1);
    bool below = false;
    auto* slots = static_cast<RawEntry*>(os_map(bytes));
    if (!slots) {
        int saved = errno;
        slots = static_cast<RawEntry*>(raw_alloc(bytes, 16));
        errno = saved;
        if (!slots) return false;
        std::memset(slots, 0, bytes);
        below = true;
    }
    for (uint64_t i = 0; i < g_capacity; ++i)
        if (g_slots[i].user) put(slots, capacity, g_slots[i]);
    if (g_slots && g_slots_below) raw_release(g_slots);
    else if (g_slots) os_unmap(g_slots, g_bytes);
    g_slots = slots;
    g_slots_below = below;
    g_capacity = capacity;
    g_bytes = bytes;
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
// slot (an empty slot ends every probe), slower, and tries to grow at each one.
bool raw_track(uintptr_t user, uintptr_t block, uint64_t usable) {
    if (2 * (g_count + 1) > g_capacity && !grow() && g_count + 1 >= g_capacity) return false;
    put(g_slots, g_capacity, RawEntry{user, block, usable});
    ++g_count;
    return true;
}

RawEntry* raw_find(uintptr_t user) {
    if (!g_capacity || !user) return nullptr;
    for (uint64_t i = home(user, g_capacity);; i = (i + 1) & (g_capacity - 1)) {
        if (g_slots[i].user == user) return &g_slots[i];
        if (!g_slots[i].user) return nullptr;
    }
}

// Backward-shift deletion: walk the run after the hole; an entry whose home lies cyclically
// outside (hole, i] can move into the hole, which then moves to i.
void raw_untrack(RawEntry* entry) {
    uint64_t mask = g_capacity - 1;
    uint64_t hole = static_cast<uint64_t>(entry - g_slots);
    for (uint64_t i = (hole + 1) & mask; g_slots[i].user; i = (i + 1) & mask) {
        uint64_t want = home(g_slots[i].user, g_capacity);
        if (((i - want) & mask) >= ((i - hole) & mask)) {
            g_slots[hole] = g_slots[i];
            hole = i;
        }
    }
    g_slots[hole] = RawEntry{};
    --g_count;
}

void raw_retrack(RawEntry* entry, uintptr_t user, uintptr_t block, uint64_t usable) {
    raw_untrack(entry);
    put(g_slots, g_capacity, RawEntry{user, block, usable});  // the freed slot keeps the load
    ++g_count;
}

RawEntry* raw_slots() { return g_slots; }
uint64_t raw_capacity() { return g_capacity; }
uint64_t raw_count() { return g_count; }
uint64_t raw_table_bytes() { return g_slots_below ? 0 : g_bytes; }
const void* raw_table_in_stage1() { return g_slots_below ? g_slots : nullptr; }

}  // namespace edu::stage2
