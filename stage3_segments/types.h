// stage3_segments/types.h: the layout of stage 3's heap: geometry, size classes, blocks, pages,
// segments, page queues and heaps, with their invariants written as equations.
// No code beyond one-line helpers: bins.h classifies sizes, segment.h maps memory, page.h
// carves it, heap.h finds pages, alloc.h is the fast path, check.cc verifies all of this.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edu::stage3 {

inline constexpr const char* kStageName = "stage3_segments";   // in every diagnostic
inline constexpr int kStageNumber = 3;                          // Stage::number

// [S3.1] The layers. A request walks down only as far as it must:
//
//    malloc(n), n <= 1 KiB    heap->direct[(n+7)/8] --> page --> pop page->free   (alloc.h)
//         | page->free empty, or n > 1 KiB
//         v
//    malloc_generic           bin_of(n) --> heap->queues[bin]: collect, extend, or
//         |                   move full pages aside                             (heap.cc)
//         | no page has room
//         v
//    page_alloc               a free page of a segment of the right kind        (segment.cc)
//         | no segment has a free page
//         v
//    take_segment             the segment cache, or mmap 4 MiB aligned to 4 MiB  (os.cc)
//
//    free(p)   segment = the map's entry for p's 4 MiB chunk ([S3.13]): the segment at
//              p & ~(4 MiB - 1), or a stand-in whose page passes nothing if p is not ours;
//              page = segment->page_of[(p >> 16) & 63]; push p on page->local_free;
//              --page->used.  No search, no lock, no size.

// [S3.2] Geometry. Segments are 4 MiB and aligned to 4 MiB, so the segment of any pointer is
// one AND, and its first 8 KiB hold the segment's metadata (header, page map, page records).
//
//    kind     page size          pages/segment   block sizes        why
//    small    64 KiB             64              16 B .. 8 KiB      >= 7 blocks even in page 0
//    medium   512 KiB            8               8 KiB+ .. 64 KiB   >= 8 blocks per page
//    large    the segment        1               64 KiB+ .. ~4 MiB  one block, reusable segment
//    huge     a segment > 4 MiB  1               the rest           one block, mapped for it
//
//    small segment (aligned to 4 MiB)
//    +------+---------------+-----------+-----------+-- ... --+-----------+
//    | meta | page 0 blocks |  page 1   |  page 2   |         |  page 63  |
//    | 8 KiB|    56 KiB     |  64 KiB   |  64 KiB   |         |  64 KiB   |
//    +------+---------------+-----------+-----------+-- ... --+-----------+
//    ^ Segment: page_of[64], header, pages[64]          (page 0 is shorter by the metadata)
//
// Inequalities the constants keep (static_asserts below):
//    meta bytes >= sizeof(Segment) + 64 * sizeof(Page)     (the small kind needs the most)
//    small page - meta >= 7 * small max                    (page 0 still holds 7 blocks)
//    medium page >= 8 * medium max                         (a medium page holds 8 blocks)
//    max(meta, max alignment) + large max <= segment       (a block of 2 MiB less its 16-byte
//                                                           tail guard ([S3.67]) aligned to 2 MiB
//                                                           still fits a large segment)
inline constexpr unsigned kSegmentShift = 22;
inline constexpr std::size_t kSegmentSize = std::size_t{1} << kSegmentShift;   // 4 MiB
inline constexpr uintptr_t kSegmentMask = kSegmentSize - 1;
inline constexpr std::size_t kMetaSize = 8 * 1024;            // bytes at every segment's start
inline constexpr unsigned kSmallPageShift = 16;               // 64 KiB
inline constexpr unsigned kMediumPageShift = 19;              // 512 KiB
inline constexpr unsigned kSlotShift = kSmallPageShift;       // page_of granularity
inline constexpr unsigned kSlots = kSegmentSize >> kSlotShift;  // 64 entries in page_of
inline constexpr std::size_t kSmallMax = 8 * 1024;            // largest small block
inline constexpr std::size_t kMediumMax = 64 * 1024;          // largest medium block
inline constexpr std::size_t kLargeMax = 2 * 1024 * 1024 - 16;   // a large block at any alignment
inline constexpr std::size_t kOsPage = 4096;                  // commit / decommit granularity
inline constexpr std::size_t kAlignment = 16;                 // every block is 16-aligned
inline constexpr std::size_t kMaxAlignment = 2 * 1024 * 1024;  // Stage::max_alignment
inline constexpr std::size_t kMaxRequest = std::size_t{1} << 46;  // larger: ENOMEM at once

enum class PageKind : uint8_t { small, medium, large, huge };
inline constexpr const char* kPageKindNames[] = {"small", "medium", "large", "huge"};

// [S3.3] Size classes ("bins"). Exact 16-byte classes up to 128 bytes (at most 15 bytes
// wasted), then four classes per power of two: consecutive classes differ by at most 5/4, so
// above 128 bytes a block wastes under 20% of itself (129 bytes in a 160-byte block).
// Every class is a multiple of 16, so every block is 16-aligned; a class of 2^k bytes lands
// on 2^k boundaries (pages start there, see page.cc), which aligned_alloc relies on.
//
//    bin  block       bin  block       bin  block       bin  block       bin  block
//      0     16         9    192        18    896        27   4096        36  20480
//      1     32        10    224        19   1024        28   5120        37  24576
//      2     48        11    256        20   1280        29   6144        38  28672
//      3     64        12    320        21   1536        30   7168        39  32768
//      4     80        13    384        22   1792        31   8192 <s     40  40960
//      5     96        14    448        23   2048        32  10240        41  49152
//      6    112        15    512        24   2560        33  12288        42  57344
//      7    128        16    640        25   3072        34  14336        43  65536 <m
//      8    160        17    768        26   3584        35  16384
//    (<s: largest small class, <m: largest medium class; bins.h has the formula and
//    its test recomputes this table)
// Requests of 0..1024 bytes reach their page through heap->direct without computing a bin.
inline constexpr unsigned kBinCount = 44;
inline constexpr unsigned kSmallBins = 32;                 // bins 0..31 live in small pages
inline constexpr unsigned kFullQueue = kBinCount;          // pages with no free block
inline constexpr unsigned kLargeQueue = kBinCount + 1;     // large and huge pages
inline constexpr unsigned kQueueCount = kBinCount + 2;
inline constexpr std::size_t kDirectMax = 1024;            // largest request served via direct
inline constexpr unsigned kDirectSlots = kDirectMax / 8 + 1;  // 129: index (n + 7) / 8

// [S3.4] A free block. The first word links the free list (encoded with the page's keys in
// secure mode, see secure.h); the second holds the freed mark, so a block offered to free()
// that already carries it is suspected of being free, and confirmed by searching its page's
// lists. malloc clears the mark, extension sets it: every block on a list carries it.
//
//    free block: | link (encoded next) | kFreedMark ^ keys[1] | ...stale bytes... |
//    used block: | program bytes       | 0 at hand-out        | ...               |
inline constexpr uint64_t kFreedMark = 0xffffffffdeadf4eeull;   // an imm32, sign-extended
struct Block {
    uintptr_t link;            // next free block, encoded (secure) or plain; 0 ends the list
    uint64_t mark;             // kFreedMark ^ page keys[1] while free
};

struct Heap;
struct Segment;

// [S3.5] A page: blocks of one size, carved lazily, with two free lists ("free-list sharding").
//
//    page area (start is rounded up to the block size's lowest set bit, at most the page's
//    own alignment, so blocks of 2^k bytes are 2^k-aligned)
//    +-------+---------+---------+---------+---------+-- ... --+-------------------+------+
//    |padding| block 0 | block 1 | block 2 | block 3 |         | uncarved ...      | tail |
//    |       |  used   |  free   |  used   |local_fr |         | (capacity-carved) | < bs |
//    +-------+---------+---------+---------+---------+-- ... --+-------------------+------+
//            ^ start                                           ^ start + carved * block_size
//
// `free` is what malloc pops; free() pushes on `local_free`; when `free` runs dry the generic
// path swaps `local_free` in (one pointer move, however many blocks). Invariants (check.cc):
//    used + |free| + |local_free| + (capacity - carved) == capacity
//    1 <= carved <= capacity,   every list node is a carved block carrying the freed mark
//    the page sits in the heap's full queue  =>  no list is non-empty, carved == capacity,
//                                                and its limit is 0, so every free() into it
//                                                goes generic
//
// [S3.6] The validity test free() runs on every pointer: with n = (uint32)(p - start),
//    n * magic (mod 2^64) < limit   <=>   n = q * block_size  and  q < carved
// where magic = floor(2^64 / block_size) + 1 and limit = (carved - 1) * e + 1, e = magic *
// block_size - 2^64 (0 < e <= block_size). For n = q*bs + r the product is q*e + r*magic
// (no wrap: n < 2^32 and bs <= 2^16), so any r > 0 gives at least magic > 2^48 >= limit, and
// r = 0 gives q*e, which is < limit exactly when q <= carved - 1. One multiply and one
// compare reject misaligned, interior, uncarved and padding pointers (after D. Lemire, O.
// Kaser, N. Kurz, "Faster remainder by direct computation", 2019). One-block pages use
// magic 1, limit 1 (only n = 0 passes). The bound is exclusive so that limit 0 passes nothing
// at all, whatever the pointer: free pages, full pages (which keep their class's magic) and
// the page of g_foreign, which the segment map gives every chunk not ours ([S3.13]), all use
// it. A full page's blocks are checked by the generic path with the limit computed from
// carved (page_has_block), which then moves the page out of the full queue. Being full, or
// foreign, costs the fast path nothing.
// The test's magic for a block size d: floor(2^64 / d) + 1, without 128-bit arithmetic
// (2^64 = UINT64_MAX + 1). Stage 4 builds its per-bin table from it at compile time.
constexpr uint64_t magic_for(uint64_t d) { return UINT64_MAX / d + (UINT64_MAX % d == d - 1 ? 2 : 1); }

struct Page {
    // -- bytes 0..39: everything the plain fast paths touch (one or two cache lines: records
    //    are 112 bytes apart, so only some start on a 64-byte boundary) --
    Block* free;               // malloc pops here; nullptr: go generic
    Block* local_free;         // free() pushes here
    uint32_t used;             // blocks handed out
    uint32_t start32;          // low 32 bits of `start` (the validity test's base)
    uint64_t magic;            // see [S3.6]
    uint64_t limit;            // see [S3.6]
    uint64_t block_size;       // bytes per block (one-block pages: the block's usable bytes)
    uint64_t keys[2];          // secure mode's per-page keys; {0, 0} when secure is off
    // -- the generic path's --
    uintptr_t start;           // address of block 0
    Page* next;                // in its heap queue
    Page* prev;
    Heap* heap;                // owner; nullptr while the page is free
    uint32_t capacity;         // blocks that fit between start and the page's end
    uint32_t carved;           // blocks threaded onto a list so far
    uint16_t retire_expire;    // fresh pages left before a retired empty page is freed; 0: not
    uint16_t check_stamp;      // written by the checker: "seen in a queue in this check"
    uint8_t queue;             // index into heap->queues (a bin, kFullQueue, kLargeQueue)
    uint8_t kind;              // PageKind
    uint8_t in_use;            // 1 while owned by a heap
    uint8_t index;             // position in its segment's pages[]
};
static_assert(sizeof(Page) == 112);
static_assert(offsetof(Page, block_size) == 40, "the plain fast paths read bytes 0..39 only");

// [S3.7] A segment: page_of first (the free fast path indexes it at offset 0), then the
// header, then the page records, all inside the first kMetaSize bytes.
//
//    page_of[i] = the page covering bytes [i * 64 KiB, (i + 1) * 64 KiB) of the segment:
//      small:  &pages[i]        medium: &pages[i / 8]        large, huge: &pages[0]
//
// Only a segment's first 4 MiB are reachable through the mask, so a huge segment registers
// its first 4 MiB chunk only (its block starts there); the rest of it is nobody's.
// Invariants: used_pages == |{pages in use}|; free_pages has bit i set iff pages[i] is free;
// dirty_pages is a subset of free_pages; the segment is on the purge list iff dirty_pages is
// non-empty, or it is a cached large segment still holding its last block's memory;
// committed == the areas of the pages in use or dirty (small, medium), or what the one
// block reaches (large, huge); the segment is on its kind's "has a free page" list iff it is
// small or medium, in use, and free_pages != 0; a cached segment has used_pages == 0.
struct Segment {
    Page* page_of[kSlots];     // 512 bytes: slot -> page record
    Segment* next;             // all-segments list (walk, check, cache membership below)
    Segment* prev;
    Segment* next_open;        // "has a free page" list of its kind, or the cache list
    Segment* prev_open;
    std::size_t size;          // bytes of its window: kSegmentSize, or more (huge)
    uint64_t free_pages;       // bit i: pages[i] is free
    uint64_t cache_expire;     // clock tick after which a cached segment is unmapped
    uint32_t page_count;       // 64, 8 or 1
    uint32_t used_pages;       // pages owned by a heap
    uint32_t page_shift;       // log2 of the page size (large, huge: kSegmentShift)
    uint8_t kind;              // PageKind of every page
    uint8_t cached;            // 1 while in the segment cache
    uint8_t on_open_list;      // 1 while on its kind's "has a free page" list
    uint8_t on_purge_list;     // 1 while on the purge list
    uint64_t committed;        // bytes of this segment counted in the footprint
    uint64_t dirty_pages;      // bit i: pages[i] is free but its memory is still committed
    uint64_t purge_expire;     // clock tick after which dirty pages are decommitted
    Segment* next_purge;       // segments with dirty pages
    Segment* prev_purge;
    uint64_t writable;         // bit i: slot i (size / 64: 64 KiB of 4 MiB) is writable ([S3.47])
    uint8_t lazy;              // 1: mapped only as far as it is writable ([S3.58])
    uint8_t pad_[7];           // header is 128 bytes after page_of
    Page* pages() { return reinterpret_cast<Page*>(this + 1); }
};
static_assert(offsetof(Segment, page_of) == 0);
static_assert(sizeof(Segment) == 512 + 128);
static_assert(kMetaSize >= sizeof(Segment) + kSlots * sizeof(Page), "metadata fits");
static_assert((std::size_t{1} << kSmallPageShift) - kMetaSize >= 7 * kSmallMax);
static_assert((std::size_t{1} << kMediumPageShift) >= 8 * kMediumMax);
static_assert((kMetaSize > kMaxAlignment ? kMetaSize : kMaxAlignment) + kLargeMax <= kSegmentSize);
static_assert(kMaxAlignment < kSegmentSize, "an aligned block always starts in chunk 0");

// [S3.78] The live huge blocks' memory, in all: the bytes their blocks reach past their
// segments' metadata (guards included), and the bytes their segments have committed there. A
// cached huge segment taken for a smaller block keeps what the last block committed beyond the
// new one's reach as long as the huge blocks in all commit at most twice what they reach:
// [S3.47]'s bound for each block, kept by the sum instead of each block, so a program that
// replaces buffers of varying sizes pays no madvise while the others' slack leaves room. The
// bound holds when a block is taken; a free may leave the rest above it, and the next takes
// trim to [S3.53]'s bound until it holds again. Stage 3 keeps one; stage 4 one per heap
// (its Heap::huge). The layout (segment_layout.h) counts and trims with it.
struct HugeTotals {
    std::size_t reach = 0;
    std::size_t committed = 0;
    bool keeps(std::size_t committed_by, std::size_t reach_of) const {
        return committed + committed_by <= 2 * (reach + reach_of);
    }
};

inline Segment* segment_of(const void* p) {
    return reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(p) & ~kSegmentMask);
}
// Whether `b` is a block in the 4 MiB chunk of `page`'s record, as every block of a
// page with more than one block is (the chunk of its segment's header). Tested on b - 1: no
// block starts at its chunk's first byte (the header is there), and for b == null, b - 1 is
// the top of the address space, in no page's chunk (null itself would be in chunk 0, where a
// static g_empty_page can lie: a binary that is not position-independent, valgrind's loader).
// Stage 4 uses it too (its pages lie in 4 MiB segments alike): `page` is any page record.
inline bool block_in_page_chunk(const void* b, const void* page) {
    uintptr_t x = reinterpret_cast<uintptr_t>(page) ^ (reinterpret_cast<uintptr_t>(b) - 1);
    return x < kSegmentSize;
}
inline Page* page_of(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    return segment_of(p)->page_of[(a >> kSlotShift) & (kSlots - 1)];
}

// [S3.8] A heap: page queues per bin, the full queue, the large queue, and the direct cache.
//
//    direct[0..128]  --> queues[bin_of(8 * i)].first, or &g_empty_page when that queue is empty
//    queues[0..43]   pages of bin b with (maybe) free blocks, most recently useful first
//    queues[44]      full: no free, no local_free, nothing left to carve
//    queues[45]      large and huge pages, one block each
//
// The empty page has free == nullptr, so a slot with no page costs the fast path nothing: the
// same "free list empty" branch sends it to the generic path. Invariants (check.cc):
//    direct[i] == first(queues[bin_of(8 i)]) or &g_empty_page when that queue is empty
//    every page in use is in exactly one queue of its own heap, the one named by page->queue
struct PageQueue {
    Page* first;
    Page* last;
};

struct Heap {
    Page* direct[kDirectSlots];        // the fast path's table, at offset 0
    PageQueue queues[kQueueCount];
    Heap* next;                        // all heaps (the default heap first)
    Heap* prev;
    uint32_t retired_min;              // bins that may hold a retired page: [min, max]
    uint32_t retired_max;
    uint32_t page_count;               // pages owned
    uint32_t is_default;               // 1 for the heap behind malloc
};

}  // namespace edu::stage3
