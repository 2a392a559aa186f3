// stage3_segments/page.cc: formatting, extending and walking one page's blocks.
#include "stage3_segments/page.h"

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include
#include <cstring>

#include "stage3_segments/bins.h"
#include "stage3_segments/segment.h"

namespace edu::stage3 {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

}  // namespace

void page_set_limit(Page* page) {
    if (page->capacity == 1) {
        page->magic = 1;
        page->limit = 1;   // only n = 0
        return;
    }
    uint64_t e = page->magic * page->block_size;  // wraps: magic * d - 2^64
    page->limit = (uint64_t{page->carved} - 1) * e + 1;
}

void page_fast_checks(Page* page, bool on) {
    if (!on) {   // start and magic stay: limit 0 passes nothing ([S3.6], bins_test)
        page->limit = 0;
        return;
    }
    page->start32 = static_cast<uint32_t>(page->start);
    page_set_limit(page);
}

void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind) {
    std::memset(static_cast<void*>(page), 0, sizeof(Page));
    // The free sentinel segment_layout.h checks, shared with stage 4 (whose test needs n > 0
    // here); in this stage limit 0 alone passes nothing ([S3.6]).
    page->start32 = static_cast<uint32_t>(addr(segment) - 1);
    page->magic = 1;
    page->limit = 0;
    page->kind = static_cast<uint8_t>(kind);
    page->index = index;
}

bool page_format(Page* page, Heap* heap, unsigned bin) {
    Segment* segment = segment_of(page);
    uint64_t size = bin_size(bin);
    Carving carving = carve_area(page_area(segment, page), size);
    uintptr_t start = carving.start;
    page->heap = heap;
    page->in_use = 1;
    page->queue = static_cast<uint8_t>(bin);
    page->block_size = size;
    page->start = start;
    page->start32 = static_cast<uint32_t>(start);
    page->capacity = carving.capacity;
    page->carved = 0;
    page->used = 0;
    page->free = page->local_free = nullptr;
    page->retire_expire = 0;
    page->magic = magic_for(size);
    new_keys(page, secure_mode());
    return page_extend(page);
}

void page_format_one_block(Page* page, uintptr_t start, std::size_t bytes) {
    page->in_use = 1;
    page->queue = kLargeQueue;
    page->block_size = bytes;
    page->start = start;
    page->start32 = static_cast<uint32_t>(start);
    page->capacity = page->carved = 1;
    page->used = 0;
    page->free = page->local_free = nullptr;
    page->retire_expire = 0;
    page->keys[0] = page->keys[1] = 0;
    page_set_limit(page);
}

bool page_extend(Page* page) {
    if (!Layout::map_for_extend(segment_of(page), page, kExtendBytes)) return false;   // [S3.62]
    // [lab S3.extend begin]
    uint32_t room = page->capacity - page->carved;
    uint32_t count = static_cast<uint32_t>(kExtendBytes / page->block_size);
    if (count == 0) count = 1;
    if (count > room) count = room;
    uintptr_t first = page->start + uintptr_t{page->carved} * page->block_size;
    uint64_t mark = freed_mark(page);
    for (uint32_t i = 0; i < count; ++i) {
        auto* b = reinterpret_cast<Block*>(first + uintptr_t{i} * page->block_size);
        uintptr_t next = i + 1 < count ? addr(b) + page->block_size : 0;
        b->link = encode(page, next);
        b->mark = mark;
    }
    page->free = reinterpret_cast<Block*>(first);
    page->carved += count;
    page_set_limit(page);
    // [lab S3.extend end]
    return true;
}

int list_find(const Page* page, const Block* head, const Block* target) { return Lists::find(page, head, target); }
int64_t list_length(const Page* page, const Block* head) { return Lists::length(page, head); }

}  // namespace edu::stage3
