// stage3_segments/check.cc: check_heap verifies segments, pages, lists, queues, the direct
// cache and the counters; walk_heap reports segments (depth 0), pages (1), blocks (2), and
// the blocks of contract/mapped.h.
#include "stage3_segments/check.h"

#include <initializer_list>

#include "contract/diagnostics.h"
#include "contract/mapped.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/heap.h"
#include "stage3_segments/os.h"
#include "stage3_segments/page.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/stats.h"

namespace edu::stage3 {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

uint16_t g_stamp = 0;   // check_stamp value of the current check

struct Checker {
    CheckResult result;
    Seen seen;   // the blocks of the page being looked at met on its lists so far (lists.h)

    bool fail(const char* what, uintptr_t where = 0, uint64_t a = 0, uint64_t b = 0) {
        return violation(&result, what, where, a, b);
    }
};

// Marks the blocks of one list in k.seen; returns its length, or -1 after a failure.
int64_t mark_list(Checker& k, const Page* page, const Block* head, const char* name) {
    int64_t n = 0;
    for (const Block* b = head; b != nullptr; b = decode_block(page, b)) {
        if (!page_owns_block(page, addr(b)))
            return k.fail(name, addr(b)), -1;
        if (k.seen.mark(index_of(page, b)))
            return k.fail("block twice on the free lists (a cycle or a double free)", addr(b)), -1;
        if (b->mark != freed_mark(page))
            return k.fail("free block lacks the freed mark", addr(b)), -1;
        ++n;
    }
    return n;
}

// [S3.29] Per page in use: geometry, the validity-test constants, and
//    used + |free| + |local_free| + (capacity - carved) == capacity.
bool check_page(Checker& k, Segment* s, Page* page, uint64_t* live_blocks, uint64_t* live_bytes) {
    uintptr_t at = addr(page);
    if (!page->heap) return k.fail("page in use without a heap", at);
    Span area = page_area(s, page);
    bool one_block = s->page_count == 1;
    if (page->start < area.lo || page->start >= area.hi)
        return k.fail("page start outside its area", at);
    if (page->carved == 0 || page->carved > page->capacity)
        return k.fail("page carved count out of range", at, page->carved, page->capacity);
    if (one_block) {
        if (page->capacity != 1 || page->magic != 1 || page->limit != 1 ||
            page->start32 != static_cast<uint32_t>(page->start))
            return k.fail("one-block page with list constants", at);
        if (page->start + page->block_size + kGuardBytes > area.hi) return k.fail("one block and its tail guard run past its segment", at);
        if (page->used != 1 || page->free || page->local_free)
            return k.fail("one-block page in use must hold its block, its free and local_free lists empty", at);
        if (page->queue != kLargeQueue) return k.fail("one-block page outside the large queue", at);
    } else {
        if (!Layout::check_page_grid(k, s, page, area)) return false;
        unsigned bin = bin_of(page->block_size);
        bool full = page->queue == kFullQueue;
        Page copy = *page;   // what page_fast_checks would set (it reads the page's address)
        copy.start32 = static_cast<uint32_t>(page->start);
        copy.magic = magic_for(page->block_size);
        if (full) copy.limit = 0;
        else page_set_limit(&copy);
        if (copy.start32 != page->start32 || copy.magic != page->magic || copy.limit != page->limit)
            return k.fail(full ? "full page without the sentinel constants"
                               : "page validity constants differ from its block size and carved", at);
        k.seen = Seen{};
        int64_t nfree = mark_list(k, page, page->free, "free list leaves its page");
        if (nfree < 0) return false;
        int64_t nlocal = mark_list(k, page, page->local_free, "local_free list leaves its page");
        if (nlocal < 0) return false;
        int64_t used = page->used;
        int64_t uncarved = page->capacity - page->carved;
        if (used + nfree + nlocal + uncarved != page->capacity)
            return k.fail("used + |free| + |local_free| + uncarved != capacity", at,
                          static_cast<uint64_t>(used + nfree + nlocal + uncarved), page->capacity);
        if (full && (nfree || nlocal || uncarved)) return k.fail("page in the full queue has room", at);
        if (!full && page->queue != bin) return k.fail("page queued under another bin", at, page->queue, bin);
        // A retiring page may have been allocated from since (the fast path does not clear
        // retire_expire; the next collection does), but it must be where collection looks.
        if (page->retire_expire && !page_retired_in_place(page->heap, page))
            return k.fail("retiring page outside the heap's retired range", at);
    }
    uint64_t used = page->used;
    *live_blocks += used;
    *live_bytes += used * page->block_size;
    return true;
}

bool check_segment(Checker& k, Segment* s, uint64_t* live_blocks, uint64_t* live_bytes,
                   uint64_t* pages_in_use, uint64_t* committed) {
    uintptr_t at = addr(s);
    if (at & kSegmentMask) return k.fail("segment not aligned to 4 MiB", at);
    if (map_lookup(s) != s) return k.fail("segment missing from the segment map", at);
    // Huge: whole chunks, more than one; small, medium, large: one.
    auto kind = static_cast<PageKind>(s->kind);
    bool size_ok = s->size == kSegmentSize;
    if (kind == PageKind::huge) size_ok = s->size > kSegmentSize && !(s->size & kSegmentMask);
    if (s->kind <= static_cast<uint8_t>(PageKind::huge) && !size_ok) return k.fail("segment size wrong for its kind", at);
    uint32_t in_use = 0;
    if (!Layout::check(k, s, &in_use, [&](Page* page) { return check_page(k, s, page, live_blocks, live_bytes); }))
        return false;
    bool open_kind = s->kind == static_cast<uint8_t>(PageKind::small) || s->kind == static_cast<uint8_t>(PageKind::medium);
    bool should_be_open = open_kind && !s->cached && in_use && Layout::takeable(s);   // [S3.73]
    if (s->on_open_list != should_be_open) return k.fail("segment open-list membership wrong", at);
    *pages_in_use += in_use;
    *committed += kMetaSize + s->committed;
    return true;
}

bool list_holds(Segment* head, Segment* s) {
    for (Segment* t = head; t; t = t->next_open)
        if (t == s) return true;
    return false;
}

// Queues: every page in use appears once, in its own heap, in the queue it names.
bool check_heap_queues(Checker& k, Heap* heap, uint64_t* pages_seen) {
    for (unsigned qi = 0; qi < kQueueCount; ++qi) {
        PageQueue& q = heap->queues[qi];
        Page* prev = nullptr;
        for (Page* page = q.first; page; page = page->next) {
            if (!segment_owned(page) || !page->in_use) return k.fail("queued page not in use", addr(page));
            if (page->heap != heap) return k.fail("page queued in another heap", addr(page));
            if (page->queue != qi) return k.fail("page's queue field names another queue", addr(page), page->queue, qi);
            if (page->prev != prev) return k.fail("page queue prev link broken", addr(page));
            if (page->check_stamp == g_stamp) return k.fail("page in two queues (or a queue cycle)", addr(page));
            page->check_stamp = g_stamp;
            ++*pages_seen;
            prev = page;
        }
        if (q.last != prev) return k.fail("page queue last pointer wrong", addr(&q));
    }
    return true;
}

// Every direct slot names its bin's first page, or the empty page ([S3.21]). Checked before
// anything else: it reads only each queue's head, and a stale slot is the cause of what it
// breaks later (the fast path serves the slot's requests from a page that left the bin, which
// ends up filed under another queue than its own): named first, the cause is what is reported.
bool check_direct(Checker& k, Heap* heap) {
    for (unsigned i = 0; i < kDirectSlots; ++i) {
        unsigned bin = bin_of(std::size_t{i} * 8);
        Page* first = heap->queues[bin].first;
        if (heap->direct[i] != (first ? first : &g_empty_page))
            return k.fail("direct slot does not name its bin's first page", addr(heap), i, bin);
    }
    return true;
}

}  // namespace

CheckResult check_heap() {
    Checker k;
    uint64_t live_blocks = 0, live_bytes = 0, pages_in_use = 0, committed = 0, pages_seen = 0;
    if (++g_stamp == 0) {   // wrapped: no page may keep a stamp from 65535 checks ago
        for (Segment* s = first_segment(); s; s = s->next)
            for (uint32_t i = 0; i < s->page_count; ++i) s->pages()[i].check_stamp = 0;
        g_stamp = 1;
    }
    if (g_empty_page.free || g_empty_page.local_free) k.fail("the empty page is not empty", addr(&g_empty_page));
    // [S3.60] The map's window is one of its leaves, whole: its base starts that leaf's range.
    // Before the first leaf it has no chunks and no leaf.
    uintptr_t window_root = g_map_window.base >> (kLeafBits + kSegmentShift);
    if (g_map_window.chunks == 0 ? g_map_window.leaf != nullptr
                                 : (g_map_window.chunks != kLeafEntries ||
                                    (g_map_window.base & ((uintptr_t{1} << (kLeafBits + kSegmentShift)) - 1)) != 0 ||
                                    window_root >= kRootEntries || g_segment_map.leaf[window_root] != g_map_window.leaf))
        k.fail("the segment map's window is not one of its leaves", g_map_window.base);
    for (Heap* heap = first_heap(); heap && k.result.ok; heap = heap->next) check_direct(k, heap);
    unsigned cached = 0;
    std::size_t cached_committed = 0;
    HugeTotals huge;   // [S3.78] summed anew
    for (Segment* s = first_segment(); s && k.result.ok; s = s->next) {
        if (s->next && s->next->prev != s) k.fail("segment list links broken", addr(s));
        if (Layout::live_huge(s)) Layout::huge_add(huge, s);
        check_segment(k, s, &live_blocks, &live_bytes, &pages_in_use, &committed);
        if (s->cached) {
            ++cached;
            cached_committed += s->size <= kSegmentSize ? s->committed : 0;
            if (!list_holds(first_cached_segment(), s)) k.fail("cached segment not in the cache", addr(s));
        }
        if (s->on_open_list && !list_holds(first_open_segment(static_cast<PageKind>(s->kind)), s))
            k.fail("open segment not on its kind's list", addr(s));
        bool on_purge = false;
        for (Segment* t = first_purge_segment(); t; t = t->next_purge) on_purge |= t == s;
        bool large_kept = s->cached && s->page_count == 1 && s->committed;
        if (on_purge != (s->on_purge_list != 0) || on_purge != (s->dirty_pages != 0 || large_kept))
            k.fail("purge list membership differs from the memory waiting to be decommitted", addr(s));
    }
    if (k.result.ok && (cached != segment_cache_count() || cached > kCacheSegments))
        k.fail("segment cache count wrong", 0, segment_cache_count(), cached);
    if (k.result.ok && (cached_committed != segment_cache_committed() || cached_committed > kCacheCommitted))   // [S3.87]
        k.fail("segment cache's committed bytes differ from its 4 MiB segments'", 0, segment_cache_committed(), cached_committed);
    if (k.result.ok && (huge.reach != huge_totals().reach || huge.committed != huge_totals().committed))
        k.fail("live huge blocks' totals differ from their segments'", 0, huge_totals().committed, huge.committed);
    uint64_t heap_bytes = 0;
    for (Heap* heap = first_heap(); heap && k.result.ok; heap = heap->next) {
        uint64_t before = pages_seen;
        check_heap_queues(k, heap, &pages_seen);
        if (k.result.ok && pages_seen - before != heap->page_count)
            k.fail("heap page count wrong", addr(heap), heap->page_count, pages_seen - before);
        if (!heap->is_default) heap_bytes += (sizeof(Heap) + kOsPage - 1) & ~(kOsPage - 1);
    }
    MappedTotals mapped = mapped_totals(kStageNumber);   // [S3.56] blocks of their own mappings
    live_blocks += mapped.blocks;
    live_bytes += mapped.usable_bytes;
    committed += mapped.footprint;
    if (k.result.ok && pages_seen != pages_in_use)
        k.fail("pages in use missing from every queue", 0, pages_in_use, pages_seen);
    if (k.result.ok && committed + heap_bytes != os_counters().footprint)
        k.fail("footprint differs from the committed bytes of segments, heaps and mappings", 0,
               os_counters().footprint, committed + heap_bytes);
    if (k.result.ok && g_counting &&
        (g_counters.live_blocks != live_blocks || g_counters.live_bytes != live_bytes))
        k.fail("statistics disagree with the pages' used counts", 0, g_counters.live_blocks, live_blocks);
    k.result.live_blocks = live_blocks;
    k.result.live_bytes = live_bytes;
    // Free blocks: list nodes plus uncarved blocks are all "free" capacity; report the lists.
    uint64_t free_blocks = 0;
    for (Segment* s = first_segment(); s && k.result.ok; s = s->next)
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &s->pages()[i];
            if (!page->in_use || s->page_count == 1) continue;
            free_blocks += static_cast<uint64_t>(list_length(page, page->free) + list_length(page, page->local_free));
        }
    k.result.free_blocks = free_blocks;
    return k.result;
}

// [S3.30] The walk: each segment (depth 0, meta); inside it the metadata and each page
// (depth 1: meta = in use, unused = free); inside each page in use its blocks (depth 2: used
// or free), then its uncarved blocks as one unused run. Free blocks are found by marking the
// page's two lists first, so blocks come out in address order. The blocks of their own
// mappings come first, each a mapping (depth 0) holding its record and its block (1) ([S3.56]).
void walk_heap(WalkFn visit, void* context) {
    if (!mapped_walk(kStageNumber, visit, context)) return;
    for (Segment* s = first_segment(); s; s = s->next) {
        if (!visit(WalkEntry{"segment", WalkState::meta, s, s->size, 0}, context)) return;
        if (!visit(WalkEntry{"segment metadata", WalkState::meta, s, kMetaSize, 1}, context)) return;
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &s->pages()[i];
            Span area = page_area(s, page);
            auto* lo = reinterpret_cast<void*>(area.lo);
            WalkState state = page->in_use ? WalkState::meta : WalkState::unused;
            if (!visit(WalkEntry{"page", state, lo, area.hi - area.lo, 1}, context)) return;
            if (!page->in_use) continue;
            Seen seen;
            if (s->page_count != 1) {
                for (Block* list : {page->free, page->local_free}) {
                    uint32_t steps = 0;
                    for (Block* b = list; b && page_owns_block(page, addr(b)) && steps++ < page->capacity;
                         b = decode_block(page, b)) {
                        seen.mark(index_of(page, b));
                    }
                }
            }
            for (uint32_t bi = 0; bi < page->carved; ++bi) {
                bool is_free = seen.has(bi);
                auto* block = reinterpret_cast<void*>(page->start + uintptr_t{bi} * page->block_size);
                if (!visit(WalkEntry{"block", is_free ? WalkState::free : WalkState::used, block,
                                     page->block_size, 2},
                           context))
                    return;
            }
            if (page->carved < page->capacity) {
                auto* rest = reinterpret_cast<void*>(page->start + uintptr_t{page->carved} * page->block_size);
                std::size_t bytes = std::size_t{page->capacity - page->carved} * page->block_size;
                if (!visit(WalkEntry{"uncarved", WalkState::unused, rest, bytes, 2}, context)) return;
            }
        }
    }
}

}  // namespace edu::stage3
