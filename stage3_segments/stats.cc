// stage3_segments/stats.cc: the counters, the live totals read from the pages, the snapshot.
#include "stage3_segments/stats.h"

#include "contract/mapped.h"
#include "stage3_segments/os.h"
#include "stage3_segments/segment.h"

namespace edu::stage3 {

Counters g_counters;
bool g_counting = true;

void* alloc_mapped(std::size_t alignment, std::size_t size) {
    std::size_t usable;
    void* p = mapped_aligned_alloc(kStageNumber, alignment, size, &usable);
    if (!p) return nullptr;
    os_commit_bytes(static_cast<int64_t>(mapped_footprint(usable)));
    if (g_counting) count_malloc(size, usable);
    return p;
}

std::size_t free_mapped(void* p) {
    std::size_t usable = mapped_free(kStageNumber, p);
    if (usable == 0) return 0;
    os_commit_bytes(-static_cast<int64_t>(mapped_footprint(usable)));
    if (g_counting) count_free(usable);
    return usable;
}

void* resize_mapped(void* p, std::size_t usable, std::size_t size) {
    std::size_t now;
    void* q = mapped_resize(kStageNumber, p, size, &now);
    if (!q) return nullptr;
    os_commit_bytes(static_cast<int64_t>(mapped_footprint(now)) - static_cast<int64_t>(mapped_footprint(usable)));
    if (g_counting) count_resize(usable, now, size);
    return q;
}

void count_live(uint64_t* blocks, uint64_t* bytes) {
    MappedTotals mapped = mapped_totals(kStageNumber);
    uint64_t n = mapped.blocks, b = mapped.usable_bytes;
    for (Segment* s = first_segment(); s; s = s->next) {
        for (uint32_t i = 0; i < s->page_count; ++i) {
            const Page& page = s->pages()[i];
            if (!page.in_use) continue;
            uint64_t used = page.used;
            n += used;
            b += used * page.block_size;
        }
    }
    *blocks = n;
    *bytes = b;
}

Stats stats_snapshot() {
    Stats s;
    const Counters& c = g_counters;
    s.mallocs = c.mallocs;
    s.frees = c.frees;
    s.bytes_requested = c.bytes_requested;
    if (g_counting) {
        s.live_blocks = c.live_blocks;
        s.live_bytes = c.live_bytes;
        s.peak_live_bytes = c.peak_live_bytes;
    } else {
        count_live(&s.live_blocks, &s.live_bytes);
        s.peak_live_bytes = c.peak_live_bytes > s.live_bytes ? c.peak_live_bytes : s.live_bytes;
    }
    const OsCounters& os = os_counters();
    s.footprint = os.footprint;
    s.peak_footprint = os.peak_footprint;
    MappedTotals mapped = mapped_totals(kStageNumber);
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) s.os_calls[k] = os.calls[k] + mapped.os_calls[k];
    return s;
}

void set_counting(bool on) {
    if (on && !g_counting) {
        count_live(&g_counters.live_blocks, &g_counters.live_bytes);
        if (g_counters.live_bytes > g_counters.peak_live_bytes)
            g_counters.peak_live_bytes = g_counters.live_bytes;
    }
    g_counting = on;
}

}  // namespace edu::stage3
