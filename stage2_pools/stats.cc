// stage2_pools/stats.cc: the counting switch (set_counting, [S2.27]), the Stats snapshot and
// the per-class table of print_pool_table, computed by scanning the arenas as CPython's
// _debugmallocstats does (no per-class counters slow the hot paths).
#include "stage2_pools/stats.h"

#include "contract/diagnostics.h"
#include "stage2_pools/arena.h"
#include "stage2_pools/check.h"
#include "stage2_pools/debug.h"
#include "stage2_pools/radix.h"
#include "stage2_pools/raw.h"

namespace edu::stage2 {

namespace {
// The live blocks and bytes as the checker's scan finds them: exact, whatever was counted (the
// scan skips comparing them with the counters while counting is off).
void count_live(uint64_t* blocks, uint64_t* bytes) {
    CheckResult found = check_heap();
    *blocks = found.live_blocks;
    *bytes = found.live_bytes;
}
}  // namespace

// Counting back on: blocks made and freed while it was off were not counted, so the live
// counters are recounted from the heap; mallocs, frees and bytes requested stay as they were.
void set_counting(bool on) {
    Counters& c = g_heap.counters;
    if (on && !g_heap.counting) {
        count_live(&c.live_blocks, &c.live_bytes);
        if (c.live_bytes > c.peak_live_bytes) c.peak_live_bytes = c.live_bytes;
    }
    g_heap.counting = on;
}

Stats stats_snapshot() {
    const Counters& c = g_heap.counters;
    Stats raw = raw_stats();
    Stats s;
    s.mallocs = c.mallocs;
    s.frees = c.frees;
    s.bytes_requested = c.bytes_requested;
    if (g_heap.counting) {
        s.live_blocks = c.live_blocks;
        s.live_bytes = c.live_bytes;
        s.peak_live_bytes = c.peak_live_bytes;
    } else {  // read from the heap, as stage 3 reads its pages
        count_live(&s.live_blocks, &s.live_bytes);
        s.peak_live_bytes = c.peak_live_bytes > s.live_bytes ? c.peak_live_bytes : s.live_bytes;
    }
    s.footprint = c.mapped_bytes + raw.footprint;
    s.peak_footprint = c.peak_footprint > s.footprint ? c.peak_footprint : s.footprint;
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
        s.os_calls[k] = c.os_calls[k] + raw.os_calls[k];
    return s;
}

namespace {

struct ClassRow {
    uint64_t pools = 0;      // pools in use (used or full)
    uint64_t full = 0;
    uint64_t in_use = 0;     // blocks handed out (quarantined ones included)
    uint64_t available = 0;  // free-list + never-carved blocks
};

// Prints `value` so that it ends at column `end`.
void right(LineWriter& w, uint64_t value, std::size_t end) {
    std::size_t digits = 1;
    for (uint64_t rest = value; rest >= 10; rest /= 10) ++digits;
    w.pad_to(end - digits).dec(value);
}

void line(LineWriter& w) {
    w.str("\n");
    write_stderr(w.c_str());
}

}  // namespace

namespace {
// A pool in use, into its class's row.
void count_pool(ClassRow* rows, const Pool* pool) {
    if (pool->class_index >= kClassCount) return;   // a damaged header: no row is its
    ClassRow& row = rows[pool->class_index];
    ++row.pools;
    if (!pool->free) ++row.full;
    row.in_use += pool->used;
    bool sized = pool->block_size == class_size(pool->class_index);   // else a damaged header too
    row.available += (sized ? pool_capacity(pool) : blocks_per_pool(pool->class_index)) - pool->used;
}
}  // namespace

void print_pool_table() {
    ClassRow rows[kClassCount];
    uint64_t empty = 0, never_used = 0;
    for (uint32_t i = 0; i < g_heap.arena_slots; ++i) {
        const Arena& a = g_heap.arenas[i];
        if (!a.address) continue;
        never_used += (a.address + g_heap.arena_bytes - a.fresh) / g_heap.pool_bytes;
        for (uintptr_t p = a.address; p < a.fresh; p += g_heap.pool_bytes) {
            const Pool* pool = reinterpret_cast<const Pool*>(p);
            if (!pool->used) {
                ++empty;
                continue;
            }
            count_pool(rows, pool);
        }
    }
    for (uint64_t i = 0; g_heap.stage1_pools && i < raw_capacity(); ++i)   // [S2.35]: all in use
        if (raw_slot(i)->user && raw_is_pool(*raw_slot(i)))
            count_pool(rows, reinterpret_cast<const Pool*>(raw_slot(i)->user));
    char text[160];
    LineWriter w(text, sizeof text);
    w.str("edu-alloc ").str(kStageName).str(": pools of the ").str(g_heap.geometry->name)
        .str(" geometry (").bytes(g_heap.pool_bytes).str(" pools, ").bytes(g_heap.arena_bytes)
        .str(" arenas, ").dec(g_heap.header_bytes).str("-byte pool headers)");
    line(w);
    w = LineWriter(text, sizeof text);
    w.str("class  size   pools    full   blocks in use   available blocks");
    line(w);
    uint64_t total_pools = 0, total_full = 0, used_bytes = 0, avail_bytes = 0;
    for (unsigned c = 0; c < kClassCount; ++c) {
        const ClassRow& r = rows[c];
        if (!r.pools) continue;
        w = LineWriter(text, sizeof text);
        right(w, c, 5);
        right(w, class_size(c), 11);
        right(w, r.pools, 19);
        right(w, r.full, 27);
        right(w, r.in_use, 43);
        right(w, r.available, 62);
        line(w);
        total_pools += r.pools;
        total_full += r.full;
        used_bytes += r.in_use * class_size(c);
        avail_bytes += r.available * class_size(c);
    }
    const Counters& k = g_heap.counters;
    w = LineWriter(text, sizeof text);
    w.str("arenas: ").dec(k.arenas_live).str(" mapped now, ").dec(k.arenas_allocated)
        .str(" allocated, ").dec(k.arenas_freed).str(" freed, high-water ").dec(k.arenas_highwater);
    line(w);
    w = LineWriter(text, sizeof text);
    w.str("pools: ").dec(total_pools - total_full).str(" used, ").dec(total_full).str(" full, ")
        .dec(empty).str(" empty, ").dec(never_used).str(" never used");
    if (g_heap.stage1_pools) w.str(" (").dec(g_heap.stage1_pools).str(" of those in use from stage 1's heap)");
    line(w);
    w = LineWriter(text, sizeof text);
    w.str("bytes: ").bytes(used_bytes).str(" in blocks in use, ").bytes(avail_bytes)
        .str(" available, ").bytes(total_pools * g_heap.header_bytes).str(" in pool headers");
    line(w);
    w = LineWriter(text, sizeof text);
    w.str("metadata: ").bytes(arena_table_bytes()).str(" arena table, ").bytes(radix_bytes())
        .str(" radix nodes, ").bytes(raw_table_bytes()).str(" raw table");
    line(w);
    w = LineWriter(text, sizeof text);
    w.str("raw domain (stage 1): ").dec(raw_count() - g_heap.stage1_pools).str(" blocks; stage 1 footprint ")
        .bytes(k.raw_footprint);
    if (g_heap.debug) w.str("; debug quarantine holds ").dec(debug_quarantined()).str(" blocks");
    line(w);
}

}  // namespace edu::stage2
