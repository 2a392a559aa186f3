// stage4_threads/stats.h: per-heap counters kept by their owner thread and summed on request.
// Entry points: count_malloc / count_free / count_resize / count_move (inline, the owner's
// heap), count_free_by / count_resize_by (a caller with no record too), alloc_mapped,
// free_mapped, resize_mapped, stats_snapshot, sample_peak, set_counting.
// Fast paths count only in stats mode.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"
#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.16] A single-writer counter: the owner adds with a relaxed load and a relaxed store (two
// plain moves on x86-64, no lock prefix), never with fetch_add, because no other thread writes
// it; readers in stats() load it relaxed and may see it a moment late. Stage 3 kept one set of
// plain globals; here every heap has its own set, and stats() adds them up (registry.h).
inline void bump(std::atomic<uint64_t>& counter, uint64_t delta) {
    counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}
inline void bump(std::atomic<int64_t>& counter, int64_t delta) {
    counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

inline void count_malloc(Heap* heap, uint64_t requested, uint64_t usable) {
    bump(heap->counters.mallocs, 1);
    bump(heap->counters.bytes_requested, requested);
    bump(heap->counters.live_bytes, static_cast<int64_t>(usable));
}

inline void count_free(Heap* heap, uint64_t usable) {
    bump(heap->counters.frees, 1);
    bump(heap->counters.live_bytes, -static_cast<int64_t>(usable));
}

inline void count_resize(Heap* heap, uint64_t old_usable, uint64_t usable, uint64_t requested) {
    bump(heap->counters.bytes_requested, requested);
    bump(heap->counters.live_bytes, static_cast<int64_t>(usable) - static_cast<int64_t>(old_usable));
}

// [S4.116] A free or a resize by a thread that can have no heap record (its first call, every
// record in use and the kernel refusing a new one: a limit, the map count) changes the totals
// all the same: it is counted in a process-wide record instead, with atomic adds (several such
// threads may count at once, on a path as rare as the refusal). sum_records adds it to the heap
// records' sums. Before, such a free went uncounted and the statistics kept its block live.
void count_free_unhomed(uint64_t usable);
void count_resize_unhomed(uint64_t old_usable, uint64_t usable, uint64_t requested);
// `heap` as heap_for_caller answered: the caller's record, or nullptr when none could be had.
inline void count_free_by(Heap* heap, uint64_t usable) {
    if (heap) count_free(heap, usable);
    else count_free_unhomed(usable);
}
inline void count_resize_by(Heap* heap, uint64_t old_usable, uint64_t usable, uint64_t requested) {
    if (heap) count_resize(heap, old_usable, usable, requested);
    else count_resize_unhomed(old_usable, usable, requested);
}

// A realloc that moved its block counted a malloc and a free: the contract counts one resize.
inline void count_move(Heap* heap) {
    bump(heap->counters.mallocs, ~uint64_t{0});
    bump(heap->counters.frees, ~uint64_t{0});
}

// [S4.62] The blocks of contract/mapped.h ([S4.51]) are counted as stage 3 counts them (S3.56),
// in the caller's heap record: a malloc or a free of their usable bytes (a thread may free
// another's, as with any block: the sums are what Stats reports), their mapping in the
// footprint, their system calls in os_calls, their entries in the walk. With counting on and
// no heap record to be had, alloc_mapped refuses (ENOMEM) rather than hand out a block it
// cannot count. free_mapped returns the usable size it unmapped, 0 for any other pointer.
void* alloc_mapped(std::size_t alignment, std::size_t size);
std::size_t free_mapped(void* p);
// [S4.70] Resizes such a block of `usable` bytes to hold `size` (mapped_resize) and counts one
// resize in the caller's heap; nullptr, with `p` untouched, when it cannot (the caller copies).
void* resize_mapped(void* p, std::size_t usable, std::size_t size);

// Stats mode, for code off the fast paths (which are compiled per mode, see stage4.cc).
namespace stats_internal {
extern std::atomic<bool> g_counting;
}  // namespace stats_internal
inline bool counting() { return stats_internal::g_counting.load(std::memory_order_relaxed); }

// [S4.17] Turns counting on or off. Turning it on re-reads the live blocks and bytes from the
// pages the caller can read (check.h) and keeps the difference to the counters' sums, so the
// totals stay exact when the option changes between workloads, as the contract allows.
void set_counting(bool on);

// Stats as the contract defines them: counters summed over every heap record, footprint and OS
// calls from os.h. With counting off, live blocks and bytes come from the readable pages.
Stats stats_snapshot();

// [S4.18] The peak of live bytes is sampled, not tracked: an exact peak of a sum over threads
// needs one shared counter updated on every malloc, the global atomic this stage refuses. The
// sum is taken, and the peak raised, whenever any heap takes a fresh page or a one-block page
// and whenever Stats are read. With one thread the peak misses only what a burst of
// allocations from already formatted pages adds between two samples.
void sample_peak();

}  // namespace edu::stage4
