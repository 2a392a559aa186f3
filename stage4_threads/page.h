// stage4_threads/page.h: one page's blocks: formatting for a bin or one block, lazy extension,
// the local_free swap, the validity test, and list walks. Entry points: page_reset,
// page_format, page_format_one_block, page_extend, page_collect_local, page_is_block,
// BlockTest, list_find, list_length. The shared list (xthread_free) belongs to remote.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage4_threads/types.h"

namespace edu::stage4 {

// A free page record: not in use, no heap, and a validity test no pointer passes ([S3.6]).
void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind);

// Makes a free page serve `bin` for `heap` (its Delay state to_page), carving the first blocks,
// so page->free is non-empty on return.
void page_format(Page* page, Heap* heap, unsigned bin);

// A one-block page whose block starts at `start`, `bytes` long, handed out at once (used 1).
// Its Delay state is to_heap from the start: a free from another thread goes to the owner's
// delayed list, so the owner gives the segment back at its next generic call ([S4.22]).
void page_format_one_block(Page* page, Heap* heap, uintptr_t start, std::size_t bytes);

// Lazy extension as [S3.16]: the next max(1, 4 KiB / block size) blocks onto page->free.
inline constexpr std::size_t kExtendBytes = 4096;
void page_extend(Page* page);

// The swap of [S3.17]: everything the owner freed becomes the free list in one move.
inline void page_collect_local(Page* page) {
    if (page->free == nullptr) {
        page->free = page->local_free;
        page->local_free = nullptr;
    }
}

inline bool page_has_room(const Page* page) {
    return page->free != nullptr || page->local_free != nullptr || page->carved < page->capacity;
}

// The validity test of [S3.6], for the owner: p is a carved block of `page`.
inline bool page_is_block(const Page* page, uintptr_t p) {
    uint64_t n = static_cast<uint32_t>(static_cast<uint32_t>(p) - page->start32);
    return n * page->magic <= page->limit;
}
// [S4.40] The same test from the page's geometry alone, for a pointer found anywhere (a link,
// a block on a shared list): a full page carries the sentinel constants (S3.6) so that the
// owner's frees into it go generic, yet other threads may have pushed its blocks on its
// xthread_free list, and those must pass. One division to set up (magic_for), then a multiply
// and a compare per pointer, over the 64-bit distance so another 4 GiB window cannot alias.
struct BlockTest {
    uintptr_t start;
    uint64_t magic;
    uint64_t limit;
    explicit BlockTest(const Page* page);
    bool holds(uintptr_t p) const {
        uint64_t n = p - start;
        return n < (uint64_t{1} << 32) && n * magic <= limit;
    }
    bool holds(const void* p) const { return holds(reinterpret_cast<uintptr_t>(p)); }
};

// Searches a list for `target`, at most capacity steps: 1 found, 0 not, -1 a link off the page.
int list_find(const Page* page, const Block* head, const Block* target);
// Length of a list, or -1 if a link leaves the page or the list is longer than the page.
int64_t list_length(const Page* page, const Block* head);

void page_set_limit(Page* page);
// The fast path's validity constants from start, block size and carved (`on`), or the free
// sentinel that every pointer fails (`off`: free pages, full pages).
void page_fast_checks(Page* page, bool on);

}  // namespace edu::stage4
