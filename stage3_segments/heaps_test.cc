// stage3_segments/heaps_test.cc: proves first-class heaps (heaps.h) keep their blocks apart
// and die whole: blocks come from pages owned by their heap, the contract's free and realloc
// accept them, destroying a heap releases every page at once (footprint, statistics and the
// checker agree afterwards), and heaps never disturb the default heap's blocks.
#include <doctest/doctest.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "stage3_segments/bins.h"
#include "stage3_segments/heap.h"
#include "stage3_segments/heaps.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/testing.h"
#include "tests/support.h"

namespace edu::stage3 {
namespace {

using testing::api;
using testing::footprint;

TEST_CASE("a new heap allocates from pages of its own") {
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    std::vector<void*> mine, theirs;
    for (int i = 0; i < 2000; ++i) {
        std::size_t n = static_cast<std::size_t>(i * 37 % 3000);
        mine.push_back(heap_malloc(h, n));
        theirs.push_back(api().malloc(n));
        REQUIRE(mine.back() != nullptr);
        REQUIRE(theirs.back() != nullptr);
    }
    std::set<Page*> my_pages, their_pages;
    for (void* p : mine) {
        CHECK(page_of(p)->heap == h);
        my_pages.insert(page_of(p));
    }
    for (void* p : theirs) {
        CHECK(page_of(p)->heap == default_heap());
        their_pages.insert(page_of(p));
    }
    for (Page* page : my_pages) CHECK(their_pages.count(page) == 0);
    battery::require_heap_ok(api());
    for (void* p : theirs) api().free(p);
    heap_destroy(h);
    battery::require_heap_ok(api());
}

TEST_CASE("destroying a heap frees all its blocks at once and its memory goes back") {
    collect(true);
    Stats before = api().stats();
    uint64_t fp = footprint();
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    for (int i = 0; i < 30000; ++i) REQUIRE(heap_malloc(h, static_cast<std::size_t>(16 + i % 2000)) != nullptr);
    for (int i = 0; i < 5; ++i) REQUIRE(heap_malloc(h, 3 * 1024 * 1024) != nullptr);   // large
    REQUIRE(heap_malloc(h, 10 * 1024 * 1024) != nullptr);                              // huge
    Stats mid = api().stats();
    CHECK(mid.live_blocks == before.live_blocks + 30006);
    CHECK(footprint() > fp + 40 * 1024 * 1024);
    heap_destroy(h);
    Stats after = api().stats();
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
    CHECK(after.frees == before.frees + 30006);
    collect(true);
    CHECK(footprint() <= fp);
    battery::require_heap_ok(api());
}

TEST_CASE("blocks of a heap can be freed and resized through the contract") {
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    auto* p = static_cast<unsigned char*>(heap_malloc(h, 300));
    REQUIRE(p != nullptr);
    std::memset(p, 0x5a, 300);
    auto* q = static_cast<unsigned char*>(api().realloc(p, 5000));   // moves, within the heap
    REQUIRE(q != nullptr);
    CHECK(page_of(q)->heap == h);
    CHECK(q[299] == 0x5a);
    void* z = heap_calloc(h, 100, 10);
    REQUIRE(z != nullptr);
    CHECK(battery::first_nonzero(z, 1000) == -1);
    api().free(z);
    api().free(q);
    battery::require_heap_ok(api());
    heap_destroy(h);
    battery::require_heap_ok(api());
}

TEST_CASE("heaps are independent: destroying one leaves another's blocks intact") {
    Heap* a = heap_create();
    Heap* b = heap_create();
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    std::vector<void*> kept;
    for (uint64_t i = 0; i < 3000; ++i) {
        heap_malloc(a, 64);
        void* p = heap_malloc(b, 64 + i % 500);
        REQUIRE(p != nullptr);
        battery::fill(p, i, 0, 64);
        kept.push_back(p);
    }
    heap_destroy(a);
    for (uint64_t i = 0; i < kept.size(); ++i) CHECK(battery::first_mismatch(kept[i], i, 64) == -1);
    battery::require_heap_ok(api());
    heap_destroy(b);
    battery::require_heap_ok(api());
}

TEST_CASE("heap_calloc refuses an overflowing product with ENOMEM") {
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    errno = 0;
    CHECK(heap_calloc(h, SIZE_MAX / 2, 3) == nullptr);
    CHECK(errno == ENOMEM);
    errno = 0;
    CHECK(heap_malloc(h, SIZE_MAX - 100) == nullptr);
    CHECK(errno == ENOMEM);
    heap_destroy(h);
}

TEST_CASE("destroying the default heap is refused with one line") {
    battery::ChildOutcome out = battery::run_in_child([] { heap_destroy(default_heap()); });
    INFO(out.describe());
    CHECK(out.signaled);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find("stage3_segments: heap_destroy(") != std::string::npos);
}

// A direct slot that update_direct missed (S3.direct, [S3.21]) keeps naming a page after the
// page left its bin's queue; the fast path serves the slot's requests from it, and the damage
// shows later as a page filed under another queue than its own (what a student's update_direct
// that set only the first slot of each bin led to: "page's queue field names another queue").
// Given both faults, the checker names the stale slot, the cause.
TEST_CASE("the checker names a stale direct slot before a misfiled page") {
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    Page* big = page_of(heap_malloc(h, 400));
    REQUIRE(heap_malloc(h, 16) != nullptr);
    battery::require_heap_ok(api());
    Page* const slot = h->direct[2];   // the slot of 9..16-byte requests
    const uint8_t queue = big->queue;
    h->direct[2] = big;
    big->queue = static_cast<uint8_t>(bin_of(16));
    CheckResult r = api().check();
    h->direct[2] = slot;
    big->queue = queue;
    CHECK_FALSE(r.ok);
    CHECK(std::string(r.message).find("direct slot does not name its bin's first page") != std::string::npos);
    battery::check_heap_ok(api());
    heap_destroy(h);
}

}  // namespace
}  // namespace edu::stage3
