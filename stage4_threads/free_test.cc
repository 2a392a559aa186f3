// stage4_threads/free_test.cc: proves the local free's double-free checks ([S4.33], [S4.49])
// keep their promise: a block freed again dies in that free, at the head of local_free or
// behind other frees; a live block that holds its own freed mark is freed without a word (the
// mark is confirmed on the lists first). Behind them, for a block whose mark a write after free
// wiped before its second free: the malloc that reaches its second copy ([S4.32]) and the walk
// when the page is given back ([S4.43]) catch it, whatever the program writes into the blocks
// it gets (the keyed mark, [S4.48]). A large block's guards (S3.67) are checked when it is
// given back, freed by its owner or by another thread, and first thing in realloc ([S4.71]).
// Each case uses a size class of its own, so the forked children find the pages as the case
// left them.
#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/stage4.h"
#include "stage4_threads/testing.h"
#include "tests/support.h"

namespace edu::stage4 {
namespace {

using testing::api;
using testing::my_heap;

// Runs `body` in a child and requires the one-line abort naming stage 4, `call`, `ptr`, `what`.
void require_dies_naming(const char* call, const void* ptr, const char* what, const std::function<void()>& body) {
    battery::require_one_line_abort(kStageName, call, ptr, {what}, body);
}

TEST_CASE("a block freed again while it heads local_free dies in that free") {
    void* p = api().malloc(200);
    void* keep = api().malloc(200);   // the page stays in use
    require_dies_naming("free", p, "double free", [p] {
        api().free(p);
        api().free(p);
    });
    api().free(p);
    api().free(keep);
}

// [S4.49] free(p); free(q); free(p): the second free of `a` is the call that dies, before
// anything else can happen to the page.
TEST_CASE("a block freed twice with a free in between dies in its second free") {
    const std::size_t size = 368;
    void* a = api().malloc(size);
    void* b = api().malloc(size);
    void* c = api().malloc(size);   // keeps the page in use
    require_dies_naming("free", a, "double free", [=] {
        api().free(a);
        api().free(b);
        api().free(a);
        battery::child_expect(false, "the second free of a returned");
    });
    api().free(a);
    api().free(b);
    api().free(c);
    battery::check_heap_ok(api());
}

// [S4.49] The mark alone decides nothing: a correct program may hold in a live block exactly the
// value the block would carry when free (here written on purpose; by accident it cannot be,
// S4.48). The free finds the mark, searches the lists, finds nothing, and frees the block.
TEST_CASE("a live block that holds its own freed mark is freed without a word") {
    const std::size_t size = 432;
    auto* a = static_cast<uint64_t*>(api().malloc(size));
    void* keep = api().malloc(size);   // keeps the page in use
    a[1] = freed_mark(a);
    api().free(a);
    battery::check_heap_ok(api());   // a sits on local_free once
    api().free(keep);
}

// A write after free that wipes a free block's mark hides its second free from the free (the
// mark is all the fast path reads); the copy then sits on local_free twice, and the malloc that
// reaches the second copy finds it without the mark before it is handed out twice.
void wipe_mark(void* p) { static_cast<uint64_t*>(p)[1] = 0; }

TEST_CASE("a block freed twice after a write over its mark is caught by the malloc that reaches it again") {
    const std::size_t size = 272;
    void* a = api().malloc(size);
    void* b = api().malloc(size);
    void* c = api().malloc(size);   // live throughout
    void* d = api().malloc(size);   // so the page's count stays above 0 and the page in use
    Page* page = stage4::page_of(a);
    REQUIRE(stage4::page_of(b) == page);
    REQUIRE(stage4::page_of(c) == page);
    REQUIRE(stage4::page_of(d) == page);
    require_dies_naming("malloc", a, "double free", [=] {
        api().free(a);
        api().free(b);
        wipe_mark(a);
        api().free(a);   // the mark is gone: the fast path lets it through
        // Every block the page can hand out, and more: the second copy of `a` is among them.
        for (uint32_t i = 0; i <= page->capacity + 2; ++i) {
            void* p = api().malloc(size);
            if (p == nullptr) break;
        }
    });
    api().free(a);
    api().free(b);
    api().free(c);
    api().free(d);
    battery::check_heap_ok(api());
}

// [S4.48] The test above with a program that writes, into each block it gets, the value that
// was stage 3's constant mark: a constant, the second copy of `a` would pass for free.
TEST_CASE("a block freed twice is caught by malloc even when the program's data holds the old constant mark") {
    const std::size_t size = 304;
    void* a = api().malloc(size);
    void* b = api().malloc(size);
    void* c = api().malloc(size);   // keeps the page in use
    require_dies_naming("malloc", a, "double free", [=] {
        api().free(a);
        api().free(b);
        wipe_mark(a);
        api().free(a);
        for (uint32_t i = 0; i <= stage4::page_of(a)->capacity + 2; ++i) {
            auto* p = static_cast<uint64_t*>(api().malloc(size));
            if (p == nullptr) break;
            p[1] = 0xffffffffdeadf4eeull;   // the program's data
        }
    });
    api().free(a);
    api().free(b);
    api().free(c);
    battery::check_heap_ok(api());
}

TEST_CASE("a double free that leaves a live block under a page counted empty is caught when the page is given back") {
    const std::size_t size = 336;
    void* a = api().malloc(size);
    void* b = api().malloc(size);
    void* c = api().malloc(size);   // the live block the wrong count would abandon
    Page* page = stage4::page_of(a);
    REQUIRE(stage4::page_of(b) == page);
    REQUIRE(stage4::page_of(c) == page);
    require_dies_naming("free", a, "double free", [=] {
        api().free(a);
        api().free(b);
        wipe_mark(a);
        api().free(a);          // used: 3 -> 0, with c live
        if (page->used != 0) return;   // the child exits normally: the REQUIRE above fails
        heap_collect(my_heap(), true);   // gives retired pages back: the walk finds `a` twice
    });
    api().free(a);
    api().free(b);
    api().free(c);
    battery::check_heap_ok(api());
}

// [S4.59] A full page sends its owner's frees to free_generic (the validity sentinel), where the
// caller's own block gets find_block's checks without the call: each must still hold there.
TEST_CASE("frees into a full page: an interior pointer dies, a forged mark passes, a second free dies") {
    const std::size_t size = 1000;   // a class of its own
    std::vector<void*> blocks{api().malloc(size)};
    Page* page = stage4::page_of(blocks[0]);
    while (stage4::page_of(blocks.back()) == page) blocks.push_back(api().malloc(size));
    REQUIRE(page->queue == kFullQueue);
    auto* a = static_cast<unsigned char*>(blocks[0]);
    std::memset(a, 0, size);
    require_dies_naming("free", a + 16, "not the start of a block", [a] { api().free(a + 16); });
    static_cast<uint64_t*>(blocks[0])[1] = freed_mark(a);   // a live block holding its own mark
    require_dies_naming("free", a, "double free", [a] {
        api().free(a);   // searched on the lists, not found: freed, and the page has room again
        battery::child_expect_heap_ok(api(), "a forged mark was not freed cleanly");
        api().free(a);
        battery::child_expect(false, "the second free of a returned");
    });
    for (void* b : blocks) api().free(b);
    battery::check_heap_ok(api());
}

TEST_CASE("blocks freed once each, in any order, pass every check and the page is given back") {
    const std::size_t size = 400;
    std::vector<void*> blocks;
    for (int i = 0; i < 100; ++i) blocks.push_back(api().malloc(size));
    Page* page = stage4::page_of(blocks[0]);
    void* keep = api().malloc(24);   // keeps the segment (and the page record) mapped
    REQUIRE(segment_of(keep) == segment_of(page));
    for (std::size_t i = 0; i < blocks.size(); i += 2) api().free(blocks[i]);
    for (std::size_t i = 1; i < blocks.size(); i += 2) api().free(blocks[i]);
    battery::check_heap_ok(api());
    heap_collect(my_heap(), true);
    CHECK(!page->in_use);   // the walk of S4.43 found every carved block once
    battery::check_heap_ok(api());
    api().free(keep);
}

// [S4.71] Stage 3's guards (S3.67) around a large block, on stage 4's paths: its owner's free
// and realloc in place, and a free by another thread, which the owner collects (S4.46's delayed
// free) and checks when it gives the page back, at its next malloc that takes the generic path.
TEST_CASE("a write past a large block's end or before its start is caught when the block is given back") {
    auto* p = static_cast<unsigned char*>(api().malloc(100000));
    REQUIRE(p != nullptr);
    std::size_t usable = api().usable_size(p);
    CHECK(usable == 102400 - stage3::kGuardBytes);
    std::memset(p, 0, usable);   // every usable byte is the program's
    require_dies_naming("free", p, "buffer overflow", [=] {
        p[usable] = 'A';
        api().free(p);
    });
    require_dies_naming("free", p, "buffer underflow", [=] {
        p[-1] = 'A';
        api().free(p);
    });
    require_dies_naming("realloc", p, "buffer overflow", [=] {
        p[usable + 8] = 0;
        api().realloc(p, 2 * usable);
    });
    require_dies_naming("free", p, "buffer overflow", [=] {
        p[usable + 15] = 0;
        std::thread([p] { api().free(p); }).join();   // a remote free: the owner checks it
        api().free(api().malloc(100000));   // the owner collects its delayed frees first
        battery::child_expect(false, "the owner's malloc returned");
    });
    unsigned char saved = p[usable];
    p[usable] = 'A';
    CHECK_FALSE(api().check().ok);
    p[usable] = saved;
    battery::check_heap_ok(api());
    api().free(p);
    battery::check_heap_ok(api());
}

// [S4.71] realloc checks the guards first, as stage 3's does (its death_test covers each size),
// on stage 4's two ways in: the owner's own live block (S4.58), kept in place, and another
// thread's block, which would move into that thread's heap while the free inside the move went
// to the owner, who would check the guard later and name free.
TEST_CASE("realloc names a damaged guard on the owner's thread and on another") {
    auto* p = static_cast<unsigned char*>(api().malloc(100000));
    REQUIRE(p != nullptr);
    std::size_t usable = api().usable_size(p);
    require_dies_naming("realloc", p, "buffer overflow", [=] {
        p[usable] = 0;
        api().realloc(p, usable);   // fits and uses it all: stays
    });
    require_dies_naming("realloc", p, "buffer underflow", [=] {
        p[-1] = 0;
        std::thread([=] { api().realloc(p, 2 * usable); }).join();
    });
    api().free(p);
    battery::check_heap_ok(api());
}

}  // namespace
}  // namespace edu::stage4
