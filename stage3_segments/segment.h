// stage3_segments/segment.h: segments: the map that says which 4 MiB chunks are ours, page
// allocation inside segments of each kind, the segment cache, and the list of all segments.
// Entry points: page_alloc, page_release, one_block_page_alloc, one_block_resize,
// segment_purge, segment_cache_collect, segment_owned, segment_in_window. Pages are formatted
// by page.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/os.h"
#include "stage3_segments/segment_layout.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

// [S3.13] The segment map: for each 4 MiB chunk of the 47-bit user address space, the segment
// that starts there, or &g_foreign, in two levels: a root of 2^11 leaf pointers (16 KiB of .bss,
// null until a leaf exists) and leaves of 2^14 entries (128 KiB), each covering 64 GiB, mapped
// and filled with &g_foreign when the first segment in their range is (a program's segments sit
// in one or two of them). free() reads one entry to learn whether a pointer's segment is ours
// before it dares to read a segment's header, and the entry is the segment: a foreign pointer
// (stack, static data, another allocator's block) finds g_foreign, a stand-in whose page_of
// names one page record with limit 0, which the validity test passes nothing through ([S3.6]),
// so it takes the cold path with no test of its own. (A map of one byte per chunk needed that
// test, a compare and a branch, and the mask that finds the segment: 3 instructions more in
// free. A flat map of 2^25 bytes in .bss cost nothing in memory, but counts against a data
// limit: under `prlimit --data=32MiB` no program could start with the stage preloaded.)
inline constexpr unsigned kMapBits = 47 - kSegmentShift;                    // 25
inline constexpr unsigned kLeafBits = 14;
inline constexpr std::size_t kMapEntries = std::size_t{1} << kMapBits;
inline constexpr std::size_t kLeafEntries = std::size_t{1} << kLeafBits;    // 128 KiB of pointers
inline constexpr std::size_t kRootEntries = kMapEntries / kLeafEntries;    // 2048
struct SegmentMap {
    Segment** leaf[kRootEntries];   // nullptr, or a mapped leaf
};
extern SegmentMap g_segment_map;
extern Segment g_foreign __attribute__((visibility("hidden")));   // every chunk not ours

// The map's entry for p's chunk: its segment, or &g_foreign (no leaf, or beyond the map too).
inline const Segment* map_lookup(const void* p) {
    uintptr_t chunk = reinterpret_cast<uintptr_t>(p) >> kSegmentShift;
    if (chunk >= kMapEntries) return &g_foreign;
    Segment* const* leaf = g_segment_map.leaf[chunk >> kLeafBits];
    return leaf ? leaf[chunk & (kLeafEntries - 1)] : &g_foreign;
}
inline bool segment_owned(const void* p) { return map_lookup(p) != &g_foreign; }

// [S3.60] The map's window, for free's fast path: the first leaf the program's segments needed
// and the start of the 64 GiB it covers (a program's segments rarely leave it). One subtraction
// and one bound replace the root's lookup, so the fast test is stage 4's arena test (S4.33),
// three instructions fewer than segment_owned. A pointer outside the window fails it and goes
// to free_generic, which asks segment_owned, and for a segment of ours moves the window to its
// leaf (map_window_follow): a program whose segments cross a 64 GiB boundary pays the slow
// free once per crossing, not on every free. Until a leaf exists the window has no chunks:
// everything fails its bound, and no leaf is read.
struct MapWindow {
    uintptr_t base;                // address of the window's first chunk
    Segment* const* leaf;          // its leaf (nullptr while chunks == 0)
    uintptr_t chunks;              // kLeafEntries, or 0 before the first leaf
};
extern MapWindow g_map_window __attribute__((visibility("hidden")));   // hidden: no GOT load

// p's chunk in the window: below g_map_window.chunks when the window covers p.
inline uintptr_t window_chunk(const void* p) {
    return (reinterpret_cast<uintptr_t>(p) - g_map_window.base) >> kSegmentShift;
}
inline bool segment_in_window(const void* p) {
    uintptr_t chunk = window_chunk(p);
    return chunk < g_map_window.chunks && g_map_window.leaf[chunk] != &g_foreign;
}
void map_window_follow(const void* p);   // p's segment is ours: the window becomes its leaf

// A segment's header, page areas, purge, commitment and layout checks are shared with stage 4
// (segment_layout.h); this is what stage 3 plugs in.
void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind);   // page.h
struct LayoutTraits {
    using Segment = stage3::Segment;
    using Page = stage3::Page;
    static constexpr std::size_t kMetaSize = stage3::kMetaSize;
    static constexpr const char* kStageName = stage3::kStageName;   // in the guards' diagnostics
    static void page_reset(Page* page, Segment* s, uint8_t index, PageKind kind) {
        stage3::page_reset(page, s, index, kind);
    }
    static bool lazy(const Segment* s) { return s->lazy != 0; }
    // A lazily mapped segment's memory is mapped where it becomes writable ([S3.58]).
    static bool make_writable(void* address, std::size_t size, bool lazy) {
        return lazy ? os_map_writable_at(address, size) : os_make_writable(address, size);
    }
    static bool unmap(void* address, std::size_t size) { return os_unmap(address, size); }
    static void count_committed(int64_t bytes) { os_commit_bytes(bytes); }
    static bool decommit(void* address, std::size_t size) { return os_decommit(address, size); }
    static bool is_free_sentinel(const Page* page) { return page->heap == nullptr; }
};
using Layout = SegmentLayout<LayoutTraits>;

// The page area of a page: [lo, hi) (segment_layout.h, shared with stage 4).
Span page_area(const Segment* segment, const Page* page);

// A free page of a small or medium segment, counted in the footprint, not yet formatted
// (page_format in page.h does that); nullptr when no memory can be mapped.
Page* page_alloc(PageKind kind);

// A page holding one block of `block_bytes` (rounded up to kOsPage) whose start is aligned to
// `alignment` (at most kMaxAlignment): a large page (a 4 MiB segment of its own, from the cache
// when one is there; under an address-space limit mapped only as far as the block reaches,
// [S3.58]) when it fits in one, else a huge segment mapped for it. The block is formatted and counted
// in the footprint; the caller hands it out. nullptr when mmap fails.
Page* one_block_page_alloc(std::size_t block_bytes, std::size_t alignment);

// [S3.32] Grows or shrinks a large block in place, when `bytes` (rounded up to kOsPage) still
// fits between its start and its segment's end; commits what the block newly reaches.
bool one_block_resize(Page* page, std::size_t bytes);

// Gives a page back to its segment: its record is reset to the free sentinel and its memory
// stays committed ("dirty") until the purge (small, medium); an empty segment goes to the
// cache (or is unmapped: huge, or cache full). One-block pages keep their memory while their
// segment waits in the cache.
void page_release(Page* page);

// [S3.34] The purge: dirty pages are decommitted (madvise, adjacent pages in one call) once
// kPurgeDelay ticks have passed since their segment last released a page, or all now
// (`force`); so is the memory a cached large segment kept from its last block. A page that
// empties and refills within the delay costs no system call and no page fault; page_alloc
// prefers dirty pages for that reason. kPurgeDelay and kCacheDelay are segment_layout.h's
// ([S3.86]): stage 4's heaps count the same delays.
void segment_purge(bool force);
bool purge_pending();

// The heap clock: generic malloc calls so far (heap.cc ticks it). Delays are counted in it.
extern uint64_t g_clock;

// [S3.14] The segment cache: up to kCacheSegments empty segments wait kCacheDelay ticks of the
// heap clock before being unmapped, so a program that frees its last large block and allocates
// another at once gets it without a system call. `force` unmaps all of them now. A block of
// 64-256 KiB takes a 4 MiB segment of its own, and a program that keeps a dozen of them live and
// replaces them (mstress) overflowed a cache of eight, or outwaited a delay of one purge delay,
// on many frees, each an munmap and the next malloc an mmap (the chapter, section 8); sixteen
// still overflowed when the live blocks swung wider, and gave back segments whose next block
// faulted every page again. [S3.87] So 64, stage 4's count, bounded as stage 4 bounds it: the
// 4 MiB segments keep at most kCacheCommitted committed until their purge (the oldest go back
// first), the huge ones at most kCacheBytes of address space. All of these are segment_layout.h's,
// one set for both stages.
std::size_t segment_cache_committed();   // [S3.87] what the cached 4 MiB segments keep committed
// [S3.35] Huge segments (one block over 4 MiB) are cached too, up to kHugeCacheMax each: a
// program that frees a 20 MiB buffer and asks for another keeps the mapping, and the pages the
// last block touched, instead of paying munmap, mmap and a page fault per touched page. The
// limits are glibc's: it maps blocks above its threshold (at most 32 MiB) and keeps up to twice
// that at the top of its heap; a freed huge segment keeps its memory kPurgeDelay ticks, like a
// large one. A request takes the smallest cached segment that holds it and gives back
// (madvise) what the last block had committed beyond twice the new one's reach ([S3.53]),
// unless the live huge blocks in all keep within twice what they reach with it ([S3.78]). A
// huge segment is mapped in whole 4 MiB chunks (address space only): mappings of such sizes
// land aligned below one another, where others cost os_map_aligned a second mmap and trims
// ([S3.12]).
void segment_cache_collect(bool force);
// [S3.52] Under pressure: every cached segment unmapped; false when the cache held none.
bool segment_relieve();
unsigned segment_cache_count();
// [S3.78] What the live huge blocks reach and commit, in all (the checker sums it anew).
const HugeTotals& huge_totals();

// Every mapped segment (cached ones included), for the walker and the checker.
Segment* first_segment();
// The segments of a kind that have a free page, for the checker.
Segment* first_open_segment(PageKind kind);
Segment* first_cached_segment();
Segment* first_purge_segment();

}  // namespace edu::stage3
