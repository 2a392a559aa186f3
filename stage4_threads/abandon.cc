// stage4_threads/abandon.cc: abandoning a heap's segments at thread exit and reclaiming them.
#include "stage4_threads/abandon.h"

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include

#include "stage3_segments/bins.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/segment.h"

namespace edu::stage4 {
namespace {

template <class Visit>
void each_queued_page(Heap* heap, Visit visit) {
    for (unsigned q = 0; q < kQueueCount; ++q) {
        for (Page* page = heap->queues[q].first; page != nullptr;) {
            Page* next = page->next;   // visit may take the page out of its queue
            visit(page);
            page = next;
        }
    }
}

// Makes the pages of a reclaimed segment `heap`'s: every page in use gets its heap, its Delay
// state and its remote frees, then a queue; pages found empty go back to the segment last,
// because the last of them may give the whole segment back to the arena.
void adopt(Heap* heap, Segment* s) {
    segment_attach(heap, s);
    Page* pages = s->pages();
    uint64_t empty = 0;
    for (uint32_t i = 0; i < s->page_count; ++i) {
        Page* page = &pages[i];
        if (!page->in_use) continue;
        bool one_block = s->page_count == 1;
        // Relaxed: a remote thread reads page->heap only after it read Delay to_heap, and the
        // CAS below that sets to_heap is a release.
        page->heap.store(heap, std::memory_order_relaxed);
        page_set_delay(page, one_block ? Delay::to_heap : Delay::to_page, true);
        page_collect_remote(page);
        if (page->used == 0) {
            empty |= uint64_t{1} << i;
            continue;
        }
        ++heap->page_count;
        if (one_block) {
            queue_push_front(heap, kLargeQueue, page);
            continue;
        }
        page_collect_local(page);
        page_fast_checks(page, true);
        page->retire_expire = 0;   // retired and allocated from since: in use here (S3.54)
        queue_push_back(heap, stage3::bin_of(page->block_size), page);
        if (!page_has_room(page)) page_to_full(heap, page);
    }
    segment_settle(heap, s);
    while (empty != 0) {
        unsigned i = static_cast<unsigned>(__builtin_ctzll(empty));
        empty &= empty - 1;
        page_release(heap, &pages[i]);
    }
}

// Takes every abandoned segment in slot order, one abandoned_take each ([S4.27]: a slot another
// thread takes first is skipped), and hands its slot to `visit`, which returns false to stop
// the walk. Slots abandoned while it walks past their word are not seen. The first of lab
// S4.reclaim's two regions; abandoned_release_empty walks with it too ([S4.69]).
template <class Visit>
void take_abandoned(Visit visit) {
    // [lab S4.reclaim begin]
    uint32_t words = (arena_slots() + 63) / 64;
    for (uint32_t w = 0; w < words; ++w) {
        for (uint64_t bits = abandoned_word(w); bits != 0; bits &= bits - 1) {
            uint32_t slot = w * 64 + static_cast<uint32_t>(__builtin_ctzll(bits));
            if (!abandoned_take(slot)) continue;   // another thread was first
            if (!visit(slot)) return;
        }
    }
    // [lab S4.reclaim end]
}

// Frees what other threads gave back to `heap`'s pages: its delayed frees, then every page's
// remote frees; a page they emptied goes back to its segment (and the last page of a segment
// gives the segment back), and so does every empty page, retired ones too, when the heap is
// `leaving`; a full page with room again leaves the full queue. Step 2 of heap_abandon, and the
// first of lab S4.abandon's two regions; reclaim_on_free calls it too ([S4.63]).
void collect_remote_everywhere(Heap* heap, bool leaving) {
    // [lab S4.abandon begin]
    heap_delayed_free(heap);
    each_queued_page(heap, [heap, leaving](Page* page) {
        uint32_t collected = page_collect_remote(page);
        if (page->used == 0 && (collected || leaving)) page_free(heap, page);
        else if (collected && page->queue == kFullQueue) page_event(heap, page);   // room again
    });
    // [lab S4.abandon end]
}

}  // namespace

void heap_abandon(Heap* heap) {
    // [lab S4.abandon begin]
    each_queued_page(heap, [](Page* page) { page_set_delay(page, Delay::never, true); });   // 1
    collect_remote_everywhere(heap, true);                                                  // 2
    while (Segment* s = heap->segments) {                                                   // 3
        segment_detach(heap, s);
        for (uint32_t i = 0; i < s->page_count; ++i) s->pages()[i].heap.store(nullptr, std::memory_order_relaxed);
        abandoned_publish(s->slot);   // release: all of the above happens before its reclaim
    }
    for (PageQueue& q : heap->queues) q = PageQueue{nullptr, nullptr};                     // 4
    for (Page*& slot : heap->direct) slot = &g_empty_page;
    heap->page_count = 0;
    heap->retired_min = kBinCount;
    heap->retired_max = 0;
    heap->arena_hint = 0;
    // [lab S4.abandon end]
}

void heap_shed_empty(Heap* heap) {
    collect_remote_everywhere(heap, false);   // a page the remote frees emptied goes back
    heap_collect(heap, true);                 // then every retired page, and the cache
}

bool heap_reclaim(Heap* heap, unsigned max) {
    // [lab S4.reclaim begin]
    unsigned taken = 0;
    for (unsigned k = 0; k < kRecentAbandoned && taken < max; ++k) {   // newest first ([S4.44])
        uint32_t slot = abandoned_recent(k);
        if (slot == kArenaSlots || !abandoned_take(slot)) continue;
        adopt(heap, arena_segment(slot));
        ++taken;
    }
    if (taken < max) {   // then any, in slot order
        take_abandoned([heap, max, &taken](uint32_t slot) {
            adopt(heap, arena_segment(slot));
            return ++taken < max;
        });
    }
    return taken != 0;
    // [lab S4.reclaim end]
}

void reclaim_on_free(Heap* heap, const void* block) {
    uint32_t slot = arena_slot_of(segment_of(block));
    heap = heap_for_caller(heap);
    if (heap == nullptr || !abandoned_take(slot)) return;   // taken, or not yet published
    collect_remote_everywhere(heap, false);   // [S4.63] what it adopted before may be empty by now
    adopt(heap, arena_segment(slot));
}

bool abandoned_release_empty() {
    bool any = false;
    take_abandoned([&any](uint32_t slot) {
        Segment* s = arena_segment(slot);
        if (s->used_pages != 0) {
            abandoned_publish(slot);   // in use: abandoned again, for a heap to adopt
        } else {
            segment_give_back(s);   // detached already, by heap_abandon
            any = true;
        }
        return true;
    });
    return any;
}

bool segment_borrow(uint32_t slot) { return abandoned_take(slot); }
void segment_unborrow(uint32_t slot) { abandoned_publish(slot); }

}  // namespace edu::stage4
