// stage3_segments/death_test.cc: proves free's checks in plain mode (no secure option): every
// pointer that is not a live block ends a forked child with SIGABRT after one stderr line naming
// the stage, the call and the pointer, whatever its block or page is (free on either list, carved
// but never handed out, uncarved, in metadata, in a freed page, inside a large or huge block); a
// live block that merely looks free (second word = the freed mark) is freed after the search
// that confirms it; malloc's check that a block it hands out still carries its mark ([S3.40]);
// and the guards around a large or huge block, checked at free and first thing in realloc ([S3.67]).
#include <doctest/doctest.h>
#include <sys/resource.h>


#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "stage3_segments/heaps.h"
#include "stage3_segments/page.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/testing.h"
#include "tests/support.h"

namespace edu::stage3 {
namespace {

using testing::api;

// Runs `body` in a child and requires the one-line abort, with `words` in the line.
void require_dies(const char* call, const void* ptr, const char* words, const std::function<void()>& body) {
    battery::require_one_line_abort(kStageName, call, ptr, {words}, body);
}

TEST_CASE("a double free is caught whether the block sits on local_free or on free") {
    Heap* h = heap_create();
    auto* a = static_cast<char*>(heap_malloc(h, 48));
    auto* b = static_cast<char*>(heap_malloc(h, 48));
    require_dies("free", a, "double free", [&] {
        api().free(a);          // on local_free
        api().free(a);
    });
    require_dies("free", a, "double free", [&] {
        Page* page = page_of(a);
        api().free(a);
        api().free(b);          // local_free: b -> a
        while (page->free) heap_malloc(h, 48);
        battery::child_expect(heap_malloc(h, 48) == b, "the swap should hand out b first");
        battery::child_expect(page->free == reinterpret_cast<Block*>(a), "a should head free");
        api().free(a);          // a is on `free` now
    });
    heap_destroy(h);
}

TEST_CASE("a carved block never handed out is refused as already free") {
    Heap* h = heap_create();
    auto* a = static_cast<char*>(heap_malloc(h, 48));
    require_dies("free", a + 48, "double free", [&] { api().free(a + 48); });
    heap_destroy(h);
}

TEST_CASE("interior, misaligned, uncarved and metadata pointers are refused") {
    Heap* h = heap_create();
    auto* a = static_cast<char*>(heap_malloc(h, 48));
    const char* words = "not the start of a block";
    require_dies("free", a + 16, words, [&] { api().free(a + 16); });
    require_dies("free", a + 1, words, [&] { api().free(a + 1); });
    require_dies("free", a + 48 * 200, words, [&] { api().free(a + 48 * 200); });   // uncarved
    char* meta = reinterpret_cast<char*>(segment_of(a)) + 200;
    require_dies("free", meta, "", [&] { api().free(meta); });
    require_dies("usable_size", a + 32, words, [&] { api().usable_size(a + 32); });
    require_dies("realloc", a + 32, words, [&] { api().realloc(a + 32, 10); });
    heap_destroy(h);
}

TEST_CASE("inside a large or huge block, only its start is a block") {
    auto* large = static_cast<char*>(api().malloc(200000));
    auto* huge = static_cast<char*>(api().malloc(9 << 20));
    REQUIRE(large != nullptr);
    REQUIRE(huge != nullptr);
    require_dies("free", large + 4096, "not the start of a block", [&] { api().free(large + 4096); });
    require_dies("free", huge + 16, "not the start of a block", [&] { api().free(huge + 16); });
    // Past its first 4 MiB a huge block is nobody's as far as the segment map is concerned;
    // the cold path finds its segment on the list of all ([S3.66]).
    require_dies("free", huge + (5 << 20), "interior pointer, 5242880 bytes into the huge block",
                 [&] { api().free(huge + (5 << 20)); });
    require_dies("free", &huge, "not from this heap", [&] { api().free(&huge); });
    require_dies("free", large, "double free", [&] {
        api().free(large);
        api().free(large);      // its segment is cached now: the page is free
    });
    api().free(large);
    api().free(huge);
}

// [S3.67] A large or huge block's guards: a byte changed on either side of it stops its free (or
// the realloc that would resize it in place) with one line; the checker reports it; a program
// that uses every usable byte, and a block resized in place, pass. Whatever the byte written:
// a NUL, text, or any byte other than the guard's own.
TEST_CASE("a write past a large or huge block's end, or before its start, is caught by its guard") {
    segment_cache_collect(true);   // a fresh segment: a reused one may give the block its reach (S3.80)
    auto* large = static_cast<unsigned char*>(api().malloc(100000));
    auto* huge = static_cast<unsigned char*>(api().malloc(9 << 20));
    auto* aligned = static_cast<unsigned char*>(api().aligned_alloc(std::size_t{1} << 16, 100000));
    REQUIRE(large != nullptr);
    REQUIRE(huge != nullptr);
    REQUIRE(aligned != nullptr);
    std::size_t usable = api().usable_size(large);
    CHECK(usable == 102400 - kGuardBytes);   // the same 25 OS pages as without the guard
    for (unsigned char* p : {large, huge, aligned}) {
        std::size_t n = api().usable_size(p);
        std::memset(p, 0x41, n);   // every usable byte is the program's
        unsigned char past = static_cast<unsigned char>(p[n] ^ 0x01);   // differs from the guard
        require_dies("free", p, "buffer overflow", [=] {
            p[n] = past;
            api().free(p);
        });
        require_dies("free", p, "buffer overflow", [=] {
            p[n + kGuardBytes - 1] = 0;   // the guard's last byte: never 0
            api().free(p);
        });
        require_dies("free", p, "buffer underflow", [=] {
            p[-1] = 0;
            api().free(p);
        });
        require_dies("free", p, "buffer underflow", [=] {
            p[-static_cast<std::ptrdiff_t>(kGuardBytes)] = 'A';
            api().free(p);
        });
        require_dies("realloc", p, "buffer overflow", [=] {
            p[n + 3] = '\n';
            api().realloc(p, n + 100000);
        });
    }
    // The checker sees a damaged guard too, and an intact one again once the byte is restored.
    unsigned char saved = large[usable];
    large[usable] = 0x41;
    CHECK_FALSE(api().check().ok);
    large[usable] = saved;
    battery::check_heap_ok(api());
    // In place, the tail guard moves to the new end: the bytes of the old guard are usable now.
    auto* grown = static_cast<unsigned char*>(api().realloc(large, 300000));
    REQUIRE(grown == large);
    std::size_t grown_usable = api().usable_size(grown);
    CHECK(grown_usable == 303104 - kGuardBytes);
    std::memset(grown, 0x42, grown_usable);
    battery::check_heap_ok(api());
    require_dies("free", grown, "buffer overflow", [=] {
        grown[grown_usable] = 0x42;
        api().free(grown);
    });
    api().free(grown);
    api().free(huge);
    api().free(aligned);
    battery::require_heap_ok(api());
}

// [S3.67] realloc checks a large or huge block's guards before it decides anything, so its line
// names realloc whatever would follow: the block stays (the new size fits and uses at least
// half), is resized in place (large), or moves (a small size; a huge block always), and the
// free inside a move never reports it as its own.
TEST_CASE("realloc names a damaged guard whether the block would stay, grow in place or move") {
    auto* large = static_cast<unsigned char*>(api().malloc(100000));
    auto* huge = static_cast<unsigned char*>(api().malloc(9 << 20));
    REQUIRE(large != nullptr);
    REQUIRE(huge != nullptr);
    for (unsigned char* p : {large, huge}) {
        std::size_t n = api().usable_size(p);
        for (std::size_t size : {n, n / 2 + 1, n + 100000, std::size_t{100}}) {
            require_dies("realloc", p, "buffer overflow", [=] {
                p[n] = static_cast<unsigned char>(p[n] ^ 0x01);
                api().realloc(p, size);
            });
            require_dies("realloc", p, "buffer underflow", [=] {
                p[-1] = 0;
                api().realloc(p, size);
            });
        }
    }
    api().free(large);
    api().free(huge);
    battery::require_heap_ok(api());
}

// [S3.58] Under an address-space limit a large block's segment is mapped only as far as the block
// reaches; a pointer into the rest of its 4 MiB window (unmapped, or another mapping's) finds
// the chunk in the segment map and is refused after reading only the header, never followed.
// (A first-class heap's block: the default heap's would get a mapping of its own, [S3.63].)
TEST_CASE("a pointer past a lazily mapped segment's end, inside its 4 MiB window, is refused") {
    if (battery::kUnderSanitizer) return;   // the sanitizers' shadow memory needs terabytes of address space
    segment_cache_collect(true);   // a cached whole segment would serve the block
    Heap* heap = heap_create();
    rlimit unlimited{};
    REQUIRE(getrlimit(RLIMIT_AS, &unlimited) == 0);
    rlimit limit{battery::address_space_bytes() + (std::size_t{16} << 20), unlimited.rlim_max};
    REQUIRE(setrlimit(RLIMIT_AS, &limit) == 0);   // for one malloc; the soft limit goes back up
    auto* p = static_cast<char*>(heap_malloc(heap, 100000));
    REQUIRE(setrlimit(RLIMIT_AS, &unlimited) == 0);
    REQUIRE(p != nullptr);
    CHECK(segment_of(p)->lazy);
    char* past = p + (std::size_t{3} << 20);
    require_dies("free", past, "not the start of a block", [&] { api().free(past); });
    api().free(p);
    heap_destroy(heap);
}

// A stale pointer into a segment that went back: to the cache (its header stays, its pages are
// free) or to the OS (its map entry is cleared before the munmap, [S3.13]: the fast path reads
// the map, never the unmapped header). Each dies with one line, never a fault; a huge block
// over kHugeCacheMax is unmapped by its own free, interior pointers included.
TEST_CASE("a stale pointer into a segment that was cached or unmapped is refused, not followed") {
    Heap* h = heap_create();
    std::vector<char*> blocks;
    Segment* first = nullptr;
    while (blocks.size() < 5000) {   // more than one segment of 1000-byte blocks
        blocks.push_back(static_cast<char*>(heap_malloc(h, 1000)));
        if (!first) first = segment_of(blocks.back());
    }
    char* stale = blocks.front();
    REQUIRE(segment_of(blocks.back()) != first);
    require_dies("free", stale, "", [&] {   // to the cache when the heap goes, then to the OS
        heap_destroy(h);
        battery::child_expect(first_cached_segment() != nullptr, "the heap's segments should be cached");
        api().free(stale);
    });
    require_dies("free", stale, "not from this heap", [&] {
        heap_destroy(h);
        segment_cache_collect(true);
        battery::child_expect(segment_cache_count() == 0, "the cache should be empty");
        api().free(stale);
    });
    require_dies("realloc", stale + 1000, "not from this heap", [&] {
        heap_destroy(h);
        segment_cache_collect(true);
        api().realloc(stale + 1000, 10);
    });
    auto* huge = static_cast<char*>(api().malloc(kHugeCacheMax + (1 << 20)));
    REQUIRE(huge != nullptr);
    require_dies("free", huge, "not from this heap", [&] {
        api().free(huge);
        api().free(huge);
    });
    require_dies("free", huge + (1 << 20), "not from this heap", [&] {
        api().free(huge);
        api().free(huge + (1 << 20));
    });
    api().free(huge);
    heap_destroy(h);
}

// [S3.13] A chunk of the map's window that is not ours holds g_foreign, whose page has limit 0:
// free's fast path reads that stand-in, never the chunk, and fails the validity test for every
// pointer, even one whose low 32 bits equal the page's start (n = 0, which a bound of `<=` would
// let through to a read of the pointer's memory and a push onto the stand-in's list).
TEST_CASE("a pointer into a chunk of the map's window that is not ours is refused, not read") {
    void* keep = api().malloc(64);   // the window exists once a segment does
    map_window_follow(keep);   // as a free would: a lazily mapped segment ([S3.58]) may hold it
    REQUIRE(segment_in_window(keep));
    char* foreign = nullptr;
    for (uintptr_t chunk = 0; chunk < g_map_window.chunks && !foreign; chunk += 1024)   // 4 GiB apart
        if (g_map_window.leaf[chunk] == &g_foreign)
            foreign = reinterpret_cast<char*>(g_map_window.base + (chunk << kSegmentShift));
    REQUIRE(foreign != nullptr);
    CHECK(static_cast<uint32_t>(reinterpret_cast<uintptr_t>(foreign)) == g_foreign.page_of[0]->start32);
    CHECK_FALSE(segment_owned(foreign));
    require_dies("free", foreign, "not from this heap", [&] { api().free(foreign); });
    require_dies("free", foreign + 16, "not from this heap", [&] { api().free(foreign + 16); });
    api().free(keep);
}

TEST_CASE("a block of a destroyed heap is refused") {
    Heap* h = heap_create();
    void* p = heap_malloc(h, 700);
    void* keep = heap_malloc(heap_create(), 700);   // another heap keeps the segment mapped
    heap_destroy(h);
    require_dies("free", p, "", [&] { api().free(p); });
    api().free(keep);
}

TEST_CASE("a live block whose second word equals the freed mark is freed normally") {
    Stats before = api().stats();
    auto* p = static_cast<uint64_t*>(api().malloc(64));
    REQUIRE(p != nullptr);
    p[1] = kFreedMark;          // program data that happens to look like the mark
    api().free(p);              // the confirmation search finds it on no list
    Stats after = api().stats();
    CHECK(after.frees == before.frees + 1);
    CHECK(after.live_blocks == before.live_blocks);
    battery::require_heap_ok(api());
}

// [S3.40] A free block whose mark was overwritten (here its top byte, as an underflow from the
// 16-byte block above it would) is refused by the malloc that would hand it out: by the
// generic path when it comes from local_free, by the fast path when it heads `free`.
TEST_CASE("a free block that lost its freed mark is refused by the malloc that would hand it out") {
    Heap* h = heap_create();
    auto* a = static_cast<char*>(heap_malloc(h, 16));
    auto* c = static_cast<char*>(heap_malloc(h, 16));
    auto* keep = static_cast<char*>(heap_malloc(h, 16));   // the page stays in use
    Page* page = page_of(a);
    require_dies("malloc", a, "lost its freed mark", [&] {
        api().free(a);   // on local_free
        a[15] = 0x41;
        while (page->free) heap_malloc(h, 16);
        heap_malloc(h, 16);   // the generic path collects local_free and pops a
    });
    require_dies("malloc", a, "lost its freed mark", [&] {
        api().free(a);
        api().free(c);   // local_free: c -> a
        while (page->free) heap_malloc(h, 16);
        battery::child_expect(heap_malloc(h, 16) == c, "the collect should hand out c first");
        battery::child_expect(page->free == reinterpret_cast<Block*>(a), "a should head free");
        a[15] = 0x41;
        heap_malloc(h, 16);   // the fast path pops a
    });
    api().free(a);
    api().free(c);
    api().free(keep);
    heap_destroy(h);
}

TEST_CASE("freeing a null pointer does nothing, on the fast path's cold side") {
    Stats before = api().stats();
    api().free(nullptr);
    CHECK(api().stats().frees == before.frees);
}

}  // namespace
}  // namespace edu::stage3
