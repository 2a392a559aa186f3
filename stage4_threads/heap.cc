// stage4_threads/heap.cc: the generic malloc path, the direct cache, full pages. The queues and
// retirement are stage 3's (queues.h). Everything here runs on the heap's own thread.
#include "stage4_threads/heap.h"

#include <cerrno>

#include "contract/diagnostics.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/queues.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/free.h"
#include "stage4_threads/os.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/stats.h"

namespace edu::stage4 {
namespace {

using stage3::bin_kind;
using stage3::bin_of;
using stage3::direct_slots_of;

// The direct cache follows the first page of each bin up to 1 KiB, as in stage 3.
void update_direct(Heap* heap, unsigned queue) {
    // [lab S3.direct copy begin]
    if (queue >= kBinCount) return;
    stage3::SlotRange r = direct_slots_of(queue);
    Page* first = heap->queues[queue].first;
    for (unsigned i = r.first; i <= r.last; ++i) heap->direct[i] = first ? first : &g_empty_page;
    // [lab S3.direct copy end]
}

// Stage 3's queues and retirement (queues.h, S3.18 and S3.41), on stage 4's records.
struct QueueTraits {
    using Heap = stage4::Heap;
    using Page = stage4::Page;
    static void direct_changed(Heap* heap, unsigned queue) { update_direct(heap, queue); }
    static void page_free(Heap* heap, Page* page) { stage4::page_free(heap, page); }
    static Page* page_alloc(Heap* heap, PageKind kind) { return stage4::page_alloc(heap, kind); }
    static bool page_format(Page* page, Heap* heap, unsigned bin) { return stage4::page_format(page, heap, bin); }
    static void page_release(Heap* heap, Page* page) { stage4::page_release(heap, page); }
};
using Queues = stage3::PageQueues<QueueTraits>;

// Runs every 64 ticks of the heap's clock: delayed work that needs no hurry.
void heap_tick(Heap* heap) {
    if (!heap->trimmed && arena_lazy()) segment_trim_held(heap);   // [S4.68]
    if (purge_pending(heap)) segment_purge(heap, false);
    if (heap->cache_count != 0) segment_cache_collect(heap, false);
}

// [S4.42] Reclaiming on demand: before the heap would take memory from the arena for a page of
// `bin`, it adopts abandoned segments, one at a time, up to kReclaimBatch, and stops as soon as
// it has what it lacked: a page of the bin, an open segment of the kind, or an empty segment in
// its cache. Reclaiming more would only move empty segments from the abandoned pool into a
// cache that overflows (back to the arena, a system call) while another thread, finding the
// pool empty, claims fresh ones (another system call, and page faults).
bool reclaim_for(Heap* heap, unsigned bin) {
    bool any = false;
    for (unsigned i = 0; i < kReclaimBatch && abandoned_count() != 0; ++i) {
        if (heap->queues[bin].first || heap->cache_count || heap->open[bin_kind(bin) == PageKind::small ? 0 : 1]) break;
        if (!heap_reclaim(heap, 1)) break;
        any = true;
    }
    return any;
}

// Whether `page` has a free block once its own frees and the remote ones are taken back.
bool page_take_frees(Page* page) {
    page_collect_local(page);
    if (!page->free && page_has_remote(page)) page_collect_remote(page);
    return page->free != nullptr;
}

// A page of `bin` with a free block, or nullptr when no memory can be had.
Page* find_page(Heap* heap, unsigned bin) {
    for (int round = 0; round < 2; ++round) {
        for (Page* page = heap->queues[bin].first; page != nullptr;) {
            Page* next = page->next;
            if (page_take_frees(page)) return page;
            if (page->carved < page->capacity && page_extend(page)) return page;
            if (!page_to_full(heap, page)) return page;   // remote frees arrived meanwhile
            page = next;
        }
        if (round != 0 || !reclaim_for(heap, bin)) break;
    }
    if (heap->retired_min <= heap->retired_max) Queues::collect_retired(heap, false);
    // S3.62's fresh page (queues.h): one whose first blocks cannot be mapped goes back, and is
    // asked for once more after the heap has given back what no live block needs ([S4.69]).
    Page* page = Queues::push_fresh(heap, bin, [heap] { return heap_relieve(heap); });
    if (page && counting()) sample_peak();
    return page;
}

// [S4.82] Stage 3's S3.75: no page of `bin` can be had, so a free block of a larger bin's page
// of this heap serves (its own frees and the remote ones collected), rather than NULL while the
// heap holds free blocks that fit. No extension, no fresh page, no reclaim. [S4.115] Stage 3's
// S3.97: for an aligned request, only a larger bin whose blocks keep its alignment.
Page* find_larger(Heap* heap, unsigned bin, std::size_t alignment) {
    for (unsigned larger = bin + 1; larger < kBinCount; ++larger) {
        if (!stage3::bin_keeps_alignment(larger, alignment)) continue;
        for (Page* page = heap->queues[larger].first; page != nullptr; page = page->next)
            if (page_take_frees(page)) return page;
    }
    return nullptr;
}

}  // namespace

void page_free(Heap* heap, Page* page) {
    queue_remove(heap, page);
    --heap->page_count;
    page_release(heap, page);
}

// ---- Queues ---------------------------------------------------------------------------------

void queue_push_front(Heap* heap, unsigned queue, Page* page) { Queues::push_front(heap, queue, page); }
void queue_push_back(Heap* heap, unsigned queue, Page* page) { Queues::push_back(heap, queue, page); }
void queue_remove(Heap* heap, Page* page) { Queues::remove(heap, page); }
bool page_retired_in_place(const Heap* heap, const Page* page) { return Queues::retired_in_place(heap, page); }

bool page_to_full(Heap* heap, Page* page) {
    if (page_set_delay(page, Delay::to_heap, false) & ~kDelayMask) {
        page_set_delay(page, Delay::to_page, false);
        page_collect_remote(page);
        return false;
    }
    queue_remove(heap, page);
    page_fast_checks(page, false);   // local frees into it go generic, as in stage 3
    page->retire_expire = 0;
    queue_push_front(heap, kFullQueue, page);
    return true;
}

// ---- Allocation -----------------------------------------------------------------------------

Heap* heap_for_caller(Heap* heap) { return heap != &g_empty_heap ? heap : heap_acquire(); }

namespace {

// The checked pop of the generic path: as the fast path's, and the decoded link's test.
inline void* generic_pop(Heap* heap, Page* page, std::size_t requested) {
    Block* b = page->free;
    if (!block_in_page_chunk(b, page)) stage3::die_wild_head(kStageName, "malloc", b);   // (S3.65)
    if (b->mark != freed_mark(b)) freed_twice(b);   // as on the fast path (S4.32)
    uintptr_t next = decode(page, b->link);          // in either mode: keys {0, 0} when off
    if (next != 0 && !page_owns_block(page, next)) stage3::die_corrupted_link(kStageName, "malloc", b);
    page->free = reinterpret_cast<Block*>(next);
    ++page->used;
    page->retire_expire = 0;
    b->mark = 0;
    if (counting()) count_malloc(heap, requested, page->block_size);
    return b;
}

// [S4.91] Stage 3's S3.85: the first page of the bin, its frees taken back, serves most
// calls, and makes no system call. Only what follows it (extension, a fresh page, a limit's
// refusals) may fail one before the call succeeds, so only that pays for errno. Here when the
// first page's own frees did not serve (malloc_after_tick): its remote frees, then the queue.
[[gnu::noinline]] void* malloc_from_queue(Heap* heap, unsigned bin, std::size_t requested, std::size_t alignment) {
    Page* page = heap->queues[bin].first;
    if (!page || !page_take_frees(page)) {
        int saved = errno;
        page = find_page(heap, bin);
        if (!page) page = find_larger(heap, bin, alignment);   // [S4.82]
        if (!page) return enomem();
        errno = saved;   // a call that succeeds leaves errno as it was
    }
    return generic_pop(heap, page, requested);
}

// What malloc_generic does once the heap is the caller's and its chores are done.
inline void* malloc_after_tick(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (size > kMediumMax) return malloc_one_block(heap, size, kAlignment, requested);
    unsigned bin = bin_of(size);
    Page* page = heap->queues[bin].first;
    if (page) page_collect_local(page);
    if (!page || !page->free) return malloc_from_queue(heap, bin, requested, alignment);
    return generic_pop(heap, page, requested);
}

// The calls that find work first: no heap yet, or past the exit hook, frees other threads
// handed over, the clock's 64th tick.
[[gnu::noinline]] void* malloc_with_chores(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (past_exit_hook(heap)) [[unlikely]]     // [S4.92]
        return with_borrowed_heap([=] {
            if (alignment > kAlignment) return malloc_generic_aligned(size, requested, heap, alignment);
            return malloc_generic(size, requested, heap);
        });
    heap = heap_for_caller(heap);
    if (!heap) return enomem();
    if (heap->delayed_free.load(std::memory_order_relaxed) != nullptr) heap_delayed_free(heap);
    if ((++heap->clock & 63) == 0) heap_tick(heap);
    return malloc_after_tick(size, requested, heap, alignment);
}

// malloc_generic's body, for malloc's alignment or an aligned request's ([S4.115]).
inline void* generic(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (size > kMaxRequest) return enomem();   // before a heap exists: nothing changes
    if (heap == &g_empty_heap || heap == nullptr || heap->delayed_free.load(std::memory_order_relaxed) != nullptr ||
        ((heap->clock + 1) & 63) == 0) [[unlikely]]
        return malloc_with_chores(size, requested, heap, alignment);
    ++heap->clock;
    return malloc_after_tick(size, requested, heap, alignment);
}

}  // namespace

// [S4.107] Stage 3's S3.94: every call out of here is a tail call, the chores' and the queue's
// in functions of their own, so the common call (the heap is the caller's, nothing to do on
// this tick, the bin's first page serves) runs without a stack frame.
void* malloc_generic(std::size_t size, std::size_t requested, Heap* heap) {
    return generic(size, requested, heap, kAlignment);
}

void* malloc_generic_aligned(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    return generic(size, requested, heap, alignment);
}

void* malloc_one_block(Heap* heap, std::size_t size, std::size_t alignment, std::size_t requested) {
    heap = heap_for_caller(heap);
    if (!heap) return enomem();
    if (heap->cache_count == 0 && abandoned_count() != 0) heap_reclaim(heap, 1);
    // [S4.66] Under an address-space limit every byte a segment maps counts: a fresh one-block
    // segment holds its 12 KiB header and its block rounded up to 64 KiB slots (S4.67), a whole
    // 4 MiB slot in a reserved arena. A block that would claim one gets a mapping of its own
    // instead (contract/mapped.h, as S4.51), which holds its pages and one page more, outside
    // the arena, as glibc maps its large blocks. Without a limit nothing changes: one getrlimit
    // next to the system calls a fresh segment costs anyway. [S4.68] A limit set after the arena
    // was reserved makes arena_limited give back the slots no segment holds first, or no new
    // mapping would fit; a refused mapping is still not the end: an arena slot may serve.
    // [S4.83] A data limit charges a fresh segment's slots too, not the arena's reservation: the
    // same mapping of its own (arena_limited asks about both limits: [S4.84]).
    if (heap->cache_count == 0 && arena_limited()) {
        if (void* p = stage3::under_pressure([=] { return alloc_mapped(alignment, size); },
                                             [heap] { return heap_relieve(heap); }))   // [S4.69]
            return p;
    }
    Page* page = one_block_page_alloc(heap, size == 0 ? 1 : size, alignment);
    if (!page) return enomem();
    ++heap->page_count;
    queue_push_front(heap, kLargeQueue, page);
    auto* b = reinterpret_cast<Block*>(page->start);
    b->mark = 0;   // a reused large segment holds whatever its last block held
    if (counting()) {
        count_malloc(heap, requested, page->block_size);
        sample_peak();
    }
    return b;
}

// ---- Frees that reach the heap --------------------------------------------------------------

void page_event(Heap* heap, Page* page) {
    if (page->queue == kFullQueue) {   // a block is free again: back to its bin, at the end
        page_set_delay(page, Delay::to_page, false);
        page_fast_checks(page, true);
        queue_remove(heap, page);
        queue_push_back(heap, bin_of(page->block_size), page);
    }
    if (page->used == 0) Queues::retire(heap, page);
}

void page_push_local(Heap* heap, Page* page, Block* b) {
    b->mark = freed_mark(b);
    b->link = encode(page, reinterpret_cast<uintptr_t>(page->local_free));
    page->local_free = b;
    if (--page->used == 0 || page->queue == kFullQueue) page_event(heap, page);
}

void heap_collect(Heap* heap, bool force) {
    if (heap->retired_min <= heap->retired_max) Queues::collect_retired(heap, force);
    segment_purge(heap, force);
    segment_cache_collect(heap, force);
}

// [S4.69] Under pressure: what no live block needs goes back. Every abandoned segment is taken
// (heap_reclaim: one fetch_and each, as S4.27), so the empty ones land in this heap's cache and
// those with live blocks in its lists; then its retired pages, the purge and the cache, all of
// them at once (heap_collect), so the empty segments go back to the arena (unmapped, in a lazy
// arena); then what its segments keep writable beyond what their pages in use reach.
bool heap_relieve(Heap* heap) {
    bool any = orphans_abandon();   // [S4.97]
    any |= abandoned_count() != 0 && heap_reclaim(heap, ~0u);
    any |= heap->retired_min <= heap->retired_max || purge_pending(heap) || heap->cache_count != 0;
    heap_collect(heap, true);
    return segment_shrink(heap) || any;
}

}  // namespace edu::stage4
