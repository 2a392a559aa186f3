// stage3_segments/queues.h: a heap's page queues and the retirement of its empty pages,
// written once for stages 3 and 4 as templates over the stage's records. Entry points:
// PageQueues<T>::push_front, push_back, remove, retire, collect_retired. T names the stage's
// Heap and Page and supplies what differs: direct_changed (its update_direct) and page_free.
#pragma once

#include <cstdint>

#include "stage3_segments/types.h"

namespace edu::stage3 {

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

    static void push_back(Heap* heap, unsigned queue, Page* page) {
        auto& q = heap->queues[queue];
        page->queue = static_cast<uint8_t>(queue);
        page->next = nullptr;
        page->prev = q.last;
        (q.last ? q.last->next : q.first) = page;
        q.last = page;
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

    // [S3.41] An empty page retires: the only page of its bin waits (kRetireTicks fresh pages,
    // a quarter of that for medium pages) in case the program allocates again; any other
    // empty page goes back to its segment now. Bins holding a retired page: [min, max].
    static void retire(Heap* heap, Page* page) {
        unsigned bin = page->queue;
        const auto& q = heap->queues[bin];
        if (bin >= kBinCount || q.first != page || q.last != page) {
            T::page_free(heap, page);
            return;
        }
        page->retire_expire = page->block_size <= kSmallMax ? T::kRetireTicks : T::kRetireTicks / 4;
        if (bin < heap->retired_min) heap->retired_min = bin;
        if (bin > heap->retired_max) heap->retired_max = bin;
    }

    // Counts the retired pages down (when a fresh page is formatted) and frees those whose
    // time is up, or all of them (`force`); a retired page allocated from again stops retiring.
    static void collect_retired(Heap* heap, bool force) {
        uint32_t lo = kBinCount, hi = 0;
        for (uint32_t bin = heap->retired_min; bin <= heap->retired_max && bin < kBinCount; ++bin) {
            Page* page = heap->queues[bin].first;
            if (!page || !page->retire_expire) continue;
            if (page->used != 0) {
                page->retire_expire = 0;
            } else if (force || --page->retire_expire == 0) {
                T::page_free(heap, page);
            } else {
                lo = bin < lo ? bin : lo;
                hi = bin > hi ? bin : hi;
            }
        }
        heap->retired_min = lo;
        heap->retired_max = hi;
    }
};

}  // namespace edu::stage3
