// stage4_threads/types.h: the layout of stage 4: stage 3's geometry and size classes (reused),
// the arena, and the records that changed: pages with a cross-thread list, segments owned by a
// heap, heaps owned by a thread. Invariants are written as equations; check.cc verifies them.
// No code beyond one-line helpers. Who may touch which field is said field by field.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "stage3_segments/encoding.h"
#include "stage3_segments/types.h"

namespace edu::stage4 {

inline constexpr const char* kStageName = "stage4_threads";   // in every diagnostic
inline constexpr int kStageNumber = 4;                         // Stage::number

// [S4.1] What stays from stage 3. Where blocks are is unchanged: 4 MiB segments aligned to
// 4 MiB, 64 KiB small and 512 KiB medium pages, one-block large and huge pages, the 44 size
// classes of bins.h, the direct cache, the validity test (only the metadata
// at the start of a segment grew, see kMetaSize below).
// Stage 4 takes these constants, the Block record and bins.h (bin_of and friends) from stage 3
// itself. What changed is who may touch what: every record below says it field by field.
using stage3::Block;
using stage3::block_in_page_chunk;
using stage3::kAlignment;
using stage3::kBinCount;
using stage3::kDirectMax;
using stage3::kDirectSlots;
using stage3::kFullQueue;
using stage3::kLargeMax;
using stage3::kLargeQueue;
using stage3::kMaxAlignment;
using stage3::kMaxRequest;
using stage3::kMediumMax;
using stage3::kMediumPageShift;
using stage3::kOsPage;
using stage3::kQueueCount;
using stage3::kSegmentMask;
using stage3::kSegmentShift;
using stage3::kSegmentSize;
using stage3::kSlots;
using stage3::kSlotShift;
using stage3::kSmallMax;
using stage3::kSmallPageShift;
using stage3::PageKind;

// [S4.48] The freed mark, keyed. Stage 3's mark is one constant, so a live block whose second
// word happens to hold it looks free; stage 3 confirms every suspicion on its lists, but in
// stage 4 two checks cannot: a remote free may not read the owner's lists, and malloc's test
// of the block it hands out (S4.32) has no time to. So stage 4's mark is the block's address
// XOR a random key drawn when the arena is reserved (top bit set: never 0, never a pointer).
// A program cannot write it by accident: the value that belongs at p + 8 appears nowhere but
// at p + 8, and only while p is free. A remote free that finds it anyway does not decide: it
// leaves the suspect mark instead, and the owner confirms or clears it (S4.46).
// Hidden (defined in this library): the fast paths load it straight, not through the GOT.
extern uint64_t g_mark_key __attribute__((visibility("hidden")));
inline uint64_t freed_mark(const void* b) { return reinterpret_cast<uintptr_t>(b) ^ g_mark_key; }
inline uint64_t suspect_mark(const void* b) { return freed_mark(b) ^ 1; }

// [S4.2] The picture. Each thread has a heap; each heap owns segments; each segment lies in
// the one arena; each page has three free lists, and only the third is shared.
//
//    thread A                    thread B                     the arena (one reservation)
//    t_heap --> Heap A           t_heap --> Heap B            +----+----+----+----+-- ...
//               owned[] ---------------------------------->   | A  | B  | A  |    |
//               queues, direct                                +----+----+----+----+-- ...
//                  |                                           claimed bits: 1 1 1 0 ...
//                  v                                           abandoned bits: 0 0 0 0 ...
//               page of A:  free --> ...        (A pops)
//                           local_free --> ...  (A pushes)
//                           xthread_free --> ...  <-- B pushes with one CAS
//
//    malloc: t_heap->direct[(n + 7) / 8] -> page -> pop free           no atomic, no lock
//    free:   slot = (p - arena base) >> 22; t_heap->owned[slot]?       no atomic, no lock
//              yes: push on local_free (stage 3's fast path)
//              no:  push on the page's xthread_free with a CAS (remote.h)
//
// A thread that exits abandons its segments (abandon.h): their blocks stay valid and anyone may
// free them; a thread that needs a page reclaims them. Segments come from the arena (arena.h).

// [S4.3] The arena: one reservation of up to 64 GiB of address space (less if the system
// refuses or limits it: halved down to one segment, S4.15), cut into 4 MiB slots. A segment
// is a run of slots, claimed in a bitmap with compare-and-swap. Because every segment lies in
// it, "is this pointer in a segment?" is a subtraction and a compare, and "is it mine?" one
// byte of the thread's heap.
inline constexpr unsigned kArenaMaxShift = 36;                               // 64 GiB
inline constexpr std::size_t kArenaMaxBytes = std::size_t{1} << kArenaMaxShift;
inline constexpr std::size_t kArenaMinBytes = kSegmentSize;                 // one slot
inline constexpr uint32_t kArenaSlots = kArenaMaxBytes >> kSegmentShift;     // 16384
inline constexpr uint32_t kArenaWords = kArenaSlots / 64;                    // bitmap words

// [S4.4] The delayed-free state, kept in the low two bits of a page's xthread_free word (blocks
// are 16-aligned, so those bits of a block address are always zero). It answers one question
// for a thread that frees a block of someone else's page: push it on the page, or on the heap?
//
//    to_page   the usual: push on page->xthread_free                           (set by owner)
//    to_heap   the page is full (or holds one large block): the next remote free goes to the
//              owner heap's delayed_free list, so the owner learns the page has room again
//    pushing   a remote thread is pushing on the owner's heap list right now; the owner waits
//              before it changes the state, frees the page, or abandons the heap
//    never     the page has no heap (abandoned): push on the page, always
//
//    to_page --owner: page full--> to_heap --remote free--> pushing --remote: done--> to_page
//    any --owner: thread exit--> never --owner: reclaimed--> to_page or to_heap
enum class Delay : uintptr_t { to_page = 0, to_heap = 1, pushing = 2, never = 3 };
inline constexpr uintptr_t kDelayMask = 3;

struct Heap;
struct Segment;

// [S4.5] A page: stage 3's page plus what other threads need. Three lists now:
//    free          malloc pops                    owner only
//    local_free    the owner's free pushes        owner only
//    xthread_free  other threads' frees push      atomic: CAS push by anyone, taken whole by
//                                                 the owner (its low bits: the Delay state)
// `used` counts blocks on none of the owner's two lists, so a block on xthread_free (or on the
// heap's delayed list) still counts as used until the owner collects it. Invariants (check.cc):
//    used + |free| + |local_free| + (capacity - carved) == capacity
//    |xthread_free| + |blocks of this page on heap->delayed_free| <= used
//    live blocks of the page = used - |xthread_free| - |its blocks on delayed_free|
//    heap == owner heap while the page is in use by a heap; nullptr (and Delay never) while
//    its segment is abandoned; Delay to_heap only while the page is in the full queue or is
//    a one-block page
// The validity test and its constants (S3.6) are stage 3's, for the owner's fast free.
//
// Two cache lines, by who writes them (stage 3's record was 112 bytes, one and a half lines):
//    line 0  the owner's: written by its every malloc and free          other threads: never
//    line 1  the shared atomics, and what is fixed while the page is    the owner: rarely
//            in use: a remote free reads it and CASes xthread_free
// A remote free that shared line 0 with the owner would miss the cache on every call, however
// read-only its own accesses, because the owner keeps writing `free` and `used` next to them.
struct alignas(64) Page {
    // -- line 0: the owner's (bytes 0..39 are what its fast paths touch, as in stage 3) --
    Block* free;               // malloc pops here; nullptr: go generic
    Block* local_free;         // the owner's free() pushes here
    uint32_t used;             // blocks not on free or local_free
    uint32_t start32;          // low 32 bits of `start` (the validity test's base)
    uint64_t magic;            // validity test (S3.6)
    uint64_t limit;            // validity test; grows as the page is carved
    Page* next;                // in its heap queue
    Page* prev;
    uint32_t carved;           // blocks threaded onto a list so far
    uint16_t retire_expire;    // fresh pages left before a retired empty page is freed; 0: not
    uint8_t check_stamp;       // written by the checker: "seen in a queue in this check"
    uint8_t queue;             // index into heap->queues
    // -- line 1: shared atomics, see [S4.10] for every ordering --
    std::atomic<uintptr_t> xthread_free;  // remote frees: block address | Delay
    std::atomic<Heap*> heap;              // owner heap (the delayed list's target) or nullptr
    // -- line 1: fixed while the page is in use; other threads read these to check a free --
    uint64_t block_size;       // bytes per block (one-block pages: the block's usable bytes)
    uintptr_t start;           // address of block 0
    uint32_t capacity;         // blocks that fit between start and the page's end
    uint8_t bin;               // size class; kOneBlockBin for a one-block page
    uint8_t kind;              // PageKind
    uint8_t in_use;            // 1 while formatted for a bin or a block
    uint8_t index;             // position in its segment's pages[]
    uint64_t keys[2];          // secure mode's link keys (S4.56); {0, 0} while it is off
};
static_assert(sizeof(Page) == 128);
static_assert(offsetof(Page, limit) + sizeof(uint64_t) <= 40, "the fast paths read bytes 0..39 only");
static_assert(offsetof(Page, xthread_free) == 64, "the shared line starts with the shared words");
static_assert(alignof(Block) >= 8 && kAlignment >= 16, "the Delay bits are free in a block address");
inline constexpr uint8_t kOneBlockBin = 0xff;

// Segment metadata: page_of, the header, 64 page records of two cache lines. 12 KiB where stage
// 3 had 8 (S3.2), for the wider page records; page 0 of a small segment is 52 KiB, and still
// holds six blocks of the largest small class.
inline constexpr std::size_t kMetaSize = 12 * 1024;

// [S4.6] A segment: stage 3's segment with an owner. Every list it is on belongs to its owner
// heap; no field is shared, because a segment changes hands whole: claimed from the arena,
// abandoned, reclaimed, each step published by one atomic bit (arena.h). `slot` and `blocks`
// place it in the arena. Invariants (check.cc): as S3.7, plus
//    owner->owned[slot] == 1 for every segment of a heap, and for no other slot
//    arena claimed bits [slot, slot + blocks) all set; arena start marker of slot == blocks
//    abandoned bit of slot set  =>  no heap owns the segment; it is on no list (its dirty
//                                   pages wait for the heap that reclaims it)
struct Segment {
    Page* page_of[kSlots];     // slot -> page record, as S3.7
    Segment* next;             // the owner heap's segments
    Segment* prev;
    Segment* next_open;        // the owner heap's "has a free page" list, or its cache
    Segment* prev_open;
    Segment* next_purge;       // the owner heap's segments with dirty pages
    Segment* prev_purge;
    std::size_t size;          // bytes: blocks * 4 MiB
    uint64_t free_pages;       // bit i: pages[i] is free
    uint64_t dirty_pages;      // bit i: pages[i] is free but its memory is still committed
    uint64_t committed;        // bytes of page areas counted in the footprint
    uint64_t purge_expire;     // owner clock tick after which dirty pages are decommitted
    uint64_t cache_expire;     // owner clock tick after which a cached segment goes back
    uint32_t page_count;       // 64, 8 or 1
    uint32_t used_pages;       // pages in use
    uint32_t page_shift;       // log2 of the page size (one-block kinds: kSegmentShift)
    uint32_t slot;             // arena slot of its first 4 MiB
    uint16_t blocks;           // arena slots it spans (huge segments: more than one; <= kArenaSlots)
    uint8_t kind;              // PageKind of every page
    uint8_t on_open_list;
    uint8_t cached;
    uint8_t on_purge_list;
    uint8_t lazy;              // 1: claimed unheld, mapped only as it is used (S3.58, [S4.67])
    uint64_t writable;         // bit i: slot i (size / 64: 64 KiB of 4 MiB) is writable (S3.47)
    Page* pages() { return reinterpret_cast<Page*>(this + 1); }
};
static_assert(offsetof(Segment, page_of) == 0);
static_assert(sizeof(Segment) == 512 + 128);
static_assert(kArenaSlots <= UINT16_MAX, "Segment::blocks holds any run of slots");
static_assert(kMetaSize >= sizeof(Segment) + kSlots * sizeof(Page), "metadata fits");
static_assert(sizeof(Segment) % 64 == 0, "page records start on a cache line");
static_assert(kMetaSize % kOsPage == 0, "page areas start on an OS page");
static_assert((std::size_t{1} << kSmallPageShift) - kMetaSize >= 6 * kSmallMax, "page 0 holds six blocks");
static_assert((kMetaSize > kMaxAlignment ? kMetaSize : kMaxAlignment) + kLargeMax <= kSegmentSize);

inline Segment* segment_of(const void* p) {
    return reinterpret_cast<Segment*>(reinterpret_cast<uintptr_t>(p) & ~kSegmentMask);
}
inline Page* page_of(const void* p) {
    uintptr_t a = reinterpret_cast<uintptr_t>(p);
    return segment_of(p)->page_of[(a >> kSlotShift) & (kSlots - 1)];
}

// [S4.7] Per-heap statistics: written by the owner thread only, read by any thread that asks
// for Stats. Relaxed atomics with a single writer compile to plain loads and stores (no lock
// prefix); a reader may see a count a few operations old, never a torn one. Frees count on the
// thread that frees, so a heap's live_bytes alone may be negative; the sum over heaps is not.
struct Counters {
    std::atomic<uint64_t> mallocs{0};
    std::atomic<uint64_t> frees{0};
    std::atomic<uint64_t> bytes_requested{0};
    std::atomic<int64_t> live_bytes{0};
};

// A heap record's life: free (in the pool) -> in_use (a thread's) -> free again at thread exit;
// in a child after fork(), the records of the threads that did not survive become lost. A
// record borrowed after a thread's exit hook goes from in_use to orphaned, its segments still
// its own, and from there to in_use again, for whichever thread takes it ([S4.97], registry.h).
enum class HeapState : uint32_t { free = 0, in_use = 1, lost = 2, orphaned = 3 };

// The page every empty direct slot names: free == nullptr, so popping from it fails (S3.8).
extern Page g_empty_page;

struct PageQueue {
    Page* first;
    Page* last;
};

// [S4.8] A heap, one per thread (registry.h), reached through the thread-local `t_heap`.
//
//    direct[0..128]   the malloc fast path's table, as S3.8
//    arena_base       the free fast path's copy of the arena's address (0 in the empty heap)
//    owned[slot]      1 when the segment at that arena slot is this heap's: free() asks its own
//                     heap, never the segment, so the local fast path reads no shared memory
//    queues           as S3.8: bins, full, large
//    delayed_free     blocks other threads freed into this heap's full pages (CAS push)
//
// Everything but delayed_free, counters and state is the owner thread's alone. A thread that
// has not allocated yet points at the empty heap: every direct slot names the empty page and
// owned[] is all zero, so both fast paths fall through to code that creates the real heap.
// Invariants (check.cc): as S3.8, plus owned[] marks exactly the segments on `segments`.
struct Heap {
    Page* direct[kDirectSlots] = {};   // offset 0
    uintptr_t arena_base = 0;          // read by the free fast path
    uint8_t owned[kArenaSlots] = {};   // read by the free fast path
    PageQueue queues[kQueueCount] = {};
    Segment* segments = nullptr;       // all its segments, cached ones included
    Segment* open[2] = {};             // small, medium segments with a free page
    Segment* cache = nullptr;          // empty segments kept a while (S3.14, S4.45, per heap)
    Segment* purge = nullptr;          // segments with dirty pages (S3.34, per heap)
    uint64_t clock = 0;                // generic malloc calls: the delays' unit
    uint64_t cache_bytes = 0;          // sum of the cached huge segments' sizes (S4.87)
    uint64_t cache_committed = 0;      // [S4.89] bytes the cached one-slot segments keep committed
    uint64_t released_bytes = 0;       // [S4.105] pages left dirty since an orphaning last purged
    stage3::HugeTotals huge;           // [S4.85] its live huge blocks' reach and commit (S3.78)
    uint32_t cache_count = 0;
    uint32_t segment_count = 0;
    uint32_t page_count = 0;           // pages in its queues
    uint32_t retired_min = kBinCount;  // bins that may hold a retired page: [min, max]
    uint32_t retired_max = 0;
    uint32_t arena_hint = 0;           // bitmap word where its last claim succeeded
    bool trimmed = false;              // its held segments trimmed once the arena went lazy (S4.68)
    stage3::KeyStream keys;            // secure mode's page keys (S4.56)
    std::atomic<Block*> delayed_free{nullptr};   // shared: remote frees into full pages
    Counters counters;                           // shared: read by stats()
    std::atomic<HeapState> state{HeapState::free};  // shared: the registry's
    std::atomic<uint64_t> owner{0};    // [S4.113] uses << 32 | kernel tid of a keyed holder, or 0
    std::atomic<int32_t> owner_pid{0}; // [S4.113] the process that holder's tid belongs to
    Heap* next_record = nullptr;       // registry list; fixed once published

    // A heap with no page yet: every direct slot names the empty page.
    constexpr Heap() {
        for (Page*& slot : direct) slot = &g_empty_page;
    }
};
}  // namespace edu::stage4
