// stage3_segments/lists.h: walks over one page's free lists, written once for stages 3 and 4 as
// templates over the stage's Page: searching a list, measuring it, re-encoding it under new
// keys. Entry points: PageLists<T>::find, length, reencode. T supplies Page, holds (is this a
// carved block of the page?), next (the decoded link) and remark (a block under new keys).
#pragma once

#include <cstdint>

#include "stage3_segments/encoding.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

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
