// stage3_segments/page.h: one page's blocks: formatting a page for a bin or for one block,
// lazy extension, the local_free swap, the validity test, and list walks.
// Entry points: page_format, page_format_one_block, page_reset, page_extend, page_collect,
// page_is_block, list_find. Queues and retirement belong to heap.h; memory to segment.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/lists.h"
#include "stage3_segments/secure.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

// A free page record: not in use, and a validity test that no pointer passes ([S3.6]).
void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind);

// Makes a page fetched by page_alloc serve `bin` for `heap`: computes start, capacity, magic,
// picks keys, and carves the first blocks, so page->free is non-empty on return; false when
// they cannot be mapped ([S3.62]: a lazily mapped segment under an address-space limit).
bool page_format(Page* page, Heap* heap, unsigned bin);

// A one-block page (large or huge) whose block starts at `start`, `bytes` long; not yet
// handed out (used == 0) and with no heap: heap.cc completes both.
void page_format_one_block(Page* page, uintptr_t start, std::size_t bytes);

// [S3.16] Lazy extension: threads the next max(1, 4 KiB / block size) uncarved blocks onto
// page->free (which must be empty), each with the freed mark, and raises the limit.
// A fresh 64 KiB page of 16-byte blocks is thus touched 4 KiB at a time, not all at once.
// False, nothing carved, when a lazily mapped page cannot map them ([S3.62]).
inline constexpr std::size_t kExtendBytes = 4096;
bool page_extend(Page* page);

// [S3.17] The swap that makes sharding pay: when malloc has emptied `free`, everything freed
// since the last swap becomes the new `free` list in one move.
inline void page_collect(Page* page) {
    // [lab S3.collect begin]
    if (page->free == nullptr && page->local_free != nullptr) {
        page->free = page->local_free;
        page->local_free = nullptr;
    }
    // [lab S3.collect end]
}

// True when `p` is the address of a carved block of `page` ([S3.6]). The caller knows p lies
// in one of our segments and that page_of(p) == page.
inline bool page_is_block(const Page* page, uintptr_t p) {
    uint64_t n = static_cast<uint32_t>(static_cast<uint32_t>(p) - page->start32);
    return n * page->magic < page->limit;
}

// The same test for a pointer found anywhere (a decoded link): the 64-bit distance must also
// fit the 32 bits the test reads, so a pointer into another 4 GiB window cannot alias.
inline bool page_owns_block(const Page* page, uintptr_t p) {
    uint64_t n = p - page->start;
    return n < (uint64_t{1} << 32) && n * page->magic < page->limit;
}

// The same test with the limit computed from `carved`, whatever the page's fast constants say:
// free_generic's exact check, also for a full page (whose constants are the sentinel, [S3.6])
// and without a division. `magic` is the class's on every page in use (1 on one-block pages).
inline bool page_has_block(const Page* page, uintptr_t p) {
    uint64_t n = p - page->start;
    uint64_t limit = uint64_t{page->carved - 1} * (page->magic * page->block_size) + 1;   // wraps, as e
    return n < (uint64_t{1} << 32) && n * page->magic < limit;
}

// Searches a free list (decoding links) for `target`; stops after `page->capacity` steps or at
// a link that is not a block of the page. Returns 1 found, 0 not found, -1 list corrupted.
int list_find(const Page* page, const Block* head, const Block* target);
// Length of a free list, or -1 if it is corrupted (a link off the page, or a cycle).
int64_t list_length(const Page* page, const Block* head);
// Both are lists.h's walks ([S3.44]), shared with stage 4, on stage 3's links and marks;
// secure.cc re-encodes lists with them too.
struct ListTraits {
    using Page = stage3::Page;
    static bool holds(const Page* page, const Block* b) {
        return page_owns_block(page, reinterpret_cast<uintptr_t>(b));
    }
    static const Block* next(const Page* page, const Block* b) { return decode_block(page, b); }
    static void remark(const Page* page, Block* b) { b->mark = freed_mark(page); }   // keyed per page
};
using Lists = PageLists<ListTraits>;

// The validity test's limit for the carved blocks ([S3.6]; magic_for is types.h's).
void page_set_limit(Page* page);
// Sets the fast path's validity constants from start, block size and carved (`on`), or to the
// free sentinel so that every pointer fails them (`off`: free pages, full pages).
void page_fast_checks(Page* page, bool on);

}  // namespace edu::stage3
