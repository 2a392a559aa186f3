// stage4_threads/segment.h: a heap's segments: pages handed out of them and taken back, the
// heap's open lists, segment cache and purge, and segments claimed from or given back to the
// arena. Entry points: page_alloc, one_block_page_alloc, one_block_resize, page_release,
// segment_purge, segment_cache_collect, segment_attach / segment_detach, segment_give_back.
// All of it runs on the owner thread; abandoning and reclaiming are abandon.h's.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/segment_layout.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/os.h"
#include "stage4_threads/types.h"

namespace edu::stage4 {

// A segment's header, page areas, purge, commitment and layout checks are stage 3's
// (segment_layout.h: S3.42, S3.43, S3.45) on stage 4's records and metadata.
void page_reset(Page* page, Segment* segment, uint8_t index, PageKind kind);   // page.h
struct LayoutTraits {
    using Segment = stage4::Segment;
    using Page = stage4::Page;
    static constexpr std::size_t kMetaSize = stage4::kMetaSize;
    static constexpr const char* kStageName = stage4::kStageName;   // in the guards' diagnostics
    static void page_reset(Page* page, Segment* s, uint8_t index, PageKind kind) {
        stage4::page_reset(page, s, index, kind);
    }
    static bool lazy(const Segment* s) { return s->lazy != 0; }
    // arena_commit knows whether the slot is held ([S4.68]): it mprotects or maps.
    static bool make_writable(void* address, std::size_t size, bool) { return arena_commit(address, size); }
    static bool unmap(void* address, std::size_t size) { return os_unmap(address, size); }
    static void count_committed(int64_t bytes) { os_commit_bytes(bytes); }
    static bool decommit(void* address, std::size_t size) { return os_decommit(address, size); }
    static bool is_free_sentinel(const Page* page) {
        return page->xthread_free.load(std::memory_order_relaxed) == 0 &&
               page->heap.load(std::memory_order_relaxed) == nullptr;
    }
};
using Layout = stage3::SegmentLayout<LayoutTraits>;

// The page area of a page: [lo, hi), stage 3's (segment_layout.h) with stage 4's metadata.
using stage3::Span;
Span page_area(const Segment* segment, const Page* page);

// [S4.19] Segments per heap. Stage 3 kept one open list per kind, one cache and one purge list
// for the process; here each heap has its own, so no list is ever shared and no lock guards
// one. A segment comes from the heap's cache, or from the arena (arena_claim: the only step
// that touches shared state, one CAS on a bitmap word), and goes back to the arena when its
// heap no longer wants it. page_alloc: a free page of the kind, counted in the footprint;
// nullptr when the arena is exhausted.
Page* page_alloc(Heap* heap, PageKind kind);

// A page holding one block of `block_bytes` (rounded up to kOsPage) aligned to `alignment`
// (<= kMaxAlignment): a large page when it fits one 4 MiB segment, else a huge segment of
// several arena slots. Formatted and handed out (used 1); nullptr when the arena has no room.
Page* one_block_page_alloc(Heap* heap, std::size_t block_bytes, std::size_t alignment);

// Grows or shrinks a large block in place within its segment (S3.32); owner only.
bool one_block_resize(Page* page, std::size_t bytes);

// A page goes back to its segment (dirty until the purge, as S3.34); a segment left with no
// page in use goes to the heap's cache or back to the arena.
void page_release(Heap* heap, Page* page);

// [S4.68] Once the arena has gone lazy, the heap's segments that a reservation still holds are
// trimmed to what they map (arena_trim), once per heap: by the thread that lowered the limit
// (stage4.cc's limit_set), and by any other at its next tick; segment_attach trims one the heap
// reclaims afterwards. A segment abandoned before the switch stays held until reclaimed.
void segment_trim_held(Heap* heap);

// [S4.69] Under pressure: each of the heap's segments keeps writable only the prefix of slots
// that its pages in use (or its one block) reach, the rest given back (arena_uncommit). A
// segment with dirty pages is skipped: the purge comes first (heap_relieve). True if any was.
bool segment_shrink(Heap* heap);

// The delays of stage 3 (S3.14, S3.34), per heap, in ticks of the heap's clock: the same
// constants (S3.86, segment_layout.h; stage 3 purged after 1024 ticks until it took stage 4's
// 4096). A cached segment's pages are purged long before the segment itself goes back, so the
// cache costs its metadata, 12 KiB a segment (types.h, kMetaSize), and saves a claim, whose
// fresh memory faults page by page: when threads come and go (larson), segments pass from heap
// to heap instead of from heap to kernel to heap.
using stage3::kCacheDelay;
using stage3::kPurgeDelay;
// [S4.87] Up to kCacheSegments empty segments a heap keeps (64; stage 3 kept sixteen until it
// took this count and its bound, S3.87, segment_layout.h). A block over 64 KiB has a 4 MiB segment of its own, so a program
// whose live large blocks swing by more than the cache holds gives segments back at the top of
// each swing and claims fresh ones at the bottom, and every page of a fresh one faults again:
// mstress-like (a dozen such blocks live on average, 10 million steps) swung past sixteen 167
// times, each an mmap over the segment and then about 45 page faults (chapter, section 10). The
// count costs what the cache always cost: a cached segment's memory is purged after kPurgeDelay
// like any dirty page, so what it keeps beyond that is address space and 12 KiB of metadata.
// Until the purge, the one-slot segments it holds keep at most kCacheCommitted committed (the
// oldest go back first): a program that frees 64 blocks of 1 MiB gets most of them back at once,
// as it did with sixteen. The bytes bound stays stage 3's, for huge segments only (S4.45):
// Heap::cache_bytes sums the cached huge segments, which hold many megabytes each.
using stage3::kCacheCommitted;
using stage3::kCacheSegments;
// [S4.45] Huge segments are cached as in stage 3 (S3.35), per heap: up to kHugeCacheMax each
// and kCacheBytes of huge segments in all, so a thread that frees a 20 MiB buffer and asks for another keeps its
// arena slots and touched pages instead of releasing them (an mmap) and claiming fresh ones
// (another mmap and a fault per page touched). A request takes the smallest cached huge
// segment that holds it and decommits what the last block reached beyond twice the new one's
// reach (S3.53). The bounds are stage 3's (segment_layout.h), one set for both stages.
// [S4.85] Unless the heap's live huge blocks in all commit at most twice what they reach with
// it (S3.78, Heap::huge): then it keeps everything. A reclaimed segment's live block joins the
// totals of the heap that reclaims it (segment_attach), an abandoned one leaves its heap's.
using stage3::kCacheBytes;
using stage3::kHugeCacheMax;
void segment_purge(Heap* heap, bool force);
void segment_cache_collect(Heap* heap, bool force);
bool purge_pending(const Heap* heap);

// Adds a segment to `heap`: its owned[] byte, its list of segments, and its open list if it
// has a free page. And the reverse, which leaves the segment on no list of any heap.
void segment_attach(Heap* heap, Segment* segment);
void segment_detach(Heap* heap, Segment* segment);
// Puts an attached segment (a reclaimed one) where it belongs among its heap's lists: the purge
// list if it has dirty pages, the cache (or back to the arena) if no page is in use, the open
// list if it has a free page.
void segment_settle(Heap* heap, Segment* segment);

// [S4.20] Giving a segment back to the arena: unpublish its start marker, uncount and decommit
// its memory (the next owner finds zeros), release its bitmap bits. In that order, so that a
// claimer that sees the bits clear (acquire) sees a segment nobody uses.
// The segment must be detached already.
void segment_give_back(Segment* segment);

}  // namespace edu::stage4
