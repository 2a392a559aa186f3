// stage3_segments/segment_layout.h: what stages 3 and 4 do alike inside one segment, written
// once as templates over the stage's records: the header laid out for a kind, a fresh segment's
// first commit, page areas, pages taken and given back, decommitting what a segment does not use,
// making memory writable, the layout checks. Entry points: SegmentLayout<T>::format, open_fresh,
// page_area, take_page, release_page, decommit_unused, commit_up_to, one_block_resize, check. T
// supplies the records, kMetaSize, page_reset, make_writable, count_committed, decommit, is_free_sentinel.
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

// Where a page's blocks start and how many fit ([S3.5]): the area's start rounded up to the
// block size's lowest set bit (so blocks of 2^k bytes are 2^k-aligned, up to the page's own
// alignment), and as many whole blocks as the rest of the area holds.
struct Carving {
    uintptr_t start;
    uint32_t capacity;
};
inline Carving carve_area(Span area, uint64_t block_size) {
    uint64_t lowbit = block_size & (~block_size + 1);
    uintptr_t start = (area.lo + lowbit - 1) & ~(lowbit - 1);
    return {start, static_cast<uint32_t>((area.hi - start) / block_size)};
}

// [S3.52] Under pressure, in both stages: `get()` (nullptr when the system refused a mapping or
// a commit), and when it was refused and `relieve()` gave memory back (true), once more. What
// is given back is each stage's own: stage 3's cache; a stage 4 heap's cache, and more.
template <class Get, class Relieve>
auto under_pressure(Get get, Relieve relieve) -> decltype(get()) {
    auto got = get();
    if (got == nullptr && relieve()) got = get();
    return got;
}

template <class T>
struct SegmentLayout {
    using Segment = typename T::Segment;
    using Page = typename T::Page;

    static uintptr_t base(const void* p) { return reinterpret_cast<uintptr_t>(p); }
    static uint64_t bit(unsigned i) { return uint64_t{1} << i; }

    static Span page_area(const Segment* s, const Page* page) {
        uintptr_t meta_end = base(s) + T::kMetaSize;
        if (s->page_count == 1) return {meta_end, base(s) + s->size};
        uintptr_t lo = base(s) + (uintptr_t{page->index} << s->page_shift);
        return {lo > meta_end ? lo : meta_end, lo + (uintptr_t{1} << s->page_shift)};
    }

    // [S3.42] The header for `kind` ([S3.7]): page_of, every page record a free sentinel, every
    // page free. A cached segment changes kind this way without moving anything. Dirty pages
    // stay dirty: a segment that serves its old kind again keeps them ([S3.49]), free and
    // committed until the purge; one that changes kind has none (its owner purges it first).
    static void format(Segment* s, PageKind kind) {
        unsigned shift = kind == PageKind::small    ? kSmallPageShift
                         : kind == PageKind::medium ? kMediumPageShift
                                                    : kSegmentShift;
        s->kind = static_cast<uint8_t>(kind);
        s->page_shift = shift;
        s->page_count = kind == PageKind::small ? kSlots : kind == PageKind::medium ? 8u : 1u;
        s->used_pages = 0;
        s->free_pages = s->page_count == 64 ? ~uint64_t{0} : bit(s->page_count) - 1;
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

    // A one-block segment commits what its block reaches: `need` bytes past the metadata, made
    // writable by [S3.47] where it is not yet (a segment reused for a bigger block, or one whose
    // memory the purge gave back, costs no mprotect for what was writable already).
    static bool commit_up_to(Segment* s, std::size_t need) {
        if (need <= s->committed) return true;
        uintptr_t lo = base(s) + T::kMetaSize;
        if (!make_writable(s, Span{lo, lo + need})) return false;
        T::count_committed(static_cast<int64_t>(need - s->committed));
        s->committed = need;
        return true;
    }

    // Bits first..end-1 of a slot mask (end <= 64).
    static uint64_t slot_bits(unsigned first, unsigned end) {
        return (end == 64 ? ~uint64_t{0} : bit(end) - 1) & ~(bit(first) - 1);
    }

    // Bytes of one slot of a segment of `size` bytes: a sixty-fourth of its window, 64 KiB in a
    // 4 MiB one (a huge segment is whole 4 MiB chunks, so its slots are whole pages too). A
    // short one-block segment ([S3.58]) maps only its first size / 64 KiB slots.
    static std::size_t slot_bytes(std::size_t size) { return (size > kSegmentSize ? size : kSegmentSize) / kSlots; }
    static std::size_t slot_bytes(const Segment* s) { return slot_bytes(s->size); }
    static unsigned mapped_slots(const Segment* s) { return static_cast<unsigned>(s->size / slot_bytes(s)); }

    // The slots an area of `s` touches, as a mask.
    static uint64_t slots_of(const Segment* s, Span area) {
        std::size_t slot = slot_bytes(s);
        return slot_bits(static_cast<unsigned>((area.lo - base(s)) / slot),
                         static_cast<unsigned>((area.hi - base(s) + slot - 1) / slot));
    }

    // [S3.47] A page's area, or a one-block segment's reach, made writable in growing steps.
    // `writable` has bit i when the i-th slot of the segment is readable and writable; a slot
    // stays so until the segment is unmapped (the purge's madvise keeps the protection), so an
    // area already covered costs no call. Otherwise one mprotect covers the area from its first
    // slot that is not writable and, ahead of that slot, as many slots as the segment has
    // writable already: pages taken in order cost 1, 1, 2, 4, ... slots, 7 calls for the 64
    // pages of a small segment instead of 64; a block that grows in place doubles its writable
    // prefix. A segment so taken is never writable beyond twice what it has used (a data limit
    // is charged that much). When the system refuses the step, the area alone is asked for.
    static bool make_writable(Segment* s, Span area) {
        uint64_t missing = slots_of(s, area) & ~s->writable;
        if (missing == 0) return true;
        std::size_t slot = slot_bytes(s);
        auto end = static_cast<unsigned>(64 - __builtin_clzll(missing));   // past the last one
        auto first = static_cast<unsigned>(__builtin_ctzll(missing));
        unsigned ahead = first + static_cast<unsigned>(__builtin_popcountll(s->writable));
        unsigned stop = ahead < end ? end : ahead < mapped_slots(s) ? ahead : mapped_slots(s);
        auto at = reinterpret_cast<void*>(base(s) + first * slot);   // slot 0: header too
        if (stop > end && T::make_writable(at, (stop - first) * slot)) {
            s->writable |= slot_bits(first, stop);
            return true;
        }
        if (!T::make_writable(at, (end - first) * slot)) return false;
        s->writable |= slot_bits(first, end);
        return true;
    }

    // [S3.48] A fresh segment's first commit (`at`, `size` bytes, all PROT_NONE): its header and
    // what its first use reaches, `reach` bytes from its start rounded up to whole slots (the
    // first page of a small or medium segment, a one-block segment's block), with one mprotect
    // where the header alone and then the page cost two. If the system refuses that much (a
    // data limit), the header alone. *writable gets the slots made writable (none: the header
    // alone); false when even the header is refused. The header is formatted after, by the
    // caller, who counts the metadata in the footprint.
    static bool open_fresh(void* at, std::size_t size, std::size_t reach, uint64_t* writable) {
        std::size_t slot = slot_bytes(size);
        auto slots = static_cast<unsigned>((reach + slot - 1) / slot);
        *writable = slot_bits(0, slots);
        if (T::make_writable(at, slots * slot)) return true;
        *writable = 0;
        return T::make_writable(at, T::kMetaSize);
    }

    // [S3.53] A cached one-block segment taken for a block that reaches `reach` bytes past the
    // metadata keeps what the last block committed up to twice that, and gives back (one
    // madvise) only what lies beyond: a program that replaces big buffers of varying sizes
    // would otherwise pay a madvise on nearly every reuse, and a page fault for each page
    // touched again. The bound is [S3.47]'s: never committed beyond twice what is used.
    static void trim_for(Segment* s, std::size_t reach) {
        std::size_t keep = reach <= s->committed / 2 ? 2 * reach : s->committed;
        if (s->committed <= keep) return;
        T::decommit(reinterpret_cast<void*>(base(s) + T::kMetaSize + keep), s->committed - keep);
        s->committed = keep;
    }

    // A large block grows or shrinks in place within its segment (realloc, [S3.32]), as far as
    // the segment is mapped ([S3.58]).
    static bool one_block_resize(Page* page, std::size_t bytes) {
        auto* s = reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(page) & ~kSegmentMask);
        if (s->kind != static_cast<uint8_t>(PageKind::large)) return false;
        bytes = ((bytes == 0 ? 1 : bytes) + kOsPage - 1) & ~(kOsPage - 1);   // whole OS pages
        if (bytes > s->size || page->start - base(s) + bytes > s->size) return false;
        if (!commit_up_to(s, page->start + bytes - base(s) - T::kMetaSize)) return false;
        page->block_size = bytes;
        return true;
    }

    // [S3.46] A page out of a segment that has a free one: the lowest dirty page (still
    // committed: no system call, no fault), else the lowest free page, committed now (made
    // writable by [S3.47] if it is not yet, and counted; nullptr when the system refuses).
    // `no_free_page(s)` takes the segment off its open list when this was its last free page,
    // `no_dirty_page(s)` off its purge list when this was its last dirty page: the lists are
    // each stage's.
    template <class NoFreePage, class NoDirtyPage>
    static Page* take_page(Segment* s, NoFreePage no_free_page, NoDirtyPage no_dirty_page) {
        uint64_t dirty = s->free_pages & s->dirty_pages;
        unsigned i = static_cast<unsigned>(__builtin_ctzll(dirty ? dirty : s->free_pages));
        Page* page = &s->pages()[i];
        Span area = page_area(s, page);
        if (!dirty && !make_writable(s, area)) return nullptr;
        s->free_pages &= ~bit(i);
        ++s->used_pages;
        if (s->free_pages == 0) no_free_page(s);
        if (dirty) {
            s->dirty_pages &= ~bit(i);
            if (!s->dirty_pages) no_dirty_page(s);
        } else {
            T::count_committed(static_cast<int64_t>(area.hi - area.lo));
            s->committed += area.hi - area.lo;
        }
        return page;
    }

    // A page back to its segment: free again, and dirty (committed until the purge, [S3.34])
    // unless it is a one-block page; `first_dirty(s)` puts the segment on its purge list when
    // this is its first dirty page, `expire` is when the purge may take it. Returns the pages
    // still in use; what follows (open list, cache) is each stage's.
    template <class FirstDirty>
    static uint32_t release_page(Segment* s, Page* page, uint64_t expire, FirstDirty first_dirty) {
        auto kind = static_cast<PageKind>(s->kind);
        if (kind == PageKind::small || kind == PageKind::medium) {
            if (!s->dirty_pages) first_dirty(s);
            s->dirty_pages |= bit(page->index);
            s->purge_expire = expire;
        }
        T::page_reset(page, s, page->index, kind);
        s->free_pages |= bit(page->index);
        return --s->used_pages;
    }

    static bool writable(const Segment* s, Span area) {
        uint64_t slots = slots_of(s, area);
        return (s->writable & slots) == slots;
    }

    // [S3.45] The checks of one segment's layout both checkers make (the invariants of [S3.7]):
    // page_of for its kind, dirty pages free, every page record in its place with its free bit,
    // a free record the free sentinel (T::is_free_sentinel), used_pages, committed bytes equal
    // to the areas of pages in use or dirty (small, medium), or reaching past the one block,
    // all of them writable ([S3.47]), a cached segment empty. `check_page(page)` checks each page
    // in use, as the stage sees it. Returns false after k.fail; *in_use is the number of pages
    // in use.
    template <class Checker, class CheckPage>
    static bool check(Checker& k, const Segment* s, uint32_t* in_use, CheckPage check_page) {
        uintptr_t at = base(s);
        if (s->kind > static_cast<uint8_t>(PageKind::huge)) return k.fail("segment kind unknown", at);
        auto kind = static_cast<PageKind>(s->kind);
        uint32_t expect_count = kind == PageKind::small ? 64 : kind == PageKind::medium ? 8 : 1;
        if (s->page_count != expect_count) return k.fail("segment page count wrong for its kind", at);
        Page* pages = const_cast<Segment*>(s)->pages();
        for (unsigned i = 0; i < kSlots; ++i) {
            unsigned expect = (i << kSlotShift) >> s->page_shift;
            if (s->page_of[i] != &pages[expect]) return k.fail("segment page_of inconsistent", at, i, expect);
        }
        if (s->dirty_pages & ~s->free_pages) return k.fail("segment has dirty pages that are not free", at);
        uint32_t used = 0;
        uint64_t areas = 0;   // bytes of pages in use or dirty
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &pages[i];
            bool free_bit = (s->free_pages >> i) & 1;
            Span area = page_area(s, page);
            if (page->in_use || ((s->dirty_pages >> i) & 1)) areas += area.hi - area.lo;
            if ((page->in_use || ((s->dirty_pages >> i) & 1)) && s->page_count > 1 && !writable(s, area))
                return k.fail("page in use or dirty is not writable", base(page));
            if (page->index != i || page->kind != s->kind) return k.fail("page record misplaced", base(page));
            if (page->in_use == free_bit) return k.fail("segment free-page bit disagrees with page", base(page));
            if (!page->in_use) {
                if (page->start32 != static_cast<uint32_t>(at - 1) || page->magic != 1 || page->limit != 0 ||
                    page->free || page->local_free || !T::is_free_sentinel(page))
                    return k.fail("free page is not the free sentinel", base(page));
                continue;
            }
            ++used;
            if (!check_page(page)) return false;
        }
        if (used != s->used_pages) return k.fail("segment used_pages wrong", at, s->used_pages, used);
        bool open_kind = kind == PageKind::small || kind == PageKind::medium;
        if (open_kind && s->committed != areas)
            return k.fail("segment committed bytes differ from its pages in use or dirty", at, s->committed, areas);
        if (!open_kind && used && s->committed < pages[0].start + pages[0].block_size - at - T::kMetaSize)
            return k.fail("one block reaches past the segment's committed bytes", at);
        if (!open_kind && s->committed && !writable(s, Span{at + T::kMetaSize, at + T::kMetaSize + s->committed}))
            return k.fail("one-block segment's committed bytes are not writable", at);
        if (s->cached && used) return k.fail("cached segment has pages in use", at);
        *in_use = used;
        return true;
    }
};

}  // namespace edu::stage3
