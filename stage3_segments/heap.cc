// stage3_segments/heap.cc: the generic malloc path, the direct cache, full pages, and
// first-class heaps. The queues and retirement are queues.h's, shared with stage 4.
#include "stage3_segments/heap.h"

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include
#include <cerrno>
#include <cstring>

#include "contract/diagnostics.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/os.h"
#include "stage3_segments/page.h"
#include "stage3_segments/queues.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/stats.h"

namespace edu::stage3 {

constinit Page g_empty_page{};

namespace {

constexpr Heap make_default_heap() {
    Heap h{};
    for (Page*& slot : h.direct) slot = &g_empty_page;
    h.retired_min = kBinCount;
    h.retired_max = 0;
    h.is_default = 1;
    return h;
}

}  // namespace

constinit Heap g_default_heap = make_default_heap();

namespace {

Heap* g_heaps = &g_default_heap;   // the default heap is first and never leaves

unsigned bin_of_page(const Page* page) { return bin_of(page->block_size); }

// [S3.21] The direct cache follows the first page of each bin up to 1 KiB: the fast path
// never asks whether a page is in the right queue, it only pops whatever its slot names.
void update_direct(Heap* heap, unsigned queue) {
    // [lab S3.direct begin]
    if (queue >= kBinCount) return;
    SlotRange r = direct_slots_of(queue);
    Page* first = heap->queues[queue].first;
    Page* target = first ? first : &g_empty_page;
    for (unsigned i = r.first; i <= r.last; ++i) heap->direct[i] = target;
    // [lab S3.direct end]
}

void page_free(Heap* heap, Page* page) {
    queue_remove(heap, page);
    --heap->page_count;
    page_release(page);
}

// The queues and retirement are shared with stage 4 (queues.h): this is what stage 3 plugs in.
struct QueueTraits {
    using Heap = stage3::Heap;
    using Page = stage3::Page;
    static void direct_changed(Heap* heap, unsigned queue) { update_direct(heap, queue); }
    static void page_free(Heap* heap, Page* page) { stage3::page_free(heap, page); }
    static Page* page_alloc(Heap*, PageKind kind) { return stage3::page_alloc(kind); }
    static bool page_format(Page* page, Heap* heap, unsigned bin) { return stage3::page_format(page, heap, bin); }
    static void page_release(Heap*, Page* page) { stage3::page_release(page); }
};
using Queues = PageQueues<QueueTraits>;

// A page of `bin` with a free block, or nullptr when no memory can be had.
Page* find_page(Heap* heap, unsigned bin) {
    PageQueue& q = heap->queues[bin];
    for (Page* page = q.first; page != nullptr;) {
        Page* next = page->next;
        page_collect(page);
        if (page->free) return page;
        if (page->carved < page->capacity && page_extend(page)) return page;
        queue_move_to_full(heap, page);   // nothing left (or nothing mappable): out of the way until a free
        page = next;
    }
    // A fresh page is about to be formatted: the moment retired pages are worth giving back.
    if (heap->retired_min <= heap->retired_max) Queues::collect_retired(heap, false);
    return Queues::push_fresh(heap, bin, segment_relieve);   // [S3.62], queues.h
}

// [S3.75] No page of `bin` can be had (a limit, the map count): a free block of a larger bin
// serves, as glibc carves a small chunk out of a larger free one, rather than NULL while the
// heap holds free blocks that fit. Only free blocks already there: no extension, no fresh page.
// The block keeps its page's size (usable_size says so): one 600-byte request per freed
// 4,000-byte block where glibc carves six, the price of pages of one class (chapter 3).
// [S3.97] An aligned request's bin was chosen for its alignment ([S3.33]); a larger bin serves
// it only if its blocks keep that alignment too (a 4 KiB-aligned request took a 5,120-byte
// block, 1 KiB-aligned, before). `alignment` is kAlignment for every other request.
Page* find_larger(Heap* heap, unsigned bin, std::size_t alignment) {
    for (unsigned larger = bin + 1; larger < kBinCount; ++larger) {
        if (!bin_keeps_alignment(larger, alignment)) continue;
        for (Page* page = heap->queues[larger].first; page != nullptr; page = page->next) {
            page_collect(page);
            if (page->free) return page;
        }
    }
    return nullptr;
}

}  // namespace

Heap* first_heap() { return g_heaps; }

// ---- Queues ---------------------------------------------------------------------------------

void queue_push_front(Heap* heap, unsigned queue, Page* page) { Queues::push_front(heap, queue, page); }
void queue_push_back(Heap* heap, unsigned queue, Page* page) { Queues::push_back(heap, queue, page); }
void queue_remove(Heap* heap, Page* page) { Queues::remove(heap, page); }
bool page_retired_in_place(const Heap* heap, const Page* page) { return Queues::retired_in_place(heap, page); }

void queue_move_to_full(Heap* heap, Page* page) {
    queue_remove(heap, page);
    page_fast_checks(page, false);   // frees into a full page go generic ([S3.6])
    page->retire_expire = 0;
    queue_push_front(heap, kFullQueue, page);
}

// ---- Allocation -----------------------------------------------------------------------------

void die_mark_gone(const Block* b) {
    die_lost_mark(kStageName, "malloc", b);
}

void* page_pop_checked(Page* page, std::size_t requested, const char* call) {
    Block* b = page->free;
    if (!block_in_page_chunk(b, page)) die_wild_head(kStageName, call, b);    // [S3.65]: the fast path sent it here
    if (b->mark != freed_mark(page)) die_mark_gone(b);   // [S3.40], as the fast path
    uintptr_t next = decode(page, b->link);
    if (next != 0 && !page_owns_block(page, next)) die_corrupted_link(kStageName, call, b);
    page->free = reinterpret_cast<Block*>(next);
    ++page->used;
    page->retire_expire = 0;
    b->mark = 0;
    if (g_counting) count_malloc(requested, page->block_size);
    return b;
}

namespace {

// The bin's first page could not serve: the queue (extension, full pages aside, a fresh page,
// retired pages given back first), then a larger bin's free block ([S3.75]). The search may
// make system calls that fail before one succeeds; a call that succeeds leaves errno as it was.
[[gnu::noinline]] void* malloc_from_queue(Heap* heap, unsigned bin, std::size_t requested, std::size_t alignment) {
    int saved = errno;
    Page* page = find_page(heap, bin);
    if (!page) page = find_larger(heap, bin, alignment);
    if (!page) return enomem();
    errno = saved;
    return page_pop_checked(page, requested, "malloc");
}

// What malloc_generic does after the clock's tick. [S3.85] The first page of the bin, its
// local frees taken back, serves most calls here, and makes no system call. Only what follows
// it (extension, a fresh page, a limit's refusals) may fail one before the call succeeds, so
// only that pays for saving errno (malloc_from_queue).
inline void* malloc_after_tick(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (size > kMediumMax) return malloc_one_block(heap, size, kAlignment, requested);
    unsigned bin = bin_of(size);
    Page* page = heap->queues[bin].first;
    if (page) page_collect(page);
    if (!page || !page->free) return malloc_from_queue(heap, bin, requested, alignment);
    return page_pop_checked(page, requested, "malloc");
}

// Every 64 ticks: the purge and the segment cache, then the call as on any other tick.
[[gnu::noinline]] void* malloc_when_due(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (purge_pending()) segment_purge(false);
    if (segment_cache_count() != 0) segment_cache_collect(false);
    return malloc_after_tick(size, requested, heap, alignment);
}

// malloc_generic's body, for malloc's alignment or an aligned request's ([S3.97]).
inline void* generic(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    if (size > kMaxRequest) return enomem();
    if ((++g_clock & 63) == 0) return malloc_when_due(size, requested, heap, alignment);
    return malloc_after_tick(size, requested, heap, alignment);
}

}  // namespace

// [S3.55] A size no segment can hold is refused before the clock ticks: a refused request
// changes nothing, and a tick every 64 may purge or unmap (the battery makes 10,000 of them).
// [S3.94] Every call out of here is the function's last act (a tail call), the purge's and the
// queue's in functions of their own: the common call, served by the bin's first page, runs
// without a stack frame. While the purge was called in here, every call saved and restored six
// registers for it: 16 instructions a call (chapter 3, "Measured").
void* malloc_generic(std::size_t size, std::size_t requested, Heap* heap) {
    return generic(size, requested, heap, kAlignment);
}

void* malloc_generic_aligned(std::size_t size, std::size_t requested, Heap* heap, std::size_t alignment) {
    return generic(size, requested, heap, alignment);
}

// [S3.63] Under an address-space limit a large block of the default heap gets a mapping of its
// own (contract/mapped.h, as the over-aligned blocks of [S3.39]) when no cached segment could
// take it: its pages and one page of record, unmapped on free, as glibc maps its large blocks.
// A lazily mapped segment ([S3.58]) would hold its 8 KiB header and the block rounded up to
// 64 KiB slots, and keep them in the cache after the free, where the program's own mmap calls
// (an interpreter's arenas) cannot have them. A first-class heap keeps its blocks in its
// segments (heap_destroy gives them back). Without a limit nothing changes: one getrlimit
// beside the system calls a fresh segment costs anyway.
// [S3.76] A data limit charges the block's slots too (not the window reserved PROT_NONE): the
// same mapping of its own.
void* malloc_one_block(Heap* heap, std::size_t size, std::size_t alignment, std::size_t requested) {
    if (heap == &g_default_heap && segment_cache_count() == 0 &&
        (os_address_space_limited() || os_data_limited())) {
        if (void* p = alloc_mapped(alignment > kOsPage ? alignment : kOsPage, size == 0 ? 1 : size)) return p;
    }
    Page* page = one_block_page_alloc(size == 0 ? 1 : size, alignment);
    if (!page) return enomem();
    page->heap = heap;
    page->used = 1;
    ++heap->page_count;
    queue_push_front(heap, kLargeQueue, page);
    auto* b = reinterpret_cast<Block*>(page->start);
    b->mark = 0;   // a reused large segment holds whatever its last block held
    if (g_counting) count_malloc(requested, page->block_size);
    return b;
}

void page_event(Page* page) {
    Heap* heap = page->heap;
    if (page->queue == kLargeQueue) Layout::guards_check(page, "free");   // [S3.67] its one block was freed
    if (page->queue == kFullQueue) {   // a block is free again: back to its bin, at the end
        page_fast_checks(page, true);
        queue_remove(heap, page);
        queue_push_back(heap, bin_of_page(page), page);
    }
    if (page->used == 0) Queues::retire(heap, page);
}

// ---- Heaps ----------------------------------------------------------------------------------

Heap* heap_new() {
    constexpr std::size_t bytes = (sizeof(Heap) + kOsPage - 1) & ~(kOsPage - 1);
    void* memory = os_map_aligned(bytes, kOsPage);
    if (memory && !os_commit(memory, bytes)) {
        os_unmap(memory, bytes);
        memory = nullptr;
    }
    if (!memory) {
        set_enomem();
        return nullptr;
    }
    auto* heap = static_cast<Heap*>(memory);
    std::memset(static_cast<void*>(heap), 0, sizeof(Heap));
    for (Page*& slot : heap->direct) slot = &g_empty_page;
    heap->retired_min = kBinCount;
    heap->retired_max = 0;
    // After the default heap, which stays first.
    heap->prev = &g_default_heap;
    heap->next = g_default_heap.next;
    if (heap->next) heap->next->prev = heap;
    g_default_heap.next = heap;
    return heap;
}

void heap_delete(Heap* heap) {
    for (unsigned queue = 0; queue < kQueueCount; ++queue) {
        while (Page* page = heap->queues[queue].first) {
            if (g_counting) {
                uint64_t used = page->used;
                g_counters.frees += used;
                g_counters.live_blocks -= used;
                g_counters.live_bytes -= used * page->block_size;
            }
            page_free(heap, page);
        }
    }
    if (heap->is_default) {   // the default heap is emptied, never unmapped
        heap->retired_min = kBinCount;
        heap->retired_max = 0;
        return;
    }
    heap->prev->next = heap->next;
    if (heap->next) heap->next->prev = heap->prev;
    constexpr std::size_t bytes = (sizeof(Heap) + kOsPage - 1) & ~(kOsPage - 1);
    os_commit_bytes(-static_cast<int64_t>(bytes));
    os_unmap(heap, bytes);
}

void heap_collect(Heap* heap, bool force) {
    if (heap->retired_min <= heap->retired_max) Queues::collect_retired(heap, force);
    segment_purge(force);
    segment_cache_collect(force);
}

}  // namespace edu::stage3
