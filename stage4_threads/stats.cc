// stage4_threads/stats.cc: the stats mode, the sums over heap records, the sampled peak, and
// the offsets that keep the sums exact across a change of mode.
#include "stage4_threads/stats.h"

#include "contract/diagnostics.h"
#include "contract/mapped.h"
#include "stage4_threads/check.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/os.h"
#include "stage4_threads/registry.h"

namespace edu::stage4 {

namespace stats_internal {
std::atomic<bool> g_counting{true};
}  // namespace stats_internal

namespace {

using stats_internal::g_counting;
std::atomic<uint64_t> g_peak_live{0};
// Truth minus the counters' sums when counting was last turned on (0 if it never was off).
std::atomic<int64_t> g_offset_blocks{0};
std::atomic<int64_t> g_offset_bytes{0};

// [S4.116] The counts of callers that had no heap record.
Counters g_unhomed;

struct Sums {
    uint64_t mallocs = 0, frees = 0, bytes_requested = 0;
    int64_t live_bytes = 0;
};

Sums sum_records() {
    Sums s;
    s.frees = g_unhomed.frees.load(std::memory_order_relaxed);
    s.bytes_requested = g_unhomed.bytes_requested.load(std::memory_order_relaxed);
    s.live_bytes = g_unhomed.live_bytes.load(std::memory_order_relaxed);
    for (Heap* h = first_record(); h != nullptr; h = h->next_record) {
        s.mallocs += h->counters.mallocs.load(std::memory_order_relaxed);
        s.frees += h->counters.frees.load(std::memory_order_relaxed);
        s.bytes_requested += h->counters.bytes_requested.load(std::memory_order_relaxed);
        s.live_bytes += h->counters.live_bytes.load(std::memory_order_relaxed);
    }
    return s;
}

// Counters read one after another while other threads work may disagree for a moment (a
// free counted, its malloc not yet read); a negative total is such a moment, shown as 0.
uint64_t clamp(int64_t value) { return value < 0 ? 0 : static_cast<uint64_t>(value); }

}  // namespace

void count_free_unhomed(uint64_t usable) {
    g_unhomed.frees.fetch_add(1, std::memory_order_relaxed);
    g_unhomed.live_bytes.fetch_sub(static_cast<int64_t>(usable), std::memory_order_relaxed);
}

void count_resize_unhomed(uint64_t old_usable, uint64_t usable, uint64_t requested) {
    g_unhomed.bytes_requested.fetch_add(requested, std::memory_order_relaxed);
    g_unhomed.live_bytes.fetch_add(static_cast<int64_t>(usable) - static_cast<int64_t>(old_usable),
                                   std::memory_order_relaxed);
}

void* alloc_mapped(std::size_t alignment, std::size_t size) {
    Heap* heap = nullptr;
    if (counting() && (heap = heap_for_caller(t_heap)) == nullptr) return enomem();
    std::size_t usable;
    void* p = mapped_aligned_alloc(kStageNumber, alignment, size, &usable);
    if (!p) return nullptr;
    os_commit_bytes(static_cast<int64_t>(mapped_footprint(usable)));
    if (heap) {
        count_malloc(heap, size, usable);
        sample_peak();
    }
    return p;
}

void* resize_mapped(void* p, std::size_t usable, std::size_t size) {
    std::size_t now;
    void* q = mapped_resize(kStageNumber, p, size, &now);
    if (!q) return nullptr;
    os_commit_bytes(static_cast<int64_t>(mapped_footprint(now)) - static_cast<int64_t>(mapped_footprint(usable)));
    if (counting()) {
        count_resize_by(heap_for_caller(t_heap), usable, now, size);
        sample_peak();
    }
    return q;
}

std::size_t free_mapped(void* p) {
    std::size_t usable = mapped_free(kStageNumber, p);
    if (usable == 0) return 0;
    os_commit_bytes(-static_cast<int64_t>(mapped_footprint(usable)));
    if (counting()) count_free_by(heap_for_caller(t_heap), usable);
    return usable;
}

void set_counting(bool on) {
    if (on && !counting()) {
        LiveTotals truth = count_live();
        Sums s = sum_records();
        g_offset_blocks.store(static_cast<int64_t>(truth.blocks) - static_cast<int64_t>(s.mallocs - s.frees),
                              std::memory_order_relaxed);
        g_offset_bytes.store(static_cast<int64_t>(truth.bytes) - s.live_bytes, std::memory_order_relaxed);
    }
    g_counting.store(on, std::memory_order_relaxed);
}

void sample_peak() {
    Sums s = sum_records();
    raise_peak(g_peak_live, clamp(s.live_bytes + g_offset_bytes.load(std::memory_order_relaxed)));
}

Stats stats_snapshot() {
    Stats out;
    Sums s = sum_records();
    out.mallocs = s.mallocs;
    out.frees = s.frees;
    out.bytes_requested = s.bytes_requested;
    if (counting()) {
        out.live_blocks = clamp(static_cast<int64_t>(s.mallocs - s.frees) + g_offset_blocks.load(std::memory_order_relaxed));
        out.live_bytes = clamp(s.live_bytes + g_offset_bytes.load(std::memory_order_relaxed));
    } else {
        LiveTotals truth = count_live();
        out.live_blocks = truth.blocks;
        out.live_bytes = truth.bytes;
    }
    raise_peak(g_peak_live, out.live_bytes);
    out.peak_live_bytes = g_peak_live.load(std::memory_order_relaxed);
    if (out.peak_live_bytes < out.live_bytes) out.peak_live_bytes = out.live_bytes;
    const OsCounters& os = os_counters();
    out.footprint = os.footprint.load(std::memory_order_relaxed);
    out.peak_footprint = os.peak_footprint.load(std::memory_order_relaxed);
    if (out.peak_footprint < out.footprint) out.peak_footprint = out.footprint;
    MappedTotals mapped = mapped_totals(kStageNumber);
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
        out.os_calls[k] = os.calls[k].load(std::memory_order_relaxed) + mapped.os_calls[k];
    return out;
}

}  // namespace edu::stage4
