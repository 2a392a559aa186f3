// stage3_segments/stats.h: the request-side counters and the contract's Stats snapshot.
// Entry points: count_malloc / count_free / count_resize / count_move (inline), alloc_mapped,
// free_mapped, resize_mapped, stats_snapshot, set_counting. The fast paths count only when
// compiled in their stats mode (alloc.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu::stage3 {

// [S3.26] Counters kept by the fast paths in stats mode only: the "off" instantiations of
// alloc.h contain no counting instruction at all. Stage 3 has one thread (the thread-safe
// entry takes a lock around it), so these plain globals are that thread's counters; stage 4
// makes them thread_local. With stats off, stats_snapshot derives live blocks and bytes from
// the pages' `used` counts (exact, but a walk), and the request counters stand still.
struct Counters {
    uint64_t mallocs = 0;
    uint64_t frees = 0;
    uint64_t bytes_requested = 0;
    uint64_t live_blocks = 0;
    uint64_t live_bytes = 0;
    uint64_t peak_live_bytes = 0;
};
extern Counters g_counters;
extern bool g_counting;          // stats mode, for code off the fast paths

inline void count_malloc(uint64_t requested, uint64_t usable) {
    Counters& c = g_counters;
    ++c.mallocs;
    ++c.live_blocks;
    c.bytes_requested += requested;
    c.live_bytes += usable;
    if (c.live_bytes > c.peak_live_bytes) c.peak_live_bytes = c.live_bytes;
}

inline void count_free(uint64_t usable) {
    Counters& c = g_counters;
    ++c.frees;
    --c.live_blocks;
    c.live_bytes -= usable;
}

inline void count_resize(uint64_t old_usable, uint64_t usable, uint64_t requested) {
    Counters& c = g_counters;
    c.bytes_requested += requested;
    c.live_bytes = c.live_bytes - old_usable + usable;
    if (c.live_bytes > c.peak_live_bytes) c.peak_live_bytes = c.live_bytes;
}

// A realloc that moved its block counted a malloc and a free: the contract counts one resize.
inline void count_move() {
    --g_counters.mallocs;
    --g_counters.frees;
}

// [S3.56] The blocks of contract/mapped.h ([S3.39]) are the heap's blocks to the statistics:
// a malloc or a free of their usable bytes, their mapping in the footprint (so the checker's
// sum holds with them), their system calls in os_calls, their entries in the walk.
// alloc_mapped fails as mapped_aligned_alloc does (nullptr, ENOMEM); free_mapped returns the
// usable size of the block it unmapped, 0 (and does nothing) for any other pointer. [S3.72] A
// munmap the kernel refuses (at the map count's limit, where the block's mapping merged with
// its neighbours' and the munmap would cut a hole) leaves the mapping, its pages given back by
// madvise (mapped.cc): the block is gone and uncounted all the same, its address space lost.
void* alloc_mapped(std::size_t alignment, std::size_t size);
std::size_t free_mapped(void* p);
// [S3.64] Resizes such a block of `usable` bytes to hold `size` (mapped_resize) and counts one
// resize; nullptr, with `p` untouched, when it cannot (the caller copies).
void* resize_mapped(void* p, std::size_t usable, std::size_t size);

// Live blocks and usable bytes by walking every page in use, and the mapped blocks.
void count_live(uint64_t* blocks, uint64_t* bytes);

// Stats as the contract defines them (footprint and OS calls from os.h).
Stats stats_snapshot();

// Turns counting on or off; turning it on re-reads live blocks and bytes from the pages.
void set_counting(bool on);

}  // namespace edu::stage3
