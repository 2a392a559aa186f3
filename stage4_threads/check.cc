// stage4_threads/check.cc: check_heap verifies the segments, pages and lists the caller may
// read, its own heap's queues, direct cache, lists and delayed frees, and (when no other thread
// can be working) the footprint and the counters; walk_heap reports segments (depth 0), pages
// (1), blocks (2), and the blocks of contract/mapped.h; count_live adds up live blocks.
#include "stage4_threads/check.h"

#include <initializer_list>

#include "contract/diagnostics.h"
#include "contract/mapped.h"
#include "stage3_segments/bins.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/os.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/stats.h"

namespace edu::stage4 {

// [S4.34] What the checker and the walker may read while other threads run. A segment of the
// calling thread's heap: everything (its other threads only push on the shared lists, whose
// nodes stay put until this thread takes them). An abandoned segment: everything, after
// borrowing it (abandon.h), which keeps reclaimers away until it is given back. A segment of
// another live thread: only its arena start marker; its pages change under the reader without
// any synchronisation, so they are skipped (the walker shows the segment as one opaque entry).
// Totals that span all threads (footprint, counters against pages) are compared only when no
// other heap is in use and no heap, segment or commitment changed during the check: then every
// segment was read and the numbers stood still. Orphaned records ([S4.97]) are abandoned first.
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

enum class Access { own, borrowed, other };

bool is_abandoned(uint32_t slot) { return (abandoned_word(slot / 64) >> (slot % 64)) & 1; }

// Visits every published segment of the arena with what the caller may do with it; stops early
// (returning false) when `visit` returns false. Borrowed segments are given back either way.
template <class Visit>
bool each_segment(Visit visit) {
    if (arena_bytes() == 0) return true;
    const Heap* me = t_heap;
    uint32_t slots = arena_slots();
    for (uint32_t slot = 0; slot < slots;) {
        uint32_t blocks = arena_blocks_at(slot);
        if (blocks == 0) {
            ++slot;
            continue;
        }
        Segment* s = arena_segment(slot);
        bool go;
        if (me->owned[slot]) {
            go = visit(s, slot, blocks, Access::own);
        } else if (is_abandoned(slot) && segment_borrow(slot)) {
            go = visit(s, slot, blocks, Access::borrowed);
            segment_unborrow(slot);
        } else {
            go = visit(s, slot, blocks, Access::other);
        }
        if (!go) return false;
        slot += blocks;
    }
    return true;
}

const Block* remote_list(const Page* page) {
    return block_of(page->xthread_free.load(std::memory_order_acquire));
}

// Blocks of `page` on the heap's delayed list, each marked in `seen` if given.
int64_t delayed_in_page(const Heap* heap, const Page* page, Seen* seen) {
    int64_t n = 0;
    for (const Block* b = heap->delayed_free.load(std::memory_order_acquire); b != nullptr; b = chain_next(b)) {
        if (stage4::page_of(b) != page || !page_holds(page, addr(b), page->carved)) continue;
        if (seen) seen->mark(index_of(page, b));
        ++n;
    }
    return n;
}

struct Checker {
    CheckResult result;
    Heap* heap = t_heap;             // the caller's (the empty heap if it has none)
    uint64_t committed = 0;          // metadata and committed bytes of the segments read
    uint64_t own_segments = 0;
    uint64_t own_pages = 0;
    uint32_t skipped = 0;            // segments of other threads
    Seen seen;

    bool fail(const char* what, uintptr_t where = 0, uint64_t a = 0, uint64_t b = 0) {
        if (!result.ok) return false;
        result.ok = false;
        LineWriter w(result.message, sizeof result.message);
        w.str(what);
        if (where) w.str(" at ").hex(where);
        if (a || b) w.str(" (").dec(a).str(" vs ").dec(b).str(")");
        return false;
    }
};

// Marks one list's blocks; its length, or -1 after a failure. A remote free may have left the
// suspect mark (S4.46) on a block of xthread_free (`shared`), for the owner to settle.
int64_t mark_list(Checker& k, const Page* page, const Block* head, const char* name, bool shared = false) {
    int64_t n = 0;
    for (const Block* b = head; b != nullptr; b = next_of(page, b)) {
        if (!page_holds(page, addr(b), page->carved)) return k.fail(name, addr(b)), -1;
        if (k.seen.mark(index_of(page, b)))
            return k.fail("block twice on the free lists (a cycle or a double free)", addr(b)), -1;
        if (b->mark != freed_mark(b) && (!shared || b->mark != suspect_mark(b)))
            return k.fail("free block lacks the freed mark", addr(b)), -1;
        ++n;
    }
    return n;
}

bool check_one_block(Checker& k, const Page* page, Span area, Access access, int64_t remote,
                     int64_t delayed) {
    uintptr_t at = addr(page);
    if (page->bin != kOneBlockBin || page->capacity != 1 || page->carved != 1 || page->magic != 1 || page->limit != 0 ||
        page->start32 != static_cast<uint32_t>(page->start))
        return k.fail("one-block page with list constants", at);
    if (page->start + page->block_size + stage3::kGuardBytes > area.hi) return k.fail("one block and its tail guard run past its segment", at);
    if (page->used != 1 || page->free || page->local_free)
        return k.fail("one-block page in use must hold its block, its free and local_free lists empty", at);
    if (access == Access::own && page->queue != kLargeQueue) return k.fail("one-block page outside the large queue", at);
    if (remote + delayed > 1) return k.fail("one block freed twice by other threads", at);
    k.result.live_blocks += static_cast<uint64_t>(1 - remote - delayed);
    k.result.live_bytes += static_cast<uint64_t>(1 - remote - delayed) * page->block_size;
    k.result.free_blocks += static_cast<uint64_t>(remote + delayed);
    return true;
}

// [S4.35] Per page in use: stage 3's checks (S3.29) and
//    used + |free| + |local_free| + uncarved == capacity
//    |xthread_free| + |its blocks on the delayed list| <= used
//    page->heap is the owner (nullptr when abandoned); Delay never exactly when abandoned;
//    Delay to_heap only in the full queue or on a one-block page
bool check_page(Checker& k, Segment* s, Page* page, Access access) {
    uintptr_t at = addr(page);
    const Heap* owner = access == Access::own ? k.heap : nullptr;
    if (page->heap.load(std::memory_order_relaxed) != owner)
        return k.fail(owner ? "page's heap is not its segment's owner" : "page of an abandoned segment names a heap", at);
    Delay delay = delay_of(page->xthread_free.load(std::memory_order_acquire));
    if ((delay == Delay::never) != (access == Access::borrowed))
        return k.fail("page's delay state is never exactly when its segment is abandoned", at,
                      static_cast<uint64_t>(delay));
    Span area = page_area(s, page);
    if (page->start < area.lo || page->start >= area.hi) return k.fail("page start outside its area", at);
    if (page->carved == 0 || page->carved > page->capacity)
        return k.fail("page carved count out of range", at, page->carved, page->capacity);
    k.seen = Seen{};
    int64_t remote = mark_list(k, page, remote_list(page), "xthread_free list leaves its page", true);
    if (remote < 0) return false;
    int64_t delayed = access == Access::own ? delayed_in_page(k.heap, page, nullptr) : 0;
    if (s->page_count == 1) return check_one_block(k, page, area, access, remote, delayed);
    if (!Layout::check_page_grid(k, s, page, area)) return false;   // stage 3's (S3.29)
    unsigned bin = stage3::bin_of(page->block_size);
    if (page->bin != bin) return k.fail("page's bin differs from its block size", at, page->bin, bin);
    bool full = page->queue == kFullQueue;
    uint32_t start32 = full ? static_cast<uint32_t>(addr(s) - 1) : static_cast<uint32_t>(page->start);
    uint64_t magic = full ? 1 : kBinTests.bins[bin].magic;
    uint64_t limit = full ? 0 : (uint64_t{page->carved} - 1) * kBinTests.bins[bin].step;
    if (page->start32 != start32 || page->magic != magic || page->limit != limit)
        return k.fail(full ? "full page without the sentinel constants"
                           : "page validity constants differ from its block size and carved", at);
    int64_t nfree = mark_list(k, page, page->free, "free list leaves its page");
    if (nfree < 0) return false;
    int64_t nlocal = mark_list(k, page, page->local_free, "local_free list leaves its page");
    if (nlocal < 0) return false;
    int64_t used = page->used, uncarved = page->capacity - page->carved;
    if (used + nfree + nlocal + uncarved != page->capacity)
        return k.fail("used + |free| + |local_free| + uncarved != capacity", at,
                      static_cast<uint64_t>(used + nfree + nlocal + uncarved), page->capacity);
    if (remote + delayed > used)
        return k.fail("more blocks freed by other threads than the page has in use", at,
                      static_cast<uint64_t>(remote + delayed), page->used);
    if (full && (nfree || nlocal || uncarved)) return k.fail("page in the full queue has room", at);
    if (access == Access::own) {
        if (!full && page->queue != bin) return k.fail("page queued under another bin", at, page->queue, bin);
        if (delay == Delay::to_heap && !full) return k.fail("page outside the full queue takes delayed frees", at);
        if (page->retire_expire && !page_retired_in_place(k.heap, page))
            return k.fail("retiring page outside the heap's retired range", at);
    }
    k.result.live_blocks += static_cast<uint64_t>(used - remote - delayed);
    k.result.live_bytes += static_cast<uint64_t>(used - remote - delayed) * page->block_size;
    k.result.free_blocks += static_cast<uint64_t>(nfree + nlocal + remote + delayed);
    return true;
}

bool check_segment(Checker& k, Segment* s, uint32_t slot, uint32_t blocks, Access access) {
    uintptr_t at = addr(s);
    if (s->slot != slot || s->blocks != blocks) return k.fail("segment header disagrees with its start marker", at);
    if (!arena_claimed(slot, blocks)) return k.fail("segment's arena slots are not all claimed", at);
    if (s->kind <= static_cast<uint8_t>(PageKind::huge) &&
        (s->size != std::size_t{blocks} << kSegmentShift || (s->kind == static_cast<uint8_t>(PageKind::huge)) != (blocks > 1)))
        return k.fail("segment size wrong for its kind", at);
    uint32_t in_use = 0;
    bool ok = Layout::check(k, s, &in_use, [&](Page* page) {
        if (access == Access::own) page->check_stamp = 0;   // the queue pass stamps it
        return check_page(k, s, page, access);
    });
    if (!ok) return false;
    bool open_kind = s->kind == static_cast<uint8_t>(PageKind::small) || s->kind == static_cast<uint8_t>(PageKind::medium);
    if (access == Access::borrowed && (s->cached || s->on_open_list || s->on_purge_list))
        return k.fail("abandoned segment still on its last heap's lists", at);
    if (access == Access::own) {
        bool should_be_open = open_kind && !s->cached && in_use && Layout::takeable(s);   // S3.73
        if (s->on_open_list != should_be_open) return k.fail("segment open-list membership wrong", at);
        if ((s->on_purge_list != 0) != (s->dirty_pages != 0 || (s->cached && !open_kind && s->committed)))
            return k.fail("purge list membership differs from the memory waiting to be decommitted", at);
        ++k.own_segments;
        k.own_pages += in_use;
    }
    k.committed += kMetaSize + s->committed;
    return true;
}

template <class Next>
bool list_holds(Segment* head, Segment* s, Next next) {
    for (Segment* t = head; t; t = next(t))
        if (t == s) return true;
    return false;
}

// The caller's heap: its segment lists, queues, direct cache and delayed list.
bool check_own_heap(Checker& k) {
    Heap* heap = k.heap;
    uint64_t count = 0;
    stage3::HugeTotals huge;   // [S4.85] summed anew
    for (Segment* s = heap->segments; s; s = s->next) {
        if (!heap->owned[s->slot] || arena_blocks_at(s->slot) == 0) return k.fail("heap lists a segment it does not own", addr(s));
        if (Layout::live_huge(s)) Layout::huge_add(huge, s);
        if (s->on_open_list && !list_holds(heap->open[s->kind == 0 ? 0 : 1], s, [](Segment* t) { return t->next_open; }))
            return k.fail("open segment not on its heap's open list", addr(s));
        if (s->cached && !list_holds(heap->cache, s, [](Segment* t) { return t->next_open; }))
            return k.fail("cached segment not in its heap's cache", addr(s));
        if (s->on_purge_list && !list_holds(heap->purge, s, [](Segment* t) { return t->next_purge; }))
            return k.fail("segment with dirty pages not on the purge list", addr(s));
        ++count;
    }
    if (huge.reach != heap->huge.reach || huge.committed != heap->huge.committed)
        return k.fail("heap's live huge blocks' totals differ from their segments'", addr(heap), heap->huge.committed, huge.committed);
    if (count != heap->segment_count || count != k.own_segments)
        return k.fail("heap segment count wrong", addr(heap), heap->segment_count, k.own_segments);
    uint64_t owned = 0;
    for (uint8_t byte : heap->owned) owned += byte;
    if (owned != count) return k.fail("owned[] marks other segments than the heap's", addr(heap), owned, count);
    uint32_t cached = 0;
    uint64_t cached_bytes = 0, cached_committed = 0;
    for (Segment* s = heap->cache; s; s = s->next_open) {
        cached += s->cached;
        cached_bytes += s->blocks > 1 ? s->size : 0;          // [S4.87] huge ones
        cached_committed += s->blocks == 1 ? s->committed : 0;   // [S4.89] one-slot ones
    }
    if (cached != heap->cache_count || cached > kCacheSegments) return k.fail("heap cache count wrong", addr(heap), heap->cache_count, cached);
    if (cached_bytes != heap->cache_bytes || cached_bytes > kCacheBytes)
        return k.fail("heap cache bytes wrong", addr(heap), heap->cache_bytes, cached_bytes);
    if (cached_committed != heap->cache_committed || cached_committed > kCacheCommitted)
        return k.fail("heap cache's committed bytes differ from its one-slot segments'", addr(heap), heap->cache_committed, cached_committed);
    uint64_t queued = 0;
    for (unsigned qi = 0; qi < kQueueCount; ++qi) {
        const PageQueue& q = heap->queues[qi];
        Page* prev = nullptr;
        for (Page* page = q.first; page; page = page->next) {
            uint32_t slot = arena_slot_of(page);
            if (slot == kArenaSlots || !heap->owned[slot] || !page->in_use) return k.fail("queued page not in use in a segment of the heap", addr(page));
            if (page->queue != qi) return k.fail("page's queue field names another queue", addr(page), page->queue, qi);
            if (page->prev != prev) return k.fail("page queue prev link broken", addr(page));
            if (page->check_stamp) return k.fail("page in two queues (or a queue cycle)", addr(page));
            page->check_stamp = 1;
            ++queued;
            prev = page;
        }
        if (q.last != prev) return k.fail("page queue last pointer wrong", addr(&q));
    }
    if (queued != heap->page_count || queued != k.own_pages)
        return k.fail("pages in use missing from the queues, or counted wrong", addr(heap), queued, k.own_pages);
    for (unsigned i = 0; i < kDirectSlots; ++i) {
        Page* first = heap->queues[stage3::bin_of(std::size_t{i} * 8)].first;
        if (heap->direct[i] != (first ? first : &g_empty_page))
            return k.fail("direct slot does not name its bin's first page", addr(heap), i);
    }
    for (const Block* b = heap->delayed_free.load(std::memory_order_acquire); b; b = chain_next(b)) {
        uint32_t slot = arena_slot_of(b);
        if (slot == kArenaSlots || !heap->owned[slot] || !stage4::page_of(b)->in_use || !page_holds(stage4::page_of(b), addr(b), stage4::page_of(b)->carved) ||
            (b->mark != freed_mark(b) && b->mark != suspect_mark(b)))
            return k.fail("delayed free list holds a block that is no freed block of the heap", addr(b));
    }
    return true;
}

bool check_empty_heap(Checker& k) {
    if (g_empty_page.free || g_empty_page.local_free || g_empty_page.used)
        return k.fail("the empty page is not empty", addr(&g_empty_page));
    for (Page* slot : g_empty_heap.direct)
        if (slot != &g_empty_page) return k.fail("the empty heap has a page", addr(&g_empty_heap));
    for (uint8_t byte : g_empty_heap.owned)
        if (byte) return k.fail("the empty heap owns a segment", addr(&g_empty_heap));
    return true;
}

// [S4.62] The blocks of their own mappings, which every thread may read (under their lock).
void add_mapped(Checker& k) {
    MappedTotals mapped = mapped_totals(kStageNumber);
    k.result.live_blocks += mapped.blocks;
    k.result.live_bytes += mapped.usable_bytes;
    k.committed += mapped.footprint;
}

// The cross-thread totals, when nothing else can move (see [S4.34]).
void check_totals(Checker& k) {
    uint64_t records = 0;
    for (Heap* h = first_record(); h; h = h->next_record) ++records;
    uint64_t footprint = os_counters().footprint.load(std::memory_order_relaxed);
    if (k.committed + records * record_bytes() != footprint)
        k.fail("footprint differs from the committed bytes of segments, heap records and mappings", 0, footprint,
               k.committed + records * record_bytes());
    if (k.result.ok && counting()) {
        Stats s = stats_snapshot();
        if (s.live_blocks != k.result.live_blocks || s.live_bytes != k.result.live_bytes)
            k.fail("statistics disagree with the pages' live blocks", 0, s.live_blocks, k.result.live_blocks);
    }
}

}  // namespace

CheckResult check_heap() {
    orphans_abandon();   // [S4.97] their segments become abandoned ones, which it may borrow
    Checker k;
    uint64_t generation = heap_generation();
    uint64_t changes = os_counters().changes.load(std::memory_order_relaxed);
    unsigned others = other_heaps_in_use();
    check_empty_heap(k);
    each_segment([&](Segment* s, uint32_t slot, uint32_t blocks, Access access) {
        if (access == Access::other) {
            ++k.skipped;
            return true;
        }
        return check_segment(k, s, slot, blocks, access);
    });
    add_mapped(k);
    if (k.result.ok && k.heap != &g_empty_heap) check_own_heap(k);
    bool still = others == 0 && other_heaps_in_use() == 0 && k.skipped == 0 && generation == heap_generation() &&
                 changes == os_counters().changes.load(std::memory_order_relaxed);
    if (k.result.ok && still) check_totals(k);
    return k.result;
}

LiveTotals count_live() {
    orphans_abandon();
    Checker k;
    each_segment([&](Segment* s, uint32_t slot, uint32_t blocks, Access access) {
        if (access != Access::other) check_segment(k, s, slot, blocks, access);
        return true;
    });
    add_mapped(k);
    return LiveTotals{k.result.live_blocks, k.result.live_bytes};
}

// [S4.36] The walk, as stage 3's (S3.30), over the segments the caller may read: each segment
// (depth 0), its metadata and pages (1), the blocks of a page in use (2: free when on free or
// local_free, remote when on xthread_free or the heap's delayed list, i.e. freed by another
// thread and not yet collected) and its uncarved rest. A segment of another live thread is one
// depth-0 entry, "segment (another thread's)", and nothing inside. The blocks of their own
// mappings come first, as in stage 3 (S3.30), a mapping (depth 0) around its record and block.
void walk_heap(WalkFn visit, void* context) {
    if (!mapped_walk(kStageNumber, visit, context)) return;
    orphans_abandon();
    const Heap* me = t_heap;
    each_segment([&](Segment* s, uint32_t, uint32_t blocks, Access access) {
        std::size_t size = std::size_t{blocks} << kSegmentShift;
        if (access == Access::other)
            return visit(WalkEntry{"segment (another thread's)", WalkState::meta, s, size, 0}, context);
        if (!visit(WalkEntry{"segment", WalkState::meta, s, size, 0}, context)) return false;
        if (!visit(WalkEntry{"segment metadata", WalkState::meta, s, kMetaSize, 1}, context)) return false;
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &s->pages()[i];
            Span area = page_area(s, page);
            auto* lo = reinterpret_cast<void*>(area.lo);
            if (!visit(WalkEntry{"page", page->in_use ? WalkState::meta : WalkState::unused, lo, area.hi - area.lo, 1},
                       context))
                return false;
            if (!page->in_use) continue;
            Seen seen, remote;
            auto mark = [&](const Block* list, Seen& into) {
                uint32_t steps = 0;
                for (const Block* b = list; b && page_holds(page, addr(b), page->carved) && steps++ < page->capacity;
                     b = next_of(page, b))
                    into.mark(index_of(page, b));
            };
            mark(page->free, seen);
            mark(page->local_free, seen);
            mark(remote_list(page), remote);
            if (access == Access::own) delayed_in_page(me, page, &remote);
            for (uint32_t bi = 0; bi < page->carved; ++bi) {
                auto* block = reinterpret_cast<void*>(page->start + uintptr_t{bi} * page->block_size);
                WalkState state = seen.has(bi) ? WalkState::free : remote.has(bi) ? WalkState::remote : WalkState::used;
                if (!visit(WalkEntry{"block", state, block, page->block_size, 2}, context)) return false;
            }
            if (page->carved < page->capacity) {
                auto* rest = reinterpret_cast<void*>(page->start + uintptr_t{page->carved} * page->block_size);
                std::size_t bytes = std::size_t{page->capacity - page->carved} * page->block_size;
                if (!visit(WalkEntry{"uncarved", WalkState::unused, rest, bytes, 2}, context)) return false;
            }
        }
        return true;
    });
}

}  // namespace edu::stage4
