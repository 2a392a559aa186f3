// stage3_segments/segment_layout.h: what stages 3 and 4 do alike inside one segment, written
// once as templates over the stage's records: the header laid out for a kind, the area of a
// page, decommitting what a segment holds but does not use, a one-block segment's commitment.
// Entry points: SegmentLayout<T>::format, page_area, decommit_unused, commit_up_to,
// one_block_resize. T supplies Segment, Page, kMetaSize, page_reset, commit and decommit; where
// segments come from and which lists they are on is each stage's.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/types.h"

namespace edu::stage3 {

// The area of a page: [lo, hi). Page 0 of a small or medium segment starts after the metadata
// (kMetaSize, the stage's own); one-block pages span from the metadata to the segment's end.
struct Span {
    uintptr_t lo;
    uintptr_t hi;
};

template <class T>
struct SegmentLayout {
    using Segment = typename T::Segment;
    using Page = typename T::Page;

    static uintptr_t base(const Segment* s) { return reinterpret_cast<uintptr_t>(s); }
    static uint64_t bit(unsigned i) { return uint64_t{1} << i; }

    static Span page_area(const Segment* s, const Page* page) {
        uintptr_t meta_end = base(s) + T::kMetaSize;
        if (s->page_count == 1) return {meta_end, base(s) + s->size};
        uintptr_t lo = base(s) + (uintptr_t{page->index} << s->page_shift);
        return {lo > meta_end ? lo : meta_end, lo + (uintptr_t{1} << s->page_shift)};
    }

    // [S3.42] The header for `kind` ([S3.7]): page_of, every page record a free sentinel, every
    // page free and none dirty. A cached segment changes kind this way without moving anything.
    static void format(Segment* s, PageKind kind) {
        unsigned shift = kind == PageKind::small    ? kSmallPageShift
                         : kind == PageKind::medium ? kMediumPageShift
                                                    : kSegmentShift;
        s->kind = static_cast<uint8_t>(kind);
        s->page_shift = shift;
        s->page_count = kind == PageKind::small ? kSlots : kind == PageKind::medium ? 8u : 1u;
        s->used_pages = 0;
        s->free_pages = s->page_count == 64 ? ~uint64_t{0} : bit(s->page_count) - 1;
        s->dirty_pages = 0;
        Page* pages = s->pages();
        for (unsigned i = 0; i < kSlots; ++i) s->page_of[i] = &pages[(i << kSlotShift) >> shift];
        for (unsigned i = 0; i < s->page_count; ++i) T::page_reset(&pages[i], s, static_cast<uint8_t>(i), kind);
    }

    // [S3.43] The purge of one segment ([S3.34]): every dirty page decommitted, one call per run
    // of adjacent pages; or, for a one-block segment, what its last block reached.
    static void decommit_unused(Segment* s) {
        if (s->page_count == 1) {
            if (s->committed) T::decommit(reinterpret_cast<void*>(base(s) + T::kMetaSize), s->committed);
            s->committed = 0;
            return;
        }
        Page* pages = s->pages();
        for (uint64_t dirty = s->dirty_pages; dirty != 0;) {
            unsigned first = static_cast<unsigned>(__builtin_ctzll(dirty)), last = first;
            while (last + 1 < s->page_count && (dirty & bit(last + 1))) ++last;
            uintptr_t lo = page_area(s, &pages[first]).lo, hi = page_area(s, &pages[last]).hi;
            T::decommit(reinterpret_cast<void*>(lo), hi - lo);
            s->committed -= hi - lo;
            dirty &= ~((bit(last) << 1) - bit(first));   // bits first..last
        }
        s->dirty_pages = 0;
    }

    // A one-block segment commits what its block reaches: `need` bytes past the metadata.
    static bool commit_up_to(Segment* s, std::size_t need) {
        if (need <= s->committed) return true;
        if (!T::commit(reinterpret_cast<void*>(base(s) + T::kMetaSize + s->committed), need - s->committed))
            return false;
        s->committed = need;
        return true;
    }

    // A large block grows or shrinks in place within its segment (realloc, [S3.32]).
    static bool one_block_resize(Page* page, std::size_t bytes) {
        auto* s = reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(page) & ~kSegmentMask);
        if (s->kind != static_cast<uint8_t>(PageKind::large)) return false;
        bytes = ((bytes == 0 ? 1 : bytes) + kOsPage - 1) & ~(kOsPage - 1);   // whole OS pages
        if (bytes > kSegmentSize || page->start - base(s) + bytes > kSegmentSize) return false;
        if (!commit_up_to(s, page->start + bytes - base(s) - T::kMetaSize)) return false;
        page->block_size = bytes;
        return true;
    }
};

}  // namespace edu::stage3
