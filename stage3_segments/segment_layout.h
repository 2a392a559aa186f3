// stage3_segments/segment_layout.h: what stages 3 and 4 do alike inside one segment, written
// once as templates over the stage's records: header layout, first commit, page areas, pages
// taken and given back, decommit, mapping as pages carve, a one-block page's guards, the cache's
// bounds and the delays, layout checks. Entry points: under_pressure, carve_area, and
// SegmentLayout<T>'s format, open_fresh, take_page, release_page, map_for_extend, commit_up_to,
// large_reach, one_block_resize, guards_*, die_not_ours, check, check_page_grid (T: see there).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>

#include "contract/diagnostics.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/lists.h"
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

// [S3.67] Guards around the block of a one-block page (large, huge). Its record lives in the
// segment's header, not in front of it, and it has no neighbour in its page, so nothing the
// stage reads lies on either side of it: a write past its end or before its start would go
// unseen (the probes overflow_large, underflow_large). So 16 bytes on each side of it, outside
// its usable size, hold a guard, written when the page is formatted for the block and checked
// when the block is freed and when realloc resizes it in place. Such a block is served and
// freed by the generic paths only, so the fast paths do not change.
//
//    ...segment header | front guard | block: block_size usable bytes  | tail guard | rest ...
//                      |  16 bytes   ^ page->start                     |  16 bytes  |
//    (the front guard is the header's last 16 bytes, or the end of an aligned block's gap)
//
// The usable size is whole OS pages less the tail guard, so most sizes take no more memory than
// without it (100,000 bytes: 102,384 usable, in 25 pages as before; one within 16 bytes of a
// page boundary takes one page more). A guard's words are derived from their own address (a
// multiply spreads every bit), so no constant a program holds matches them, nor does a guard
// copied from elsewhere; every byte has its top bit set, so a NUL terminator or text written
// across one (the commonest overflows) always differs. One stray byte of 0x80..0xff matches
// its guard byte once in 128; debug mode's fences (docs/misuse.md) are the complete check.
inline constexpr std::size_t kGuardBytes = 16;
// Word i (0, 1) of the guard at `at`: the second is the first with the low seven bits of each
// byte flipped (every top bit kept), so one multiply serves both.
inline uint64_t guard_word(uintptr_t at, unsigned i) {
    uint64_t x = (at ^ 0x5bd1e995c6a4a793ull) * 0x9e3779b97f4a7c15ull;
    return ((x ^ (x >> 29)) | 0x8080808080808080ull) ^ (i ? 0x7f7f7f7f7f7f7f7full : 0);
}
inline void guard_write(uintptr_t at) {
    auto* w = reinterpret_cast<uint64_t*>(at);
    w[0] = guard_word(at, 0);
    w[1] = guard_word(at, 1);
}
// The first byte of the guard at `at` that is not the guard's, or 0.
inline uintptr_t guard_damage(uintptr_t at) {
    const auto* w = reinterpret_cast<const uint64_t*>(at);
    uint64_t first = guard_word(at, 0);
    uint64_t d0 = w[0] ^ first, d1 = w[1] ^ first ^ 0x7f7f7f7f7f7f7f7full;
    if (!(d0 | d1)) return 0;
    return d0 ? at + static_cast<unsigned>(__builtin_ctzll(d0)) / 8 : at + 8 + static_cast<unsigned>(__builtin_ctzll(d1)) / 8;
}
inline bool guard_intact(uintptr_t at) { return guard_damage(at) == 0; }
// What byte `at` of the guard that starts at `guard` should be.
inline uint8_t guard_byte(uintptr_t guard, uintptr_t at) {
    return static_cast<uint8_t>(guard_word(guard, (at - guard) / 8 != 0) >> (8 * ((at - guard) % 8)));
}
// The usable bytes of a one-block page's block of `bytes`: whole OS pages, less its tail guard.
constexpr std::size_t one_block_usable(std::size_t bytes) {
    return ((bytes + kGuardBytes + kOsPage - 1) & ~(kOsPage - 1)) - kGuardBytes;
}

// [S3.88] How much a realloc that must move a block asks for, in both stages: the size, but
// half as much again as the block held when it grows past a large block (kLargeMax). Such a
// block lies in a huge segment, which never grows in place (one_block_resize serves large ones
// only), and its usable size is the request rounded to a page: a buffer that grows by small
// steps (read in 4 KiB at a time, a string built a line at a time) moved at every page it
// crossed, each move a copy of all of it: 16 MiB reached in 64-byte steps took 27 s and 3112
// moves (glibc: 0.15 s, 9), 64 MiB in 4 KiB steps more than a minute (glibc: 0.5 s). With the
// headroom the block moves a few times only (a growth by half is ten moves from 2 to 64 MiB) and
// each realloc in between stays in place ([S3.32]'s rule); what the headroom commits is at most
// half the block more, its pages untouched until written. realloc asks for the size alone when
// the headroom is refused, so it fails only when the size itself does not fit.
constexpr std::size_t realloc_target(std::size_t usable, std::size_t size) {
    if (size <= kLargeMax || size <= usable) return size;
    std::size_t ahead = usable + usable / 2;
    return ahead > size && ahead <= kMaxRequest ? ahead : size;
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

// The segment cache's bounds, one set for both stages (stage 3's cache, [S3.14], [S3.35] and
// [S3.87]; each stage 4 heap's, S4.19, S4.45 and S4.87): at most kCacheSegments empty segments;
// of huge ones kCacheBytes of address space in all, each kept only up to kHugeCacheMax; of 4 MiB
// ones kCacheCommitted of memory still committed (until their purge). Why these values: stage
// 3's segment.h, and stage 4's for the count.
inline constexpr unsigned kCacheSegments = 64;
inline constexpr std::size_t kCacheCommitted = std::size_t{24} << 20;
inline constexpr std::size_t kHugeCacheMax = std::size_t{32} << 20;
inline constexpr std::size_t kCacheBytes = std::size_t{64} << 20;

// [S3.86] The delays, one pair for both stages, in ticks of a heap's clock (its generic malloc
// calls): a released page, or the memory of a cached segment's last block, stays committed
// kPurgeDelay ticks before the purge gives it back ([S3.34]); an empty segment stays cached
// kCacheDelay ticks before it is unmapped ([S3.14]). Why 4096: a cached large segment reused
// within that many calls keeps the pages its last block touched, so the program pays neither
// the madvise nor the faults that would follow it (chapter 3's table under [S3.86]). The price
// is time, not amount: what waits is bounded, and a program that stops calling keeps it
// either way, since only calls move the clock.
inline constexpr uint64_t kPurgeDelay = 4096;
inline constexpr uint64_t kCacheDelay = 8 * kPurgeDelay;

// T, each stage's LayoutTraits (segment.h), supplies: Segment and Page, kMetaSize, kStageName
// (for the diagnostics), page_reset, lazy (a lazily mapped segment?), make_writable, unmap and
// decommit (false if the kernel refused), count_committed, is_free_sentinel.
template <class T>
struct SegmentLayout {
    using Segment = typename T::Segment;
    using Page = typename T::Page;

    static uintptr_t base(const void* p) { return reinterpret_cast<uintptr_t>(p); }
    static uint64_t bit(unsigned i) { return uint64_t{1} << i; }
    static bool has_pages(PageKind kind) { return kind == PageKind::small || kind == PageKind::medium; }
    // [S3.62] Whether the pages of `s` are mapped as they carve (a lazy small or medium segment).
    static bool lazy_pages(const Segment* s) { return T::lazy(s) && has_pages(static_cast<PageKind>(s->kind)); }

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
        if (T::lazy(s) && has_pages(kind) && s->writable) {   // [S3.62] a one-block segment's memory
            T::unmap(reinterpret_cast<void*>(base(s) + T::kMetaSize), mapped_bytes(s) - T::kMetaSize);
            s->writable = 0;
        }
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
    // [S3.70] A run the kernel refuses to give back (a page of it locked: mlock, mlockall) stays
    // dirty and counted, as it is: committed, its bytes in place. False when any run stayed: the
    // caller keeps the segment on its purge list, for a later try.
    static bool decommit_unused(Segment* s) {
        if (s->page_count == 1) {
            if (s->committed && !T::decommit(reinterpret_cast<void*>(base(s) + T::kMetaSize), s->committed)) return false;
            s->committed = 0;
            return true;
        }
        Page* pages = s->pages();
        uint64_t kept = 0;
        for (uint64_t dirty = s->dirty_pages; dirty != 0;) {
            unsigned first = static_cast<unsigned>(__builtin_ctzll(dirty)), last = first;
            while (last + 1 < s->page_count && (dirty & bit(last + 1))) ++last;
            uintptr_t lo = page_area(s, &pages[first]).lo, hi = page_area(s, &pages[last]).hi;
            uint64_t run = (bit(last) << 1) - bit(first);   // bits first..last
            if (T::decommit(reinterpret_cast<void*>(lo), hi - lo)) s->committed -= hi - lo;
            else kept |= run;
            dirty &= ~run;
        }
        s->dirty_pages = kept;
        return kept == 0;
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

    // Bytes of one slot of a segment of `size` bytes: a sixty-fourth of it, 64 KiB of a 4 MiB
    // one (a huge segment is whole 4 MiB chunks, so its slots are whole pages too).
    static std::size_t slot_bytes(std::size_t size) { return size / kSlots; }
    static std::size_t slot_bytes(const Segment* s) { return slot_bytes(s->size); }

    // [S3.58] What a lazily mapped segment (T::lazy) has mapped, for its unmapping: its writable
    // slots, which are a prefix (make_writable grows it from the first slot up, since a page is
    // always the lowest free one and a one-block segment's reach starts at its metadata), or its
    // header alone (open_fresh's fallback). Unmapping more would take with it whatever else the
    // kernel has placed in the rest of the segment's window.
    static std::size_t mapped_bytes(const Segment* s) {
        if (s->writable == 0) return T::kMetaSize;
        return static_cast<std::size_t>(64 - __builtin_clzll(s->writable)) * slot_bytes(s);
    }

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
    // [S3.58] A lazily mapped segment (under an address-space limit, which counts every byte
    // mapped) takes no step ahead, and maps what it makes writable at its exact address: from
    // the end of its header when its first slot held the header alone.
    static bool make_writable(Segment* s, Span area) {
        uint64_t missing = slots_of(s, area) & ~s->writable;
        if (missing == 0) return true;
        std::size_t slot = slot_bytes(s);
        bool lazy = T::lazy(s);
        auto end = static_cast<unsigned>(64 - __builtin_clzll(missing));   // past the last one
        auto first = static_cast<unsigned>(__builtin_ctzll(missing));
        unsigned ahead = lazy ? 0 : first + static_cast<unsigned>(__builtin_popcountll(s->writable));
        unsigned stop = ahead < end ? end : ahead < kSlots ? ahead : kSlots;
        uintptr_t at = base(s) + first * slot;   // slot 0: header too
        if (lazy && first == 0) at += T::kMetaSize;
        auto* from = reinterpret_cast<void*>(at);
        if (stop > end && T::make_writable(from, base(s) + stop * slot - at, lazy)) {
            s->writable |= slot_bits(first, stop);
            return true;
        }
        if (!T::make_writable(from, base(s) + end * slot - at, lazy)) return false;
        s->writable |= slot_bits(first, end);
        return true;
    }

    // [S3.48] A fresh segment's first commit (`at`, `size` bytes, all PROT_NONE): its header and
    // what its first use reaches, `reach` bytes from its start rounded up to whole slots (the
    // first page of a small or medium segment, a one-block segment's block), with one mprotect
    // where the header alone and then the page cost two. If the system refuses that much (a
    // data limit), the header alone. *writable gets the slots made writable (none: the header
    // alone); false when even the header is refused. The header is formatted after, by the
    // caller, who counts the metadata in the footprint. A `lazy` segment ([S3.58]) is not
    // mapped at all yet: this maps it, at exactly `at`, or fails with errno EEXIST when
    // anything is mapped there; a small or medium one maps its header alone ([S3.62]).
    static bool open_fresh(void* at, std::size_t size, PageKind kind, std::size_t reach, bool lazy, uint64_t* writable) {
        std::size_t slot = slot_bytes(size);
        auto slots = static_cast<unsigned>((reach + slot - 1) / slot);
        *writable = 0;
        if (!(lazy && has_pages(kind))) {
            if (T::make_writable(at, slots * slot, lazy)) {
                *writable = slot_bits(0, slots);
                return true;
            }
            if (lazy && errno == EEXIST) return false;   // something is mapped there: not ours
        }
        return T::make_writable(at, T::kMetaSize, lazy);
    }

    // [S3.80] What a large block takes from `offset` bytes past the start of `s` (its usable
    // bytes and tail guard), `bytes` being its own. A segment reused from the cache may have
    // kept what its last block committed ([S3.49]); when that reaches past the block, within
    // kReachTaken times its bytes, the block takes all of it: it ends where the last one did, so
    // its tail guard ([S3.67]) is stored on a page that guard touched, not on one that faults.
    // Usable size grows (the guard follows, so an overflow is caught as before); nothing more
    // is committed. Both stages decide by this (S4.88 is stage 4's call).
    // [S3.96] Why four, not the twice of [S3.47]: a reused large segment is not trimmed, so
    // what its last block committed stays committed while the new block lives, whatever this
    // returns. The bound limits only what a program that writes all of malloc_usable_size (as
    // redis's strings may) can make resident beyond its request. With twice, mstress's blocks
    // (64 to 256 KiB, one in 256) under half the reach still put their guard on an untouched
    // page: stage 3 took 1,171 faults and 1.35x mimalloc's CPU time at one thread, 861 and
    // 1.08x with four (chapter 3's Measured, "The reach of a large block").
    static constexpr std::size_t kReachTaken = 4;
    static std::size_t large_reach(const Segment* s, std::size_t offset, std::size_t bytes) {
        if (s->kind != static_cast<uint8_t>(PageKind::large)) return bytes;
        std::size_t end = T::kMetaSize + s->committed;   // the committed reach, from the start
        if (end < offset + bytes || end - offset > kReachTaken * bytes) return bytes;
        return end - offset;
    }

    // [S3.53] A cached one-block segment taken for a block that reaches `reach` bytes past the
    // metadata keeps what the last block committed up to twice that, and gives back (one
    // madvise) only what lies beyond: a program that replaces big buffers of varying sizes
    // would otherwise pay a madvise on nearly every reuse, and a page fault for each page
    // touched again. The bound is [S3.47]'s: never committed beyond twice what is used.
    // [S3.78] Unless the live huge blocks in all keep within the bound, it keeps everything.
    static void trim_for(Segment* s, std::size_t reach, const HugeTotals& huge) {
        if (huge.keeps(s->committed, reach)) return;
        std::size_t keep = reach <= s->committed / 2 ? 2 * reach : s->committed;
        if (s->committed <= keep) return;
        if (T::decommit(reinterpret_cast<void*>(base(s) + T::kMetaSize + keep), s->committed - keep))
            s->committed = keep;   // [S3.70] refused: all of it stays committed, and counted
    }

    // [S3.78] A huge segment whose block is live, counted in its stage's HugeTotals while it
    // is: what the block reaches past the metadata (its tail guard included), and what the
    // segment has committed. Neither changes while the block lives (a huge block is never
    // resized in place, and no purge touches a segment in use).
    static bool live_huge(const Segment* s) {
        return s->kind == static_cast<uint8_t>(PageKind::huge) && s->used_pages == 1;
    }
    static std::size_t huge_reach(const Segment* s) {
        const Page* page = const_cast<Segment*>(s)->pages();
        return page->start + page->block_size + kGuardBytes - base(s) - T::kMetaSize;
    }
    static void huge_add(HugeTotals& huge, const Segment* s) {
        huge.reach += huge_reach(s);
        huge.committed += s->committed;
    }
    static void huge_remove(HugeTotals& huge, const Segment* s) {
        huge.reach -= huge_reach(s);
        huge.committed -= s->committed;
    }

    // [S3.67] A one-block page's guards: written for its block, checked (a damaged one stops
    // the program with one line naming the call, the block and the first byte changed).
    static_assert(sizeof(Segment) + kSlots * sizeof(Page) + kGuardBytes <= T::kMetaSize,
                  "a front guard in the header's last bytes overlaps no record");
    static_assert((T::kMetaSize > kMaxAlignment ? T::kMetaSize : kMaxAlignment) + one_block_usable(kLargeMax) + kGuardBytes <=
                      kSegmentSize,
                  "a block of kLargeMax bytes and its tail guard, at any alignment, fit a large segment");
    static void guards_write(const Page* page) {
        guard_write(page->start - kGuardBytes);
        guard_write(page->start + page->block_size);
    }
    static bool guards_intact(const Page* page) {
        return guard_intact(page->start - kGuardBytes) && guard_intact(page->start + page->block_size);
    }
    static void guards_check(const Page* page, const char* call) {
        if (!guards_intact(page)) die_guard(page, call);
    }
    [[noreturn, gnu::cold, gnu::noinline]] static void die_guard(const Page* page, const char* call) {
        uintptr_t guard = page->start - kGuardBytes, at = guard_damage(guard);
        const char* what = "buffer underflow (a write before the block)";
        if (!at) {
            guard = page->start + page->block_size;
            at = guard_damage(guard);
            what = "buffer overflow (a write past the end of the block)";
        }
        char text[200];
        LineWriter w(text, sizeof text);
        w.str(what).str(": block of ").dec(page->block_size).str(" bytes, byte ");
        if (at < page->start) w.str("-").dec(page->start - at);
        else w.str("+").dec(at - page->start);
        w.str(" is ").hex(*reinterpret_cast<const uint8_t*>(at)).str(" not its guard's ").hex(guard_byte(guard, at));
        die(T::kStageName, call, reinterpret_cast<const void*>(page->start), text);
    }

    // [S3.66] The line for a pointer the fast structures place in no segment: `holder` is the
    // huge segment whose block it lies in, further than the first 4 MiB by which each stage
    // knows a huge segment (stage 3's segment map, stage 4's start markers), or nullptr.
    // Each stage finds the holder on its own cold path; the words are the same in both.
    [[noreturn, gnu::cold, gnu::noinline]] static void die_not_ours(Segment* holder, const void* p, const char* call) {
        if (!holder) die(T::kStageName, call, p, "pointer not from this heap (no segment of ours holds it)");
        const Page* page = holder->pages();
        if (!page->in_use)
            die(T::kStageName, call, p, "double free, or a pointer never handed out (it lies in a free huge segment)");
        char text[160];
        LineWriter(text, sizeof text)
            .str("not the start of a block: interior pointer, ")
            .dec(base(p) - page->start)
            .str(" bytes into the huge block at ")
            .hex(page->start);
        die(T::kStageName, call, p, text);
    }

    // A pointer into a page with no block in use: its last block was freed already, or it
    // never had one there. The words both stages print (free, realloc, usable_size).
    [[noreturn, gnu::cold, gnu::noinline]] static void die_in_free_page(const void* p, const char* call) {
        die(T::kStageName, call, p, "double free, or a pointer never handed out (no live block here: its page is free)");
    }

    // realloc of a large or huge block checks its guards before it decides anything: whether
    // the block stays (the new size fits it and uses at least half), is resized in place, or
    // moves (a small size, a huge block, in stage 4 another thread's block), a damaged guard is
    // realloc's to report, not the free inside a move's. `kind` is fixed while the page is in
    // use, and lies in the record beside `block_size`, which realloc reads anyway.
    static void realloc_guards_check(const Page* page) {
        if (page->kind >= static_cast<uint8_t>(PageKind::large)) guards_check(page, "realloc");
    }

    // A large block grows or shrinks in place within its segment (realloc, [S3.32]), its tail
    // guard moved to its new end ([S3.67]); realloc_guards_check has checked both before.
    static bool one_block_resize(Page* page, std::size_t bytes) {
        auto* s = reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(page) & ~kSegmentMask);
        if (s->kind != static_cast<uint8_t>(PageKind::large)) return false;
        bytes = one_block_usable(bytes == 0 ? 1 : bytes);
        std::size_t reach = page->start - base(s) + bytes + kGuardBytes;
        if (reach > s->size) return false;
        if (!commit_up_to(s, reach - T::kMetaSize)) return false;
        page->block_size = bytes;
        guard_write(page->start + bytes);
        return true;
    }

    // [S3.46] A page out of a segment that has a free one: the lowest dirty page (still
    // committed: no system call, no fault), else the lowest free page, committed now (made
    // writable by [S3.47] if it is not yet, and counted; nullptr when the system refuses).
    // `no_free_page(s)` takes the segment off its open list when this was its last free page,
    // `no_dirty_page(s)` off its purge list when this was its last dirty page: the lists are
    // each stage's.
    // [S3.73] A free page of a lazily mapped segment whose first blocks met a mapping not ours
    // at its start (EEXIST: the kernel placed one there, or the program did) is blocked: its
    // record, free, says so (queue == kBlocked), and no take chooses it until the segment is
    // formatted anew. Before, such a page went back free, was the lowest free page again at the
    // retry and at every later request, and malloc said NULL for good for any bin needing a
    // fresh page while that segment was the first open one.
    static constexpr uint8_t kBlocked = 0xff;
    // The free pages a take may choose: every free page, but the blocked ones.
    static uint64_t takeable(const Segment* s) {
        uint64_t free = s->free_pages;
        if (!lazy_pages(s)) return free;
        const Page* pages = const_cast<Segment*>(s)->pages();
        for (uint64_t f = free; f != 0; f &= f - 1) {
            auto i = static_cast<unsigned>(__builtin_ctzll(f));
            if (pages[i].queue == kBlocked) free &= ~bit(i);
        }
        return free;
    }

    template <class NoFreePage, class NoDirtyPage>
    static Page* take_page(Segment* s, NoFreePage no_free_page, NoDirtyPage no_dirty_page) {
        uint64_t free = takeable(s);
        if (free == 0) {   // [S3.73] blocked pages alone: the segment leaves its open list
            no_free_page(s);
            return nullptr;
        }
        uint64_t dirty = free & s->dirty_pages;
        unsigned i = static_cast<unsigned>(__builtin_ctzll(dirty ? dirty : free));
        Page* page = &s->pages()[i];
        Span area = page_area(s, page);
        if (!dirty && !lazy_pages(s) && !make_writable(s, area)) return nullptr;
        if (lazy_pages(s) && !unmap_leftover(page)) return nullptr;   // [S3.71] refused again
        s->free_pages &= ~bit(i);
        ++s->used_pages;
        if (takeable(s) == 0) no_free_page(s);
        if (dirty) {
            s->dirty_pages &= ~bit(i);
            if (!s->dirty_pages) no_dirty_page(s);
        } else {
            T::count_committed(static_cast<int64_t>(area.hi - area.lo));
            s->committed += area.hi - area.lo;
        }
        return page;
    }

    // [S3.62] The pages of a lazily mapped small or medium segment are mapped as their blocks are
    // carved: under an address-space limit a 64 KiB page of a size class the program uses once,
    // or a 512 KiB medium page, would otherwise cost its whole area. A page maps its carved
    // blocks rounded out to OS pages, from the page holding its first block (not the area's
    // start: a 32 KiB block of page 0 starts 24 KiB past it) to the one holding the last carved
    // byte; what it has mapped is a function of what it has carved, so nothing records it, and
    // nothing is mapped while nothing is carved. Each extension that reaches a new OS page costs
    // one mmap (an extension is 4 KiB of blocks or one block, [S3.16]): under a limit only, where
    // the bytes count more than the calls. The header stays mapped on its own.
    static Span lazy_mapped(const Page* page, uint32_t carved) {
        uintptr_t lo = page->start & ~(kOsPage - 1);
        uintptr_t end = page->start + uintptr_t{carved} * page->block_size;
        return {lo, carved == 0 ? lo : (end + kOsPage - 1) & ~(kOsPage - 1)};
    }

    // Before an extension carves: the blocks it will carve mapped (the count is page_extend's:
    // `extend_bytes` of blocks, at least one, at most what is left). False, nothing carved,
    // when the system refuses: ENOMEM under the limit, or EEXIST, a mapping not ours in the way,
    // where the page then ends for good (its capacity cut to what it has carved, so it goes to
    // the full queue and the next blocks come from another page).
    static bool map_for_extend(Segment* s, Page* page, std::size_t extend_bytes) {
        if (!lazy_pages(s)) return true;
        auto count = static_cast<uint32_t>(extend_bytes / page->block_size);
        uint32_t room = page->capacity - page->carved;
        count = count == 0 ? 1 : count > room ? room : count;
        uintptr_t have = lazy_mapped(page, page->carved).hi, want = lazy_mapped(page, page->carved + count).hi;
        if (want <= have || T::make_writable(reinterpret_cast<void*>(have), want - have, true)) return true;
        if (errno == EEXIST) page->capacity = page->carved;
        return false;
    }

    // A page back to its segment: free again, and dirty (committed until the purge, [S3.34])
    // unless it is a one-block page or mapped lazily ([S3.62]); `first_dirty(s)` puts the segment on its purge list when
    // this is its first dirty page, `expire` is when the purge may take it. Returns the pages
    // still in use; what follows (open list, cache) is each stage's.
    template <class FirstDirty>
    static uint32_t release_page(Segment* s, Page* page, uint64_t expire, FirstDirty first_dirty) {
        auto kind = static_cast<PageKind>(s->kind);
        bool kept = false;   // [S3.71] its blocks' mapping, refused to munmap
        bool blocked = lazy_pages(s) && page->capacity == 0;   // [S3.73] cut at its start: EEXIST
        if (lazy_pages(s)) {   // [S3.62] what it mapped goes back now, and its count
            Span area = page_area(s, page), mapped = lazy_mapped(page, page->carved);
            kept = mapped.hi > mapped.lo && !T::unmap(reinterpret_cast<void*>(mapped.lo), mapped.hi - mapped.lo);
            T::count_committed(-static_cast<int64_t>(area.hi - area.lo));
            s->committed -= area.hi - area.lo;
        } else if (kind == PageKind::small || kind == PageKind::medium) {
            if (!s->dirty_pages) first_dirty(s);
            s->dirty_pages |= bit(page->index);
            s->purge_expire = expire;
        }
        uintptr_t start = page->start;
        uint64_t block_size = page->block_size;
        uint32_t carved = page->carved;
        T::page_reset(page, s, page->index, kind);
        if (blocked) page->queue = kBlocked;
        if (kept) {   // what lazy_mapped(page, page->carved) needs, to be unmapped later
            page->start = start;
            page->block_size = block_size;
            page->carved = carved;
        }
        s->free_pages |= bit(page->index);
        return --s->used_pages;
    }

    // [S3.71] A lazily mapped page whose blocks' munmap the kernel refused (at the map count's
    // limit, where it would cut a hole in the mapping they share with the blocks of the pages
    // beside them) still holds that mapping, its pages given back (contract/os.h's os_unmap):
    // free, it keeps the start, block size and carved count of its last use, so that
    // lazy_mapped(page, page->carved) is still what it maps. The munmap is tried again before
    // the page is taken (take_page: refused again, no page) and before its segment is formatted
    // for reuse or given back (unmap_leftovers: refused again there, the mapping is left behind,
    // its pages given back). True when nothing is left.
    static bool unmap_leftover(Page* page) {
        if (page->in_use || page->carved == 0) return true;
        Span mapped = lazy_mapped(page, page->carved);
        if (!T::unmap(reinterpret_cast<void*>(mapped.lo), mapped.hi - mapped.lo)) return false;
        page->carved = 0;
        return true;
    }
    static void unmap_leftovers(Segment* s) {
        if (!lazy_pages(s)) return;
        for (unsigned i = 0; i < s->page_count; ++i) unmap_leftover(&s->pages()[i]);
    }

    static bool writable(const Segment* s, Span area) {
        uint64_t slots = slots_of(s, area);
        return (s->writable & slots) == slots;
    }

    // [S3.45] The checks of one segment's layout both checkers make (the invariants of [S3.7]):
    // page_of for its kind, dirty pages free, every page record in its place with its free bit,
    // a free record the free sentinel (T::is_free_sentinel), used_pages, committed bytes equal
    // to the areas of pages in use or dirty (small, medium), or reaching past the one block,
    // all of them writable ([S3.47]) and, mapped lazily, a prefix ([S3.58]), or for a small or
    // medium segment no writable slot and no dirty page ([S3.62]), a cached segment empty. `check_page(page)` checks each page
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
            if ((page->in_use || ((s->dirty_pages >> i) & 1)) && s->page_count > 1 && !lazy_pages(s) && !writable(s, area))
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
        if (!open_kind && used && s->committed < pages[0].start + pages[0].block_size + kGuardBytes - at - T::kMetaSize)
            return k.fail("one block and its tail guard reach past the segment's committed bytes", at);
        if (!open_kind && used && !guards_intact(&pages[0]))
            return k.fail("one block's guard is damaged (a write before or past the block)", pages[0].start);
        if (!open_kind && s->committed && !writable(s, Span{at + T::kMetaSize, at + T::kMetaSize + s->committed}))
            return k.fail("one-block segment's committed bytes are not writable", at);
        if (T::lazy(s) && (open_kind ? s->writable != 0 || s->dirty_pages != 0 : (s->writable & (s->writable + 1))))
            return k.fail("lazily mapped segment's mapping is not what it uses", at);
        if (s->cached && used) return k.fail("cached segment has pages in use", at);
        *in_use = used;
        return true;
    }

    // [S3.29] The geometry of a page of a bin in use, as both checkers verify it (stage 4's
    // S4.35): its block size is a class of its segment's kind, its start the first address of
    // its area on the grid of the block size's lowest bit ([S3.5]), and its capacity what fits
    // from there to the area's end (at most that in a lazily mapped segment, whose page may be
    // cut short: [S3.62]), never more than Seen has bits for. Returns false after k.fail.
    template <class Checker>
    static bool check_page_grid(Checker& k, const Segment* s, const Page* page, Span area) {
        uintptr_t at = base(page);
        unsigned bin = bin_of(page->block_size);
        if (bin_size(bin) != page->block_size) return k.fail("page block size is no class", at);
        if (bin_kind(bin) != static_cast<PageKind>(s->kind)) return k.fail("bin in a page of the wrong kind", at);
        uint64_t lowbit = page->block_size & (~page->block_size + 1);
        if (page->start != ((area.lo + lowbit - 1) & ~(lowbit - 1))) return k.fail("page start not on its block grid", at);
        uint64_t fits = (area.hi - page->start) / page->block_size;
        if (T::lazy(s) ? page->capacity > fits : page->capacity != fits) return k.fail("page capacity differs from its area", at);
        if (page->capacity > kMaxBlocks) return k.fail("page with more blocks than any class allows", at);
        return true;
    }
};

}  // namespace edu::stage3
