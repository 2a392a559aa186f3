// stage2_pools/stats.h: stage 2's counters: the inline updates the hot paths make, the
// snapshot as edu::Stats (raw domain included) and the per-class table printer.
// Entry points: note_* (inline), stats_snapshot, print_pool_table. Counting lives here only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"
#include "stage2_pools/types.h"

namespace edu::stage2 {

inline void note_footprint() {
    Counters& c = g_heap.counters;
    uint64_t now = c.mapped_bytes + c.raw_footprint;
    if (now > c.peak_footprint) c.peak_footprint = now;
}
inline void note_mapped(uint64_t bytes) {
    g_heap.counters.mapped_bytes += bytes;
    note_footprint();
}
inline void note_unmapped(uint64_t bytes) { g_heap.counters.mapped_bytes -= bytes; }

// [S2.27] The request counters below move only while g_heap.counting is on (option "stats",
// default on; the drop-in library turns it off unless someone reads the statistics). Off, each
// note_* is a test of one byte, where counting costs a malloc or free six to ten instructions.
// The footprint and OS-call counters above always count: they move only on cold paths. When
// counting comes back on, set_counting recounts the live blocks and bytes from the heap.
void set_counting(bool on);

// A block of `usable` bytes handed out for a request of `requested` bytes.
inline void note_alloc(uint64_t usable, uint64_t requested) {
    if (!g_heap.counting) return;
    Counters& c = g_heap.counters;
    ++c.mallocs;
    ++c.live_blocks;
    c.bytes_requested += requested;
    c.live_bytes += usable;
    if (c.live_bytes > c.peak_live_bytes) c.peak_live_bytes = c.live_bytes;
}
inline void note_free(uint64_t usable) {
    if (!g_heap.counting) return;
    Counters& c = g_heap.counters;
    ++c.frees;
    --c.live_blocks;
    c.live_bytes -= usable;
}

// A block resized in place from `old` to `usable` bytes, for a request of `requested`.
inline void note_resize(uint64_t old, uint64_t usable, uint64_t requested) {
    if (!g_heap.counting) return;
    Counters& c = g_heap.counters;
    c.bytes_requested += requested;
    c.live_bytes = c.live_bytes - old + usable;
    if (c.live_bytes > c.peak_live_bytes) c.peak_live_bytes = c.live_bytes;
}

// A realloc that moved its block through a counted malloc and free: the contract counts a
// resize as neither (bytes and live counts were already right), and the program never held
// both blocks, so the peak is the one before the move or the live bytes after it, not what the
// malloc counted while the old block was still live.
inline void note_move_was_resize(uint64_t peak_before) {
    if (!g_heap.counting) return;
    Counters& c = g_heap.counters;
    --c.mallocs;
    --c.frees;
    c.peak_live_bytes = c.live_bytes > peak_before ? c.live_bytes : peak_before;
}

// A resize that stays in its block: only the request is counted.
inline void note_request(uint64_t requested) {
    if (g_heap.counting) g_heap.counters.bytes_requested += requested;
}

// Counters as the contract's Stats: footprint and OS calls add the raw domain's (stage 1's).
Stats stats_snapshot();

// [S2.25] The per-class table, like CPython's sys._debugmallocstats(): for each size class
// its pools, blocks in use and blocks available; then arenas and pool states. Writes to
// stderr with write(2) only, so it runs inside a process whose malloc is this stage.
void print_pool_table();

}  // namespace edu::stage2
