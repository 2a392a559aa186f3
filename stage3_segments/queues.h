// stage3_segments/queues.h: a heap's page queues and the retirement of its empty pages,
// written once for stages 3 and 4 as templates over the stage's records. Entry points:
// PageQueues<T>::push_front, push_back, remove, retire, collect_retired, retired_in_place,
// push_fresh. T names the stage's Heap and Page and supplies what differs: direct_changed,
// page_free, and page_alloc, page_format and page_release for a fresh page.
#pragma once

#include <cerrno>

#include <cstdint>

#include "stage3_segments/bins.h"
#include "stage3_segments/segment_layout.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

// [S3.54] Empty small pages a bin keeps at the back of its queue, the page of [S3.41] included:
// a program that frees a batch of blocks and allocates the same batch again (glibc-simple:
// 1000 blocks of 256 bytes, four pages) finds its pages carved, with no segment call.
inline constexpr uint32_t kRetireKeep = 4;
// [S3.41]'s countdown: fresh pages an empty page waits (a quarter of that for medium pages).
// Shared, like kRetireKeep and kPurgeDelay (segment_layout.h): changing it changes stage 4 too.
inline constexpr uint32_t kRetireTicks = 16;

// The records need: heap->queues[] of {first, last}, heap->retired_min/max; page->next, prev,
// queue, used, block_size, retire_expire. Both stages' Heap and Page have them by these names.
template <class T>
struct PageQueues {
    using Heap = typename T::Heap;
    using Page = typename T::Page;

    // [S3.18] Queue moves. Each keeps heap->direct in step when a bin's first page changes.
    static void push_front(Heap* heap, unsigned queue, Page* page) {
        auto& q = heap->queues[queue];
        page->queue = static_cast<uint8_t>(queue);
        page->prev = nullptr;
        page->next = q.first;
        (q.first ? q.first->prev : q.last) = page;
        q.first = page;
        T::direct_changed(heap, queue);
    }

    // Behind the pages in use, ahead of the retired ones ([S3.54]: they stay last).
    static void push_back(Heap* heap, unsigned queue, Page* page) {
        auto& q = heap->queues[queue];
        Page* before = q.last;
        while (before && is_retired(before)) before = before->prev;
        page->queue = static_cast<uint8_t>(queue);
        page->prev = before;
        page->next = before ? before->next : q.first;
        (page->next ? page->next->prev : q.last) = page;
        (before ? before->next : q.first) = page;
        if (q.first == page) T::direct_changed(heap, queue);
    }

    static void remove(Heap* heap, Page* page) {
        auto& q = heap->queues[page->queue];
        bool was_first = q.first == page;
        (page->prev ? page->prev->next : q.first) = page->next;
        (page->next ? page->next->prev : q.last) = page->prev;
        page->next = page->prev = nullptr;
        if (was_first) T::direct_changed(heap, page->queue);
    }

    // A page waiting to be freed: empty, its countdown running. (A retired page the fast path
    // allocated from keeps retire_expire until the next collection, but is no longer empty.)
    static bool is_retired(const Page* page) { return page->retire_expire != 0 && page->used == 0; }

    // [S3.41] An empty page retires: the only page of its bin waits (kRetireTicks fresh pages,
    // a quarter of that for medium pages) in case the program allocates again. Bins holding a
    // retired page: [min, max]. [S3.54] A small page that is not alone waits too, moved to the
    // back of its queue, while fewer than kRetireKeep of its bin's pages wait there (find_page
    // reaches them last: the pages in use fill first); any other empty page is freed now.
    static void retire(Heap* heap, Page* page) {
        unsigned bin = page->queue;
        auto& q = heap->queues[bin];
        page->retire_expire = 0;   // it may have retired before and been allocated from since
        if (bin >= kBinCount) {
            T::page_free(heap, page);
            return;
        }
        if (q.first != page || q.last != page) {
            uint32_t retired = 0;
            for (Page* p = q.last; p && is_retired(p); p = p->prev) ++retired;
            if (page->block_size > kSmallMax || retired >= kRetireKeep) {
                T::page_free(heap, page);
                return;
            }
            remove(heap, page);
            push_back(heap, bin, page);   // ahead of the other retired pages: among them
        }
        page->retire_expire = page->block_size <= kSmallMax ? kRetireTicks : kRetireTicks / 4;
        if (bin < heap->retired_min) heap->retired_min = bin;
        if (bin > heap->retired_max) heap->retired_max = bin;
    }

    // Counts the retired pages down (when a fresh page is formatted) and frees those whose
    // time is up, or all of them (`force`); a retired page allocated from again stops retiring.
    // The retired pages of a bin are the back of its queue ([S3.54]), so each walk is short.
    static void collect_retired(Heap* heap, bool force) {
        uint32_t lo = kBinCount, hi = 0;
        for (uint32_t bin = heap->retired_min; bin <= heap->retired_max && bin < kBinCount; ++bin) {
            bool waiting = false;
            for (Page* page = heap->queues[bin].last; page && page->retire_expire;) {
                Page* prev = page->prev;
                if (page->used != 0) {
                    page->retire_expire = 0;
                    break;
                }
                if (force || --page->retire_expire == 0) T::page_free(heap, page);
                else waiting = true;
                page = prev;
            }
            if (waiting) {
                lo = bin < lo ? bin : lo;
                hi = bin > hi ? bin : hi;
            }
        }
        heap->retired_min = lo;
        heap->retired_max = hi;
    }

    // [S3.62] A fresh page for `bin`, at the front of its queue: a free page of a segment
    // (T::page_alloc) formatted for the bin (T::page_format). A page whose first blocks cannot
    // be mapped (a lazily mapped segment under a limit) goes back (T::page_release), and the
    // page is asked for once more after `relieve()` gave memory back ([S3.52]: stage 3's
    // cache; a stage 4 heap's cache, and more). nullptr when no memory can be had. A page that
    // met a mapping not ours at its start goes back blocked ([S3.73]) and another is asked for
    // at once, relief or not.
    template <class Relieve>
    static Page* push_fresh(Heap* heap, unsigned bin, Relieve relieve) {
        auto fresh = [heap, bin]() -> Page* {
            for (int saved = errno;;) {
                Page* page = T::page_alloc(heap, bin_kind(bin));
                if (!page || T::page_format(page, heap, bin)) return page;
                bool blocked = errno == EEXIST;   // [S3.73] a mapping not ours at its start
                T::page_release(heap, page);      // which blocks it: the next take passes it over
                if (!blocked) return nullptr;
                errno = saved;
            }
        };
        Page* page = under_pressure(fresh, relieve);
        if (!page) return nullptr;
        ++heap->page_count;
        push_front(heap, bin, page);
        return page;
    }

    // For the heap checkers: a page with retire_expire set is where collect_retired looks. An
    // empty one has only retired pages behind it; one allocated from since is its bin's first.
    static bool retired_in_place(const Heap* heap, const Page* page) {
        unsigned bin = page->queue;
        if (bin >= kBinCount || bin < heap->retired_min || bin > heap->retired_max) return false;
        if (page->used != 0) return heap->queues[bin].first == page;
        for (const Page* p = page->next; p; p = p->next)
            if (!is_retired(p)) return false;
        return true;
    }
};

}  // namespace edu::stage3
