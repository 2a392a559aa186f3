// stage3_segments/lists.h: walks over one page's free lists, written once for stages 3 and 4 as
// templates over the stage's Page: searching a list, measuring it, re-encoding it under new
// keys, and the bitmap that notices a block met twice. Entry points: PageLists<T>::find,
// length, reencode; Seen, index_of. T supplies Page, holds (is this a carved block of the
// page?), next (the decoded link) and remark (a block under new keys).
#pragma once

#include <cstdint>

#include "stage3_segments/encoding.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

// One bit per block of a page (a small page holds at most 4096 blocks; a medium page, of blocks
// above 8 KiB, at most 64), kept by the walks that must notice a block met twice: the checkers'
// and the walkers', and stage 4's page_verify_empty. Stage 4's checker may run on any number of
// threads at once, so each walk keeps its own, on the stack.
inline constexpr uint32_t kMaxBlocks = (uint32_t{1} << kSmallPageShift) / kAlignment;
static_assert((std::size_t{1} << kMediumPageShift) / kSmallMax <= kMaxBlocks, "medium pages fit too");
struct Seen {
    uint64_t bits[kMaxBlocks / 64] = {};
    bool mark(uint32_t i) {   // true when i was marked already
        uint64_t m = uint64_t{1} << (i % 64);
        bool was = bits[i / 64] & m;
        bits[i / 64] |= m;
        return was;
    }
    bool has(uint32_t i) const { return (bits[i / 64] >> (i % 64)) & 1; }
};
// Index of block `b` in its page (b must be a carved block of the page).
template <class Page>
inline uint32_t index_of(const Page* page, const Block* b) {
    return static_cast<uint32_t>((reinterpret_cast<uintptr_t>(b) - page->start) / page->block_size);
}

template <class T>
struct PageLists {
    using Page = typename T::Page;

    // [S3.44] A list is followed only while its links lead to carved blocks of its page and for
    // at most `capacity` steps, so a damaged link or a cycle ends the walk instead of the process.
    // Returns 1 when `target` is on the list, 0 when not, -1 when the list is damaged.
    static int find(const Page* page, const Block* head, const Block* target) {
        uint32_t steps = 0;
        for (const Block* b = head; b != nullptr; b = T::next(page, b)) {
            if (!T::holds(page, b) || ++steps > page->capacity) return -1;
            if (b == target) return 1;
        }
        return 0;
    }

    // The number of blocks on a list, or -1 when it is damaged.
    static int64_t length(const Page* page, const Block* head) {
        int64_t n = 0;
        for (const Block* b = head; b != nullptr; b = T::next(page, b)) {
            if (!T::holds(page, b) || n >= page->capacity) return -1;
            ++n;
        }
        return n;
    }

    // Re-encodes a list from `old` keys to the page's current ones (a secure mode switch).
    static void reencode(const Page* page, const uint64_t old[2], Block* head) {
        uint32_t steps = 0;
        for (Block* b = head; b != nullptr && steps <= page->capacity; ++steps) {
            auto* next = reinterpret_cast<Block*>(decode_link(old, b->link));
            b->link = encode_link(page->keys, reinterpret_cast<uintptr_t>(next));
            T::remark(page, b);
            b = next;
        }
    }
};

}  // namespace edu::stage3
