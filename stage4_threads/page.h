// stage4_threads/page.h: one page's blocks: formatting for a bin or one block, lazy extension,
// the local_free swap, the validity test, and list walks. Entry points: page_reset,
// page_format, page_format_one_block, page_extend, page_collect_local, page_is_block,
// page_holds, list_find, list_length. The shared list (xthread_free) belongs to remote.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/bins.h"
#include "stage3_segments/lists.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/types.h"

namespace edu::stage4 {

// A free page record: not in use, no heap, and a validity test no pointer passes (S3.6).
void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind);

// Makes a free page serve `bin` for `heap` (its Delay state to_page), carving the first blocks,
// so page->free is non-empty on return; false when they cannot be mapped (a lazy arena, S3.62).
bool page_format(Page* page, Heap* heap, unsigned bin);

// A one-block page whose block starts at `start`, `bytes` long, handed out at once (used 1).
// Its Delay state is to_heap from the start: a free from another thread goes to the owner's
// delayed list, so the owner gives the segment back at its next generic call ([S4.22]).
void page_format_one_block(Page* page, Heap* heap, uintptr_t start, std::size_t bytes);

// Lazy extension as S3.16: the next max(1, 4 KiB / block size) blocks onto page->free.
// False, nothing carved, when a lazy arena cannot map them (S3.62).
inline constexpr std::size_t kExtendBytes = 4096;
bool page_extend(Page* page);

// The swap of S3.17: everything the owner freed becomes the free list in one move.
inline void page_collect_local(Page* page) {
    // [lab S3.collect copy begin]
    if (page->free == nullptr) {
        page->free = page->local_free;
        page->local_free = nullptr;
    }
    // [lab S3.collect copy end]
}

inline bool page_has_room(const Page* page) {
    return page->free != nullptr || page->local_free != nullptr || page->carved < page->capacity;
}

// The validity test of S3.6, for the owner: p is a carved block of `page`. `<=` where stage 3
// has `<` (its limit is one more), on purpose: here free and full pages fail by their start
// (the sentinel segment - 1, so n is never 0) rather than by limit 0, and a one-block page's
// limit 0 passes its block's start alone.
inline bool page_is_block(const Page* page, uintptr_t p) {
    uint64_t n = static_cast<uint32_t>(static_cast<uint32_t>(p) - page->start32);
    return n * page->magic <= page->limit;
}

// The same test for a pointer found anywhere by the owner (a decoded link, S4.56): the 64-bit
// distance must also fit the 32 bits the test reads, as stage 3's page_owns_block.
inline bool page_owns_block(const Page* page, uintptr_t p) {
    uint64_t n = p - page->start;
    return n < (uint64_t{1} << 32) && n * page->magic <= page->limit;
}

// [S4.40] The validity test from the page's geometry alone, for any pointer found anywhere (a
// link, a block on a shared list, a remote free). The fast path's constants will not do: a
// full page carries the sentinel (S3.6) so that its owner's frees go generic, yet other
// threads may have pushed its blocks on xthread_free; and `limit` changes as the owner carves.
// So magic and step (e in S3.6) come from a table computed at compile time from each bin's
// block size, and the bound is a count the caller may read: `carved` for the owner,
// `capacity` (fixed while the page is in use) for anyone else. One multiply, no division.
// A one-block page holds only its start.
struct BinTest {
    uint64_t magic;    // floor(2^64 / size) + 1
    uint64_t step;     // magic * size - 2^64
};
constexpr BinTest bin_test(std::size_t size) {
    uint64_t magic = stage3::magic_for(size);
    return BinTest{magic, magic * size};   // the product wraps: magic * size - 2^64
}
inline constexpr auto kBinTests = [] {
    struct Table {
        BinTest bins[kBinCount];
    } table{};
    for (unsigned b = 0; b < kBinCount; ++b) table.bins[b] = bin_test(stage3::bin_size(b));
    return table;
}();
// True when p is the start of one of the first `count` blocks of `page`.
inline bool page_holds(const Page* page, uintptr_t p, uint32_t count) {
    uint64_t n = p - page->start;
    if (page->bin == kOneBlockBin) return n == 0;
    const BinTest& t = kBinTests.bins[page->bin];
    return count != 0 && n < (uint64_t{1} << 32) && n * t.magic <= uint64_t{count - 1} * t.step;
}

// The bitmap of blocks met twice and a block's index, for the checker and page_verify_empty:
// stage 3's (lists.h).
using stage3::index_of;
using stage3::kMaxBlocks;
using stage3::Seen;

// Searches a list for `target`, at most capacity steps: 1 found, 0 not, -1 a link off the page.
int list_find(const Page* page, const Block* head, const Block* target);
// Length of a list, or -1 if a link leaves the page or the list is longer than the page.
int64_t list_length(const Page* page, const Block* head);
// Both are stage 3's walks (lists.h, S3.44) on stage 4's links: a block the owner may hold
// (carved), the link decoded with the page's keys; the freed mark does not depend on them.
struct ListTraits {
    using Page = stage4::Page;
    static bool holds(const Page* page, const Block* b) {
        return page_holds(page, reinterpret_cast<uintptr_t>(b), page->carved);
    }
    static const Block* next(const Page* page, const Block* b) { return next_of(page, b); }
    static void remark(const Page*, Block*) {}
};
using Lists = stage3::PageLists<ListTraits>;

void page_set_limit(Page* page);
// The fast path's validity constants from start, block size and carved (`on`), or the free
// sentinel that every pointer fails (`off`: free pages, full pages).
void page_fast_checks(Page* page, bool on);

}  // namespace edu::stage4
