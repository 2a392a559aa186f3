// stage4_threads/page.cc: formatting, extending and walking one page's blocks. Links are
// encoded with the page's keys (secure.h: the identity while secure mode is off).
#include "stage4_threads/page.h"

#include "stage3_segments/bins.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/segment.h"

namespace edu::stage4 {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The sentinel base of free and full pages: p - (segment - 1) is never 0 (S3.6).
uint32_t sentinel_start(const Page* page) { return static_cast<uint32_t>(addr(segment_of(page)) - 1); }

}  // namespace

void page_set_limit(Page* page) {
    // One-block pages: magic 1, limit 0, only the block start passes. Else (carved - 1) * e.
    bool one = page->bin == kOneBlockBin;
    page->limit = one ? 0 : (uint64_t{page->carved} - 1) * kBinTests.bins[page->bin].step;
}

void page_fast_checks(Page* page, bool on) {
    page->start32 = on ? static_cast<uint32_t>(page->start) : sentinel_start(page);
    page->magic = on && page->bin != kOneBlockBin ? kBinTests.bins[page->bin].magic : 1;
    if (on) page_set_limit(page);
    else page->limit = 0;
}

void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind) {
    page->free = page->local_free = nullptr;
    page->used = page->capacity = page->carved = 0;
    page->block_size = 0;
    page->start = 0;
    page->next = page->prev = nullptr;
    page->retire_expire = 0;
    page->check_stamp = 0;
    page->bin = 0;
    page->queue = 0;
    page->kind = static_cast<uint8_t>(kind);
    page->in_use = 0;
    page->index = index;
    page->start32 = static_cast<uint32_t>(addr(segment) - 1);
    page->magic = 1;
    page->limit = 0;
    page->keys[0] = page->keys[1] = 0;
    page->xthread_free.store(static_cast<uintptr_t>(Delay::to_page), std::memory_order_relaxed);
    page->heap.store(nullptr, std::memory_order_relaxed);
}

bool page_format(Page* page, Heap* heap, unsigned bin) {
    uint64_t size = stage3::bin_size(bin);
    stage3::Carving carving = stage3::carve_area(page_area(segment_of(page), page), size);   // as S3.5
    page->start = carving.start;
    page->block_size = size;
    page->capacity = carving.capacity;
    page->carved = page->used = 0;
    page->free = page->local_free = nullptr;
    page->retire_expire = 0;
    page->bin = static_cast<uint8_t>(bin);
    page->queue = static_cast<uint8_t>(bin);
    page->in_use = 1;
    page_fast_checks(page, true);
    new_keys(page, heap);
    // The page is not yet reachable by any other thread: its first block is handed out later,
    // and the hand-off (the program's own synchronisation) orders these stores before any
    // remote free. Relaxed is enough.
    page->xthread_free.store(static_cast<uintptr_t>(Delay::to_page), std::memory_order_relaxed);
    page->heap.store(heap, std::memory_order_relaxed);
    return page_extend(page);
}

void page_format_one_block(Page* page, Heap* heap, uintptr_t start, std::size_t bytes) {
    page->start = start;
    page->block_size = bytes;
    page->capacity = page->carved = page->used = 1;
    page->free = page->local_free = nullptr;
    page->retire_expire = 0;
    page->bin = kOneBlockBin;
    page->queue = kLargeQueue;
    page->in_use = 1;
    page->keys[0] = page->keys[1] = 0;   // no list of its own (its delayed free uses these)
    page_fast_checks(page, true);
    page->xthread_free.store(static_cast<uintptr_t>(Delay::to_heap), std::memory_order_relaxed);
    page->heap.store(heap, std::memory_order_relaxed);
}

// [S4.57] Extension threads each new block with its link and its freed mark (S4.48). With
// secure mode off the keys are {0, 0} and encode is the identity, but it is still a rotate, a
// subtraction and three moves a block, while the link itself is one `lea`: this is where a
// program that empties and refills pages (glibc-simple gives pages back every round) spends
// its carving. So the page's keys choose the loop once per extension, not once per block.
bool page_extend(Page* page) {
    if (!Layout::map_for_extend(segment_of(page), page, kExtendBytes)) return false;   // S3.62
    // [lab S3.extend copy begin]
    uint32_t count = static_cast<uint32_t>(kExtendBytes / page->block_size);
    uint32_t room = page->capacity - page->carved;
    count = count == 0 ? 1 : count > room ? room : count;
    uintptr_t size = page->block_size;
    uintptr_t first = page->start + uintptr_t{page->carved} * size;
    uintptr_t last = first + uintptr_t{count - 1} * size;   // its link ends the list
    if ((page->keys[0] | page->keys[1]) == 0) {
        for (uintptr_t at = first; at < last; at += size) {
            auto* b = reinterpret_cast<Block*>(at);
            b->link = at + size;
            b->mark = freed_mark(b);
        }
    } else {
        for (uintptr_t at = first; at < last; at += size) {
            auto* b = reinterpret_cast<Block*>(at);
            b->link = encode(page, at + size);
            b->mark = freed_mark(b);
        }
    }
    auto* end = reinterpret_cast<Block*>(last);
    end->link = encode(page, 0);
    end->mark = freed_mark(end);
    page->free = reinterpret_cast<Block*>(first);
    page->carved += count;
    page_set_limit(page);
    // [lab S3.extend copy end]
    return true;
}

int list_find(const Page* page, const Block* head, const Block* target) { return Lists::find(page, head, target); }
int64_t list_length(const Page* page, const Block* head) { return Lists::length(page, head); }

}  // namespace edu::stage4
