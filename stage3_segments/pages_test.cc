// stage3_segments/pages_test.cc: proves the geometry and the page life cycle: where blocks of
// each kind land (segment alignment, page map, page starts, capacities), lazy extension, the
// local_free swap, moves to and from the full queue with the direct cache following, retirement
// after a delay, decommit and the segment cache, and realloc in place. Each case uses a heap
// of its own (heaps.h), so the pages it inspects hold only its blocks.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "contract/allocator.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/heap.h"
#include "stage3_segments/heaps.h"
#include "stage3_segments/page.h"
#include "stage3_segments/queues.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/testing.h"
#include "tests/support.h"

namespace edu::stage3 {
namespace {

using testing::api;
using testing::footprint;
using testing::os_calls;
using testing::used_of;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// A heap for one test case, destroyed (with all its blocks) at the end.
struct ScopedHeap {
    Heap* heap = heap_create();
    ScopedHeap() { REQUIRE(heap != nullptr); }
    ~ScopedHeap() { heap_destroy(heap); }
    void* take(std::size_t n) {
        void* p = heap_malloc(heap, n);
        REQUIRE(p != nullptr);
        return p;
    }
};

bool is_dirty(const Segment* s, unsigned index) { return (s->dirty_pages >> index) & 1; }

std::size_t count_list(const Page* page, const Block* head) {
    int64_t n = list_length(page, head);
    REQUIRE(n >= 0);
    return static_cast<std::size_t>(n);
}

TEST_CASE("a small block lies in a 4 MiB-aligned segment whose page map names its page") {
    ScopedHeap h;
    for (std::size_t n : {std::size_t{0}, std::size_t{16}, std::size_t{100}, std::size_t{1000}, kSmallMax}) {
        CAPTURE(n);
        void* p = h.take(n);
        Segment* s = segment_of(p);
        CHECK((addr(s) & kSegmentMask) == 0);
        CHECK(segment_owned(p));
        CHECK(s->kind == static_cast<uint8_t>(PageKind::small));
        CHECK(s->page_count == 64);
        Page* page = page_of(p);
        CHECK(page == &s->pages()[(addr(p) - addr(s)) >> kSmallPageShift]);
        CHECK(page->heap == h.heap);
        CHECK(page->block_size == bin_size(bin_of(n)));
        CHECK(addr(p) >= page->start);
        CHECK((addr(p) - page->start) % page->block_size == 0);
        Span area = page_area(s, page);
        CHECK(page->capacity == (area.hi - page->start) / page->block_size);
        if (page->index == 0) CHECK(area.lo == addr(s) + kMetaSize);
        else CHECK(area.lo == addr(s) + (uintptr_t{page->index} << kSmallPageShift));
        CHECK(api().usable_size(p) == page->block_size);
    }
}

TEST_CASE("free's fast path finds segments through the map's window; outside it the generic path frees and moves it") {
    ScopedHeap h;
    void* p = h.take(32);
    CHECK(segment_in_window(p));   // [S3.60]: the window is the first leaf made, and holds p's segment
    CHECK_FALSE(segment_in_window(nullptr));
    const MapWindow saved = g_map_window;
    g_map_window.base += uintptr_t{1} << (kLeafBits + kSegmentShift);   // the next 64 GiB: p is outside
    CHECK_FALSE(segment_in_window(p));
    CHECK_FALSE(api().check().ok);   // the checker sees a window that is not the leaf's
    CHECK(segment_owned(p));
    Page* page = page_of(p);
    uint32_t used = page->used;
    api().free(p);                 // fails the window test, so free_generic frees it
    CHECK(page->used == used - 1);
    CHECK(page->local_free == p);
    CHECK(g_map_window.base == saved.base);   // and moves the window back to p's leaf
    CHECK(g_map_window.leaf == saved.leaf);
    battery::check_heap_ok(api());
}

TEST_CASE("the segment map names each segment, and the checker notices when it does not") {
    ScopedHeap h;
    void* p = h.take(32);
    Segment* s = segment_of(p);
    CHECK(map_lookup(p) == s);   // [S3.13]: the entry is the segment itself
    CHECK(map_lookup(static_cast<char*>(p) + kSegmentSize) != s);
    uintptr_t chunk = window_chunk(p);
    REQUIRE(chunk < g_map_window.chunks);
    Segment*& entry = const_cast<Segment*&>(g_map_window.leaf[chunk]);
    entry = &g_foreign;          // as if the segment had gone back to the OS
    CHECK_FALSE(segment_owned(p));
    CHECK_FALSE(api().check().ok);
    entry = s;
    battery::check_heap_ok(api());
    g_map_window.chunks = kLeafEntries / 2;   // a window is a whole leaf, or nothing yet
    CHECK_FALSE(api().check().ok);
    g_map_window.chunks = kLeafEntries;
    battery::check_heap_ok(api());
}

TEST_CASE("medium blocks share a 512 KiB page that eight map slots name") {
    ScopedHeap h;
    void* p = h.take(20000);
    Segment* s = segment_of(p);
    REQUIRE(s->kind == static_cast<uint8_t>(PageKind::medium));
    CHECK(s->page_count == 8);
    Page* page = page_of(p);
    CHECK(page->block_size == 20480);
    unsigned first_slot = page->index * 8;
    for (unsigned slot = first_slot; slot < first_slot + 8; ++slot) CHECK(s->page_of[slot] == page);
    CHECK(page->capacity >= 7);
}

TEST_CASE("a large block owns a 4 MiB segment and a huge one a segment of its own size") {
    ScopedHeap h;
    void* large = h.take(100000);
    Segment* s = segment_of(large);
    REQUIRE(s->kind == static_cast<uint8_t>(PageKind::large));
    CHECK(s->size == kSegmentSize);
    CHECK(addr(large) == addr(s) + kMetaSize);
    CHECK(api().usable_size(large) == 102400 - kGuardBytes);   // whole OS pages, less its tail guard ([S3.67])
    for (unsigned slot = 0; slot < kSlots; ++slot) CHECK(s->page_of[slot] == &s->pages()[0]);
    void* huge = h.take(6 * kMiB);
    Segment* t = segment_of(huge);
    REQUIRE(t->kind == static_cast<uint8_t>(PageKind::huge));
    CHECK(t->size >= 6 * kMiB + kMetaSize);
    CHECK(addr(huge) == addr(t) + kMetaSize);
    // Only the first 4 MiB chunk of a huge segment is registered.
    CHECK(segment_owned(huge));
    CHECK_FALSE(segment_owned(static_cast<char*>(huge) + 5 * kMiB));
}

TEST_CASE("blocks of a power-of-two class are aligned to their size, page 0 included") {
    ScopedHeap h;
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        std::size_t size = bin_size(bin);
        if (size & (size - 1)) continue;
        for (int i = 0; i < 20; ++i) {
            void* p = h.take(size);
            INFO("class " << size << ", block " << i << " at " << p);
            CHECK(addr(p) % size == 0);
        }
    }
}

TEST_CASE("aligned_alloc returns block starts, from a class or from an aligned large block") {
    ScopedHeap h;   // only to keep other cases' pages apart; aligned_alloc uses the default heap
    std::vector<void*> blocks;
    for (std::size_t a = 32; a <= kMaxAlignment; a *= 2) {
        for (std::size_t n : {std::size_t{1}, std::size_t{100}, a + 1}) {
            void* p = api().aligned_alloc(a, n);
            INFO("alignment " << a << ", size " << n);
            REQUIRE(p != nullptr);
            CHECK(addr(p) % a == 0);
            Page* page = page_of(p);
            CHECK(page_is_block(page, addr(p)));      // a block start, never an interior pointer
            CHECK(api().usable_size(p) >= n);
            blocks.push_back(p);
        }
    }
    for (void* p : blocks) api().free(p);
    battery::require_heap_ok(api());
}

TEST_CASE("a fresh page is carved 4 KiB at a time, in address order") {
    ScopedHeap h;
    auto* first = static_cast<char*>(h.take(16));
    Page* page = page_of(first);
    CHECK(page->carved == kExtendBytes / 16);
    CHECK(count_list(page, page->free) == kExtendBytes / 16 - 1);
    for (uint32_t i = 1; i < kExtendBytes / 16; ++i) {
        void* p = h.take(16);
        REQUIRE(p == first + 16 * i);
    }
    CHECK(page->free == nullptr);
    CHECK(page->carved == kExtendBytes / 16);
    h.take(16);   // the generic path extends the same page
    CHECK(page->carved == 2 * kExtendBytes / 16);
    CHECK(used_of(page) == kExtendBytes / 16 + 1);
}

TEST_CASE("frees go to local_free and become the free list only when it runs dry") {
    ScopedHeap h;
    std::vector<void*> blocks;
    for (int i = 0; i < 10; ++i) blocks.push_back(h.take(48));
    Page* page = page_of(blocks[0]);
    Block* free_before = page->free;
    std::size_t free_count = count_list(page, page->free);
    for (int i = 0; i < 5; ++i) api().free(blocks[static_cast<std::size_t>(i)]);
    CHECK(page->free == free_before);                 // malloc's list is untouched
    CHECK(count_list(page, page->local_free) == 5);
    CHECK(page->local_free == blocks[4]);             // LIFO
    for (std::size_t i = 0; i < free_count; ++i) h.take(48);
    CHECK(page->free == nullptr);
    uint32_t carved = page->carved;
    void* p = h.take(48);                             // generic: the swap, no extension
    CHECK(p == blocks[4]);
    CHECK(page->carved == carved);
    CHECK(page->local_free == nullptr);
    CHECK(count_list(page, page->free) == 4);
}

// [S3.29] The checker marks the blocks of each page's lists in one bitmap (lists.h's Seen, which
// stage 4's checker keeps too), so a list that comes back to a block it has passed is reported,
// not counted again: used + |free| + |local_free| would not balance, but the loop is named first.
TEST_CASE("the checker notices a free list that meets a block twice") {
    ScopedHeap h;
    auto* a = static_cast<Block*>(h.take(48));
    auto* b = static_cast<Block*>(h.take(48));
    Page* page = page_of(a);
    api().free(a);
    api().free(b);                                    // local_free: b -> a
    REQUIRE(page->local_free == b);
    battery::check_heap_ok(api());
    uintptr_t end = a->link;
    a->link = encode(page, addr(b));                  // b -> a -> b: a cycle
    CheckResult damaged = api().check();
    a->link = end;
    CHECK_FALSE(damaged.ok);
    CHECK(std::strstr(damaged.message, "block twice on the free lists") != nullptr);
    battery::check_heap_ok(api());
}

// [S3.29] A page's geometry (a class's block size, the start on its grid, the capacity that
// fills its area) is checked by one function for both stages (segment_layout.h's
// check_page_grid), and one check (tests/support.h) that stage 4's arena_test runs too.
TEST_CASE("the checker names a page whose block size is no class or whose start is off its grid") {
    ScopedHeap h;
    Page* page = page_of(h.take(48));
    battery::checker_names_page_grid_faults(api(), page->block_size, page->start);
}

// [S3.29] A one-block page lists nothing: its block is in use, or the page is gone. Stage 4's
// checker names the fault in the same words (tests/support.h).
TEST_CASE("the checker names a one-block page that lists a block") {
    ScopedHeap h;
    void* p = h.take(100 * 1024);
    Page* page = page_of(p);
    REQUIRE(page->capacity == 1);
    battery::checker_names_one_block_page_lists(api(), [&](bool on) {
        page->local_free = on ? static_cast<Block*>(p) : nullptr;
    });
}

TEST_CASE("a full page moves to the full queue and back after a free, the direct slot following") {
    ScopedHeap h;
    const unsigned bin = bin_of(1024);
    void* first = h.take(1024);
    Page* page = page_of(first);
    std::vector<void*> blocks{first};
    while (blocks.size() < page->capacity) blocks.push_back(h.take(1024));
    CHECK(page->queue == bin);
    CHECK(h.heap->direct[1024 / 8] == page);
    void* other = h.take(1024);                        // the page is full: generic moves it aside
    Page* second = page_of(other);
    REQUIRE(second != page);
    CHECK(page->queue == kFullQueue);
    CHECK(used_of(page) == page->capacity);
    CHECK_FALSE(page_is_block(page, addr(blocks[3])));  // its fast checks now always fail
    CHECK(h.heap->queues[kFullQueue].first == page);
    CHECK(h.heap->queues[bin].first == second);
    CHECK(h.heap->direct[1024 / 8] == second);
    CHECK(h.heap->direct[1000 / 8 + 1] == second);     // every slot of the bin
    api().free(blocks[3]);                             // one free brings it back, at the end
    CHECK(page->queue == bin);
    CHECK(page->used == page->capacity - 1);
    CHECK(page_is_block(page, addr(blocks[4])));
    CHECK(h.heap->queues[bin].last == page);
    CHECK(h.heap->queues[bin].first == second);
    CHECK(h.heap->queues[kFullQueue].first == nullptr);
    battery::require_heap_ok(api());
}

TEST_CASE("the only page of a bin retires, then is freed, then decommitted, each after a delay") {
    ScopedHeap h;
    void* p = h.take(48);
    Page* page = page_of(p);
    uint64_t before = footprint();
    uint64_t madvise_before = os_calls(OsCall::madvise);
    api().free(p);
    CHECK(page->in_use == 1);                          // retired, not freed
    CHECK(page->retire_expire == kRetireTicks);
    CHECK(h.heap->queues[bin_of(48)].first == page);
    CHECK(footprint() == before);
    // Retired pages count down when the heap needs a fresh page: one bin after another here.
    std::vector<void*> keep;
    unsigned bin = 20;
    for (uint32_t i = 0; i + 1 < kRetireTicks; ++i) keep.push_back(h.take(bin_size(bin++)));
    CHECK(page->in_use == 1);
    keep.push_back(h.take(bin_size(bin++)));
    CHECK(page->in_use == 0);                          // its delay has passed
    CHECK(h.heap->queues[bin_of(48)].first == nullptr);
    CHECK(h.heap->direct[48 / 8] == &g_empty_page);
    Segment* s = segment_of(page);
    CHECK(is_dirty(s, page->index));                   // free, but still committed
    CHECK(os_calls(OsCall::madvise) == madvise_before);
    uint64_t dirty_footprint = footprint();
    // The purge counts generic calls (every request above 1 KiB is one).
    for (uint64_t i = 0; i < kPurgeDelay + 64; ++i) api().free(h.take(5000));
    CHECK_FALSE(is_dirty(s, page->index));             // purged
    CHECK(os_calls(OsCall::madvise) > madvise_before);
    CHECK(footprint() < dirty_footprint);
    for (void* q : keep) api().free(q);
    battery::require_heap_ok(api());
}

// [S3.70] Memory the kernel refuses to decommit: madvise(MADV_DONTNEED) fails with EINVAL from
// a locked page on (mlock; under mlockall every page is). A cached 1 MiB block's memory and a
// dirty small page, each with its first page locked, stay committed, counted and on the purge
// list through a purge; unlocked, the next purge gives them back. Before, the purge uncounted
// them anyway: the footprint fell by their bytes, which stayed resident.
TEST_CASE("memory the kernel refuses to decommit stays dirty and counted until a purge can give it back") {
    ScopedHeap h;
    void* big = h.take(kMiB);
    void* small = h.take(3000);
    std::memset(big, 1, kMiB);
    Segment* one = segment_of(big);
    Segment* paged = segment_of(small);
    Page* page = page_of(small);
    auto* first = reinterpret_cast<void*>(page_area(paged, page).lo);
    segment_purge(true);                               // what earlier cases left: the purge below is ours
    api().free(big);
    heap_destroy(h.heap);                              // frees the small page at once: dirty
    h.heap = heap_create();
    REQUIRE(one->on_purge_list);
    REQUIRE(is_dirty(paged, page->index));
    uint64_t committed = one->committed + paged->committed, before = footprint();
    REQUIRE(battery::lock_pages(big, kOsPage));
    REQUIRE(battery::lock_pages(first, kOsPage));
    segment_purge(true);
    CHECK(one->on_purge_list);
    CHECK(one->committed != 0);
    CHECK(is_dirty(paged, page->index));
    CHECK(paged->on_purge_list);
    CHECK(footprint() == before);
    battery::require_heap_ok(api());
    REQUIRE(battery::unlock_pages(big, kOsPage));
    REQUIRE(battery::unlock_pages(first, kOsPage));
    segment_purge(true);
    CHECK_FALSE(one->on_purge_list);
    CHECK_FALSE(is_dirty(paged, page->index));
    CHECK(footprint() <= before - (committed - paged->committed));
    CHECK(battery::resident_bytes(big, kMiB) == 0);
    battery::require_heap_ok(api());
}

TEST_CASE("a page freed and needed again before the purge comes back without a system call") {
    ScopedHeap h;
    void* p = h.take(3000);
    Page* page = page_of(p);
    Segment* s = segment_of(p);
    heap_destroy(h.heap);                              // frees the page at once: dirty now
    h.heap = heap_create();
    REQUIRE(is_dirty(s, page->index));
    uint64_t calls = os_calls(OsCall::madvise) + os_calls(OsCall::mmap);
    uint64_t before = footprint();
    void* q = h.take(3000);
    CHECK(page_of(q)->heap == h.heap);
    CHECK(segment_of(q) == s);                         // a dirty page was preferred
    CHECK_FALSE(is_dirty(s, page_of(q)->index));
    CHECK(os_calls(OsCall::madvise) + os_calls(OsCall::mmap) == calls);
    CHECK(footprint() == before);
    battery::require_heap_ok(api());
}

TEST_CASE("a retired page that is allocated from again stays") {
    ScopedHeap h;
    void* p = h.take(64);
    Page* page = page_of(p);
    api().free(p);
    REQUIRE(page->retire_expire != 0);
    void* q = h.take(64);                              // the fast path, from the same page
    CHECK(page_of(q) == page);
    for (uint32_t i = 0; i < 2 * kRetireTicks; ++i) collect(false);   // counts retired pages down
    CHECK(page->in_use == 1);
    CHECK(page->retire_expire == 0);
    api().free(q);
}

TEST_CASE("a batch freed and allocated again finds its pages still carved, up to kRetireKeep of them") {
    ScopedHeap h;
    constexpr std::size_t kSize = 256;
    const unsigned bin = bin_of(kSize);
    void* probe = h.take(kSize);
    const std::size_t batch = (kRetireKeep + 2) * std::size_t{page_of(probe)->capacity};   // 6 pages
    api().free(probe);
    std::vector<void*> blocks;
    for (int round = 0; round < 3; ++round) {
        CAPTURE(round);
        blocks.clear();
        for (std::size_t i = 0; i < batch; ++i) blocks.push_back(h.take(kSize));
        for (void* p : blocks) api().free(p);
        battery::require_heap_ok(api());   // the retired pages are where the checker expects
        // The last kRetireKeep pages to empty wait at the back of the bin, carved; the others
        // went back to their segment.
        unsigned retired = 0;
        for (Page* page = h.heap->queues[bin].first; page; page = page->next) {
            CHECK(page->used == 0);
            CHECK(page->retire_expire == kRetireTicks);
            CHECK(page->carved == page->capacity);
            ++retired;
        }
        CHECK(retired == kRetireKeep);
    }
    // Nothing else needs a fresh page: the countdown runs on collections, and ends with all
    // of them back in their segments.
    std::vector<Page*> kept;
    for (Page* page = h.heap->queues[bin].first; page; page = page->next) kept.push_back(page);
    for (uint32_t i = 0; i < kRetireTicks; ++i) collect(false);
    CHECK(h.heap->queues[bin].first == nullptr);
    for (Page* page : kept) CHECK(page->in_use == 0);
    battery::require_heap_ok(api());
}

TEST_CASE("freeing everything gives the memory back: the footprint falls to where it was") {
    uint64_t before = footprint();
    uint64_t unmaps = os_calls(OsCall::munmap);
    {
        ScopedHeap h;
        std::vector<void*> blocks;
        for (int i = 0; i < 20000; ++i) blocks.push_back(h.take(16 + static_cast<std::size_t>(i % 4000)));
        for (int i = 0; i < 20; ++i) blocks.push_back(h.take(100 * kKiB + static_cast<std::size_t>(i)));
        CHECK(footprint() >= before + 30 * kMiB);
        for (void* p : blocks) api().free(p);
        battery::require_heap_ok(api());
    }
    collect(true);
    CHECK(footprint() <= before);
    CHECK(os_calls(OsCall::munmap) > unmaps);
    CHECK(segment_cache_count() == 0);
    battery::require_heap_ok(api());
}

TEST_CASE("an empty large segment waits in the cache and is reused without a system call") {
    collect(true);
    ScopedHeap h;
    void* p = h.take(kMiB);
    Segment* s = segment_of(p);
    api().free(p);
    CHECK(s->cached == 1);
    CHECK(s->on_purge_list == 1);                      // its block's memory, until the purge
    CHECK(segment_cache_count() == 1);
    CHECK(segment_owned(p));                           // still mapped, still ours
    uint64_t maps = os_calls(OsCall::mmap);
    void* q = h.take(2 * kMiB);
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::mmap) == maps);
    api().free(q);
    uint64_t unmaps = os_calls(OsCall::munmap);
    collect(true);
    CHECK(os_calls(OsCall::munmap) == unmaps + 1);
    CHECK_FALSE(segment_owned(q));
}

// [S3.48] A fresh segment is made writable with one mprotect, its header and what its block
// reaches together. [S3.47] Purged while it waits in the cache, it keeps its protection, so
// the next block that fits what is writable costs no mprotect; a bigger one makes the rest
// writable in one step. A huge segment is tracked in slots of a sixty-fourth of its size.
TEST_CASE("a fresh one-block segment costs one mprotect, and a purged cached one none when reused") {
    collect(true);
    ScopedHeap h;
    uint64_t protects = os_calls(OsCall::mprotect);
    void* p = h.take(200 * kKiB);
    Segment* s = segment_of(p);
    CHECK(os_calls(OsCall::mprotect) == protects + 1);
    api().free(p);
    REQUIRE(s->cached == 1);
    segment_purge(true);                               // its memory goes back, not its protection
    CHECK(s->committed == 0);
    protects = os_calls(OsCall::mprotect);
    uint64_t advised = os_calls(OsCall::madvise);
    void* q = h.take(200 * kKiB);
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::mprotect) == protects);
    CHECK(os_calls(OsCall::madvise) == advised);
    battery::require_heap_ok(api());
    api().free(q);
    void* r = h.take(kMiB);
    CHECK(segment_of(r) == s);
    CHECK(os_calls(OsCall::mprotect) == protects + 1);
    api().free(r);

    protects = os_calls(OsCall::mprotect);
    void* huge = h.take(9 * kMiB);
    Segment* hs = segment_of(huge);
    CHECK(hs->size % kSegmentSize == 0);           // whole 4 MiB chunks
    CHECK(os_calls(OsCall::mprotect) == protects + 1);
    api().free(huge);
    segment_purge(true);
    void* again = h.take(8 * kMiB);
    CHECK(segment_of(again) == hs);
    CHECK(os_calls(OsCall::mprotect) == protects + 1);
    battery::require_heap_ok(api());
    api().free(again);
    collect(true);
}

// [S3.14] A program that keeps `count` 200 KiB blocks (each a 4 MiB segment of its own), frees
// them and takes as many again gets every segment back from the cache, writable.
void replaced_from_cache(int count) {
    collect(true);
    ScopedHeap h;
    std::vector<void*> blocks;
    for (int i = 0; i < count; ++i) blocks.push_back(h.take(200 * kKiB));
    for (void* p : blocks) api().free(p);
    CHECK(segment_cache_count() == static_cast<unsigned>(count));
    uint64_t calls = os_calls(OsCall::mmap) + os_calls(OsCall::munmap) + os_calls(OsCall::mprotect);
    for (void*& p : blocks) p = h.take(200 * kKiB);
    CHECK(os_calls(OsCall::mmap) + os_calls(OsCall::munmap) + os_calls(OsCall::mprotect) == calls);
    for (void* p : blocks) api().free(p);
    battery::require_heap_ok(api());
    collect(true);
}

// [S3.14] With a cache of eight, the second dozen took four fresh segments.
TEST_CASE("a dozen one-block segments freed wait in the cache and serve the next dozen without a system call") {
    replaced_from_cache(12);
}

// [S3.87] Forty, past the sixteen stage 3 kept before it took stage 4's count: with sixteen,
// the cache held 16 (not 40), and the second forty cost 52 more mmap, munmap and mprotect calls.
TEST_CASE("forty one-block segments freed wait in the cache and serve the next forty without a system call") {
    static_assert(40 <= kCacheSegments);
    replaced_from_cache(40);
}

// [S3.87] The count's bound on memory: 64 blocks of 1 MiB, written and freed, leave in the cache
// only the newest segments whose commit fits in kCacheCommitted; the older ones went back
// (munmap) as the newer came, and what the cache keeps is exact (the checker sums it). With the
// count of 64 alone the cache kept all 64, 65.3 MiB committed.
TEST_CASE("freed one-block segments wait in the cache only up to kCacheCommitted of memory") {
    collect(true);
    ScopedHeap h;
    std::vector<void*> blocks;
    for (int i = 0; i < 64; ++i) {
        blocks.push_back(h.take(kMiB));
        std::memset(blocks.back(), 1, kMiB);
    }
    uint64_t unmaps = os_calls(OsCall::munmap);
    for (void* p : blocks) api().free(p);
    CHECK(segment_cache_committed() <= kCacheCommitted);
    CHECK(segment_cache_committed() + kMiB > kCacheCommitted);   // as full as 1 MiB blocks fill it
    CHECK(segment_cache_count() < 24);
    CHECK(os_calls(OsCall::munmap) > unmaps);
    battery::require_heap_ok(api());
    void* again = h.take(kMiB);
    CHECK(segment_of(again) == segment_of(blocks.back()));   // the newest stayed
    api().free(again);
    battery::require_heap_ok(api());
    collect(true);
}

// [S3.80] (and S3.96) A 1 MiB block's segment, cached and reused for a 300 KiB block (under half
// its reach, within a quarter), gives it the reach the first one committed: the same end, so
// the tail guard is written on the page the first block's guard touched, and taking the block
// faults no page. A block under a quarter of that reach (200 KiB) gets its own size. One rule
// for both stages (segment_layout.h's large_reach), one check (tests/support.h), which stage
// 4's arena_test runs too (S4.88). With the bound of twice S3.80 had, the 300 KiB block's usable
// size was its own (311,280 bytes, not 1,052,656) and its guard's store faulted one page.
TEST_CASE("a reused large segment gives its next block the reach it committed, and its tail guard faults no page") {
    collect(true);
    ScopedHeap h;
    battery::reused_large_segment_keeps_its_reach(
        api(), [&h](std::size_t n) { return h.take(n); },
        [](const void* p) -> const void* { return segment_of(p); },
        [](const void* s) { return static_cast<const Segment*>(s)->cached == 1; }, one_block_usable(200 * kKiB));
    collect(true);
}

// [S3.86] A 256 KiB block freed, three thousand generic calls, and a block of the same size:
// it takes the cached segment, whose memory the purge has not given back (no madvise since the
// free), and writing all of it faults no page. With the delay of 1024 calls stage 3 had before,
// the purge gave the segment's memory back after about 1,088 calls (one madvise) and the write
// faulted 63 pages again (getrusage), as mstress's large blocks did.
TEST_CASE("a cached large segment keeps its memory through three thousand generic calls") {
    collect(true);
    ScopedHeap h;
    void* small = h.take(5000);                        // its page stays in use: only s is purged
    void* p = h.take(256 * kKiB);
    std::memset(p, 1, 256 * kKiB);
    Segment* s = segment_of(p);
    api().free(p);
    REQUIRE(s->cached == 1);
    uint64_t madvise_before = os_calls(OsCall::madvise);
    for (int i = 0; i < 3000; ++i) api().free(h.take(5000));   // a generic call each
    void* q = h.take(256 * kKiB);
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::madvise) == madvise_before);
    long faults = battery::minor_faults();
    std::memset(q, 2, 256 * kKiB);
    long written = battery::minor_faults() - faults;
    if (!battery::kUnderSanitizer) CHECK(written == 0);
    api().free(q);
    api().free(small);
    battery::require_heap_ok(api());
    collect(true);
}

// Runs `body` in a child, with an empty cache and a fresh heap, under a limit on `resource`
// `room` bytes above what the process holds of it (`held()`), and requires it to exit 0. (Not
// under a sanitizer, whose shadow and own mappings count against both limits and move while
// the child runs.)
void under_limit(decltype(RLIMIT_AS) resource, uint64_t (*held)(), std::size_t room, void (*body)(Heap*)) {
    if (battery::kUnderSanitizer) return;
    battery::ChildOutcome outcome = battery::run_in_child([=] {
        collect(true);
        Heap* heap = heap_create();
        battery::child_expect(heap != nullptr, "no heap");
        rlimit limit{held() + room, RLIM_INFINITY};
        battery::child_expect(setrlimit(resource, &limit) == 0, "setrlimit failed");
        body(heap);
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// [S3.52] Sixteen freed 1 MiB blocks leave sixteen cached segments with 17 MiB writable; under
// a data limit 24 MiB above what the process holds, a 12 MiB block fits only once they go back.
TEST_CASE("under a data limit, cached segments go back to make room for a big block") {
    under_limit(RLIMIT_DATA, battery::data_bytes, 24 * kMiB, [](Heap* heap) {
        void* blocks[16];
        for (void*& p : blocks) {
            p = heap_malloc(heap, kMiB);
            battery::child_expect(p != nullptr, "a 1 MiB block was refused");
        }
        for (void* p : blocks) api().free(p);
        battery::child_expect(segment_cache_count() == 16, "the freed blocks' segments are not cached");
        void* big = heap_malloc(heap, 12 * kMiB);
        battery::child_expect(big != nullptr, "the 12 MiB block was refused");
        battery::child_expect(segment_cache_count() == 0, "the cache was not given back");
        std::memset(big, 1, 12 * kMiB);
        api().free(big);
    });
}

// [S3.75] Under a data limit, 4,000-byte blocks until NULL, every other one freed: their pages
// hold free blocks, but no page of a smaller bin can be had. A 600-byte request gets one of
// those blocks (its usable size the larger bin's), errno untouched, until none is left: then
// NULL with ENOMEM. Failed before: NULL at the first.
TEST_CASE("under a data limit, a free block of a larger bin serves when no page can be had") {
    under_limit(RLIMIT_DATA, battery::data_bytes, 4 * kMiB, [](Heap* heap) {
        battery::small_blocks_from_larger_free_ones(api(), [heap](std::size_t n) { return heap_malloc(heap, n); });
    });
}

// [S3.97] The same for aligned requests: a larger bin serves one only if every block of it keeps
// the alignment. Failed before: a 4 KiB-aligned request got a 5,120-byte block, 1 KiB-aligned.
TEST_CASE("under a data limit, a larger bin serves an aligned request only with aligned blocks") {
    under_limit(RLIMIT_DATA, battery::data_bytes, 4 * kMiB, [](Heap* heap) {
        battery::aligned_blocks_from_larger_free_ones(
            api(), [heap](std::size_t n) { return heap_malloc(heap, n); },
            [heap](std::size_t alignment, std::size_t n) { return heap_aligned_alloc(heap, alignment, n); });
    });
}

// [S3.58] Under an address-space limit 24 MiB above what the process holds, a hundred blocks
// of 100 KB (10 MB, which glibc serves from its heap) all fit: each large segment is mapped only
// as far as its block reaches, where a whole 4 MiB window each let five fit; each is mapped in
// a free window with one mmap ([S3.59]), never with os_map_aligned's trims (three munmaps each:
// nearly every segment paid them once). They are written and checked (a segment off the 4 MiB
// grid is refused), freed, and the cache gives their segments back to a 12 MiB block.
TEST_CASE("under an address-space limit, a hundred 100 KB blocks fit in 24 MiB") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 24 * kMiB, [](Heap* heap) {
        void* blocks[100];
        uint64_t unmaps = os_calls(OsCall::munmap);
        for (void*& p : blocks) {
            p = heap_malloc(heap, 100000);
            battery::child_expect(p != nullptr, "a 100 KB block was refused");
            std::memset(p, 7, 100000);
        }
        battery::child_expect(os_calls(OsCall::munmap) - unmaps < 30, "most segments were trimmed");
        battery::child_expect_heap_ok(api(), "the heap check failed");
        Segment* s = segment_of(blocks[0]);
        s->size += kOsPage;
        battery::child_expect(std::strstr(api().check().message, "segment size wrong") != nullptr,
                              "the checker took a segment a page longer than its window");
        s->size -= kOsPage;
        for (void* p : blocks) api().free(p);
        void* big = heap_malloc(heap, 12 * kMiB);
        battery::child_expect(big != nullptr, "the 12 MiB block was refused");
        api().free(big);
    });
}

// [S3.63] [S3.64] Under an address-space limit 96 MiB above what the process holds, a 1 MiB
// block of the default heap lies in a mapping of its own; grown by realloc in 1 MiB steps to
// 64 MiB and shrunk back, it keeps its bytes and its entry in the mapped table, and each step
// is one mremap, no mmap or munmap (tests/support.h). Copying instead fails it twice over: an
// mmap and munmaps each step, and a copy holds old and new at once (127 MiB by the last step).
TEST_CASE("under an address-space limit, a mapped block grows by mremap, without a copy") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 96 * kMiB, [](Heap*) {
        battery::grow_mapped_in_steps(api(), kStageNumber, kMiB, kMiB, 64 * kMiB);
    });
}

// Whether [at, at + bytes) is mapped: mincore fails (ENOMEM) on a range with a page unmapped.
bool mapped(const void* at, std::size_t bytes) {
    static unsigned char pages[1024];
    return mincore(const_cast<void*>(at), bytes, pages) == 0;
}

// [S3.79] A lazy segment given back at the map count's limit, its mapping between two others
// (a page of the test's own right below its window and one right past its block): the munmap
// would cut a hole, one mapping more, and is refused. The mapping stays behind, and the next
// fresh segment found its own leftover in that window (EEXIST, taken for a mapping not ours) and
// went to another window: the window was lost for good. Now the leftover is remembered, unmapped
// when a fresh segment reaches its window, and the window is used again; the pages of the
// test's own stay intact.
TEST_CASE("a lazy segment whose munmap was refused gets its window back") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 640 * kMiB, [](Heap* heap) {
        void* first = heap_malloc(heap, kMiB);
        battery::child_expect(first != nullptr, "a 1 MiB block was refused");
        Segment* s = segment_of(first);
        battery::child_expect(s->lazy, "the segment is not lazy");
        std::size_t reach = 0;
        while (reach < kSegmentSize && mapped(reinterpret_cast<char*>(s) + reach, kOsPage)) reach += kOsPage;
        unsigned char* below = battery::map_page_not_ours(reinterpret_cast<char*>(s) - kOsPage);
        unsigned char* past = battery::map_page_not_ours(reinterpret_cast<char*>(s) + reach);
        api().free(first);
        {
            battery::MapCountFull limit;
            segment_cache_collect(true);   // the segment goes back: its munmap is refused
        }
        battery::child_expect(mapped(s, kOsPage), "the segment's munmap was not refused: the test proves nothing");
        void* again = heap_malloc(heap, kMiB);
        battery::child_expect(again != nullptr, "a 1 MiB block was refused afterwards");
        battery::child_expect(segment_of(again) == s, "the fresh segment did not take the window back");
        battery::child_expect(battery::page_not_ours_intact(below) && battery::page_not_ours_intact(past),
                              "a page not ours changed");
        battery::child_expect_heap_ok(api(), "the heap check failed");
        api().free(again);
    });
}

// [S3.58] [S3.62] Under an address-space limit a small segment maps its header and what its
// pages have carved, no more: a page of 100-byte blocks holding a hundred (108 of 112 bytes
// carved, 12,096 bytes) maps 12 KiB of its 64 KiB, and nothing else of the 4 MiB window is mapped. A page of another
// mapping put right past that stays intact while the page carves (it cannot carve past it:
// the blocks it could not map go to a fresh page), and so does one in the window below
// ([S3.59]: the next fresh segment, a large block's, steps over it). Everything freed and the cache collected,
// the header and pages are unmapped, the two foreign pages are not. Fails if a segment is
// reserved whole, if a page maps its 64 KiB at once, or if giving back unmaps the window.
TEST_CASE("under an address-space limit, a small segment maps what its pages carve, no more") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 64 * kMiB, [](Heap* heap) {
        std::vector<char*> blocks, fillers;   // fillers: the last free pages of segments from before the limit
        for (std::size_t size : {kMediumMax, kSmallMax})
            do fillers.push_back(static_cast<char*>(heap_malloc(heap, size)));
            while (fillers.back() && !segment_of(fillers.back())->lazy);
        for (int i = 0; i < 100; ++i) blocks.push_back(static_cast<char*>(heap_malloc(heap, 100)));
        Segment* s = segment_of(blocks[0]);
        auto* base = reinterpret_cast<char*>(s);
        auto* lo = reinterpret_cast<char*>(page_area(s, page_of(blocks[0])).lo);
        battery::child_expect(s->lazy, "the segment is not mapped lazily");
        battery::child_expect(mapped(base, kMetaSize) && mapped(lo, 12 * kKiB), "the header or the carved blocks are not mapped");
        for (char* at = lo + 12 * kKiB; at < base + kSegmentSize; at += kOsPage)
            if (mapped(at, kOsPage)) battery::child_expect(false, "the window is mapped past what was carved");
        auto foreign = [](void* at) {
            void* p = mmap(at, kOsPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            battery::child_expect(p == at, "cannot map a foreign page");
            std::memset(p, 0x5a, kOsPage);
            return static_cast<unsigned char*>(p);
        };
        unsigned char* past = foreign(lo + 12 * kKiB);
        unsigned char* below = foreign(base - kSegmentSize);
        for (int i = 0; i < 1000; ++i) blocks.push_back(static_cast<char*>(heap_malloc(heap, 100)));
        for (char* p : blocks) {
            battery::child_expect(p != nullptr, "a 100-byte block was refused");
            std::memset(p, 1, 100);
        }
        void* large = heap_malloc(heap, 100000);   // a fresh segment: not in the window below
        battery::child_expect(large != nullptr && segment_of(large)->lazy, "no large block");
        battery::child_expect(reinterpret_cast<char*>(segment_of(large)) != base - kSegmentSize, "a segment over a foreign page");
        battery::child_expect_heap_ok(api(), "the heap check failed");
        battery::child_expect(past[0] == 0x5a && past[kOsPage - 1] == 0x5a && below[0] == 0x5a, "a foreign page was written");
        for (char* p : blocks) api().free(p);
        for (char* p : fillers) api().free(p);
        api().free(large);
        heap_destroy(heap);
        collect(true);
        battery::child_expect(!mapped(base, kOsPage) && !mapped(lo, kOsPage), "the segment was not unmapped");
        battery::child_expect(mapped(past, kOsPage) && mapped(below, kOsPage), "a foreign page was unmapped");
        battery::child_expect(past[0] == 0x5a && below[kOsPage - 1] == 0x5a, "a foreign page changed");
    });
}

// [S3.71] Under an address-space limit, a page of a lazily mapped small segment is freed while
// the process is at its map count's limit. Its blocks lie between two other pages' without a
// gap (all three carved from their areas' starts, the first two full), so their mappings
// merged into one: the munmap of the middle page's blocks must cut a hole in it, and is refused
// (the kernel allows a munmap at the limit only when no mapping is added). Once the map count
// has room again, the segment serves 100-byte blocks as before, and what the refused munmap
// left is not resident.
TEST_CASE("a lazily mapped page freed at the map count's limit is mapped again afterwards") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 640 * kMiB, [](Heap* heap) {
        std::vector<char*> fillers;   // the last free pages of segments from before the limit
        do fillers.push_back(static_cast<char*>(heap_malloc(heap, kSmallMax)));
        while (fillers.back() && !segment_of(fillers.back())->lazy);
        auto take = [heap] {
            auto* p = static_cast<char*>(heap_malloc(heap, 100));
            battery::child_expect(p != nullptr, "a 100-byte block was refused");
            std::memset(p, 1, 100);
            return p;
        };
        std::vector<char*> kept;
        std::vector<char*> middle = battery::middle_of_three_pages(take, [](const void* p) -> const void* { return page_of(p); }, kept);
        Page* page = page_of(middle[0]);
        Segment* s = segment_of(page);
        battery::child_expect(s->lazy && segment_of(kept[0]) == s && page_of(kept[0])->index + 1 == page->index &&
                                  page_of(kept.back())->index == page->index + 1,
                              "the blocks are not on three pages in a row of a lazy segment");
        {
            battery::MapCountFull limit;
            for (char* p : middle) api().free(p);
            heap_collect(heap, true);   // if the page retired, it goes back to its segment now
        }
        battery::child_expect(page->in_use == 0, "the page was not freed");
        battery::expect_refused_but_given_back(reinterpret_cast<void*>(page_area(s, page).lo), std::size_t{1} << kSmallPageShift);
        for (std::size_t i = 0; i < 1000; ++i) kept.push_back(take());
        battery::child_expect_heap_ok(api(), "the heap check failed");
        for (char* p : kept) api().free(p);
        for (char* p : fillers) api().free(p);
    });
}

// [S3.72] A block aligned to 4 MiB lies in a mapping of its own ([S3.39]); pages mapped right
// before its record and right past its end join that mapping (the kernel merges neighbours
// alike), so freeing the block at the map count's limit asks for a munmap that cuts a hole,
// and is refused. Before, the block was forgotten and its 1 MiB stayed resident; now its pages
// are given back. (Not under a sanitizer: ThreadSanitizer's own munmap beside the block's is
// refused too, and it stops the program.)
TEST_CASE("an over-aligned block freed at the map count's limit gives its pages back") {
    if (battery::kUnderSanitizer) return;
    battery::ChildOutcome outcome = battery::run_in_child([] {
        auto* p = static_cast<char*>(api().aligned_alloc(4 * kMiB, kMiB));
        battery::child_expect(p != nullptr && mapped_block_size(kStageNumber, p) == kMiB, "no 1 MiB block in a mapping of its own");
        std::memset(p, 1, kMiB);
        for (char* at : {p - 2 * kOsPage, p + kMiB}) {   // the record is the page right before p
            void* got = mmap(at, kOsPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            battery::child_expect(got == at, "cannot map a neighbour of the block's mapping");
        }
        {
            battery::MapCountFull limit;
            api().free(p);
        }
        battery::child_expect(mapped_block_size(kStageNumber, p) == 0, "the block outlived its free");
        battery::expect_refused_but_given_back(p, kMiB);
        battery::child_expect_heap_ok(api(), "the heap check failed");
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// [S3.73] Under an address-space limit, a page of a mapping not ours at the start of the next
// free page of a lazily mapped small segment (the kernel may place one there; the test does).
// A block of a new size class needs a fresh page: that page cannot map its first blocks
// (EEXIST) and is blocked, and the next free page serves. Before, it went back free, was the
// lowest free page again at the retry, and malloc said NULL. The page not ours stays intact.
TEST_CASE("a free page whose start holds a mapping not ours is passed over") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 64 * kMiB, [](Heap* heap) {
        std::vector<char*> fillers;   // the last free pages of segments from before the limit
        do fillers.push_back(static_cast<char*>(heap_malloc(heap, kSmallMax)));
        while (fillers.back() && !segment_of(fillers.back())->lazy);
        Segment* s = segment_of(fillers.back());
        auto next = static_cast<unsigned>(__builtin_ctzll(s->free_pages));
        unsigned char* foreign = battery::map_page_not_ours(reinterpret_cast<void*>(page_area(s, &s->pages()[next]).lo));
        for (std::size_t size : {std::size_t{3000}, std::size_t{100}}) {   // two fresh pages
            fillers.push_back(static_cast<char*>(heap_malloc(heap, size)));
            battery::child_expect(fillers.back() != nullptr, "a block was refused: the blocked page was taken again");
            battery::child_expect(page_of(fillers.back())->index != next, "a block lies in the blocked page");
        }
        battery::child_expect(api().check().ok && battery::page_not_ours_intact(foreign), "the check failed, or the page not ours changed");
        for (char* p : fillers) api().free(p);
        munmap(foreign, kOsPage);
    });
}

// [S3.62] [S3.52] Under an address-space limit that leaves no room (the limit is what the
// process holds), a fresh page of a lazily mapped segment cannot map its first blocks while the
// cache keeps a freed 1 MiB block's segment mapped; the cache goes back and the page is asked
// for once more. (A first-class heap's block: the default heap's would get a mapping of its own,
// [S3.63], freed at once.) Fails with the retry removed: the block is refused.
TEST_CASE("under an address-space limit, a page whose blocks cannot be mapped gets the cache's room") {
    under_limit(RLIMIT_AS, battery::address_space_bytes, 64 * kMiB, [](Heap* heap) {
        std::vector<char*> fillers;   // the last free pages of segments from before the limit
        do fillers.push_back(static_cast<char*>(heap_malloc(heap, kSmallMax)));
        while (fillers.back() && !segment_of(fillers.back())->lazy);
        auto* big = static_cast<char*>(heap_malloc(heap, kMiB));
        battery::child_expect(big != nullptr && segment_of(big)->lazy, "no lazily mapped 1 MiB block");
        std::memset(big, 1, kMiB);
        api().free(big);
        battery::child_expect(segment_cache_count() != 0, "the freed block's segment is not cached");
        rlimit none_left{battery::address_space_bytes(), RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &none_left) == 0, "setrlimit failed");
        auto* p = static_cast<char*>(heap_malloc(heap, 3000));
        battery::child_expect(p != nullptr, "the block was refused");
        battery::child_expect(segment_cache_count() == 0, "the cache was not given back");
        std::memset(p, 2, 3000);
        battery::child_expect_heap_ok(api(), "the heap check failed");
        api().free(p);
        for (char* f : fillers) api().free(f);
    });
}

// [S3.35] A freed huge segment waits in the cache with its memory; a smaller huge request
// takes it without mmap and gives back what lies beyond twice its reach; one over kHugeCacheMax is
// unmapped at once; collect(true) empties the cache.
TEST_CASE("a huge block's segment is cached, reused for a smaller one, and unmapped when too big") {
    collect(true);
    ScopedHeap h;
    uint64_t before = footprint();
    void* p = h.take(20 * kMiB);
    Segment* s = segment_of(p);
    CHECK(footprint() >= before + 20 * kMiB);
    uint64_t unmaps = os_calls(OsCall::munmap), maps = os_calls(OsCall::mmap);
    api().free(p);
    CHECK(os_calls(OsCall::munmap) == unmaps);   // kept, mapping and memory
    CHECK(s->cached == 1);
    CHECK(s->on_purge_list == 1);
    CHECK(segment_owned(p));
    battery::require_heap_ok(api());
    uint64_t madvises = os_calls(OsCall::madvise);
    void* q = h.take(12 * kMiB);                  // at least half of what is committed: all kept
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::mmap) == maps);
    CHECK(os_calls(OsCall::madvise) == madvises);
    CHECK(footprint() >= before + 20 * kMiB);
    api().free(q);
    q = h.take(9 * kMiB);                         // [S3.53] keeps 18 MiB, gives back the rest
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::mmap) == maps);
    CHECK(os_calls(OsCall::madvise) == madvises + 1);
    CHECK(footprint() == before + kMetaSize + 2 * (one_block_usable(9 * kMiB) + kGuardBytes));   // 9 MiB and a page for its guard, twice
    void* r = h.take(12 * kMiB);   // the cache has nothing this big: a new mapping
    CHECK(segment_of(r) != s);
    CHECK(os_calls(OsCall::mmap) > maps);
    api().free(q);
    api().free(r);
    CHECK(segment_cache_count() == 2);
    battery::require_heap_ok(api());
    collect(true);
    CHECK(segment_cache_count() == 0);
    CHECK(footprint() == before);
    CHECK_FALSE(segment_owned(q));

    void* giant = h.take(kHugeCacheMax + kMiB);
    unmaps = os_calls(OsCall::munmap);
    api().free(giant);
    CHECK(os_calls(OsCall::munmap) == unmaps + 1);
    CHECK(footprint() == before);
    CHECK_FALSE(segment_owned(giant));
}

// [S3.78] A cached huge segment taken for a block under half its memory keeps that memory while
// the live huge blocks in all commit at most twice what they reach: with a fresh 40 MiB block
// live, a 9 MiB block in the segment of a freed 20 MiB one costs no madvise ([S3.53] alone
// gave back 2 MiB of it, one call). Once the other is freed (unmapped: over kHugeCacheMax),
// the next such take trims.
TEST_CASE("a reused huge segment keeps its memory while the live huge blocks in all stay within twice their reach") {
    collect(true);
    ScopedHeap h;
    void* a = h.take(40 * kMiB);
    void* p = h.take(20 * kMiB);
    Segment* s = segment_of(p);
    CHECK(huge_totals().committed == huge_totals().reach);   // fresh: committed as far as they reach
    api().free(p);
    uint64_t madvises = os_calls(OsCall::madvise), maps = os_calls(OsCall::mmap);
    uint64_t committed = s->committed;
    void* q = h.take(9 * kMiB);
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::mmap) == maps);
    CHECK(os_calls(OsCall::madvise) == madvises);   // kept: 40 + 20 MiB <= 2 x (40 + 9)
    CHECK(s->committed == committed);
    CHECK(huge_totals().committed <= 2 * huge_totals().reach);
    battery::require_heap_ok(api());   // the checker sums the totals anew
    api().free(q);
    api().free(a);
    CHECK(huge_totals().reach == 0);
    CHECK(huge_totals().committed == 0);
    q = h.take(9 * kMiB);   // alone now: the 20 MiB segment (smallest that holds it) is trimmed to 18
    CHECK(segment_of(q) == s);
    CHECK(os_calls(OsCall::madvise) == madvises + 1);
    CHECK(huge_totals().committed == 2 * huge_totals().reach);
    battery::require_heap_ok(api());
    api().free(q);
    collect(true);
}

TEST_CASE("the segment cache holds at most kCacheBytes and evicts the oldest first") {
    collect(true);
    ScopedHeap h;
    std::vector<void*> blocks;
    for (int i = 0; i < 5; ++i) blocks.push_back(h.take(20 * kMiB));
    Segment* first = segment_of(blocks[0]);
    Segment* last = segment_of(blocks[4]);
    for (void* p : blocks) api().free(p);
    CHECK(segment_cache_count() == kCacheBytes / last->size);   // 2 of 24 MiB: 20 MiB and a header, in whole chunks
    CHECK(last->cached == 1);   // the newest stay
    CHECK_FALSE(segment_owned(first));
    battery::require_heap_ok(api());
    collect(true);
}

TEST_CASE("realloc stays in place within half a class and grows a large block in its segment") {
    void* p = api().malloc(100);                      // class 112
    REQUIRE(p != nullptr);
    std::memset(p, 7, 100);
    CHECK(api().realloc(p, 112) == p);
    CHECK(api().realloc(p, 56) == p);
    Stats before = api().stats();
    void* moved = api().realloc(p, 55);
    CHECK(moved != p);
    Stats after = api().stats();                       // a move is one resize, not malloc + free
    CHECK(after.mallocs == before.mallocs);
    CHECK(after.frees == before.frees);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.bytes_requested == before.bytes_requested + 55);
    CHECK(after.live_bytes == before.live_bytes - 112 + 64);
    api().free(moved);
    void* big = api().malloc(100000);
    REQUIRE(big != nullptr);
    std::memset(big, 9, 100000);
    void* grown = api().realloc(big, 3 * kMiB);
    CHECK(grown == big);
    CHECK(api().usable_size(grown) >= 3 * kMiB);
    CHECK(static_cast<unsigned char*>(grown)[99999] == 9);
    void* shrunk = api().realloc(grown, 200000);
    CHECK(shrunk == big);
    void* huge = api().realloc(shrunk, 5 * kMiB);      // no longer fits a large segment
    CHECK(huge != big);
    CHECK(static_cast<unsigned char*>(huge)[99999] == 9);
    api().free(huge);
    battery::require_heap_ok(api());
}

}  // namespace
}  // namespace edu::stage3
