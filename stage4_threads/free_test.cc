// stage4_threads/free_test.cc: proves the local free's double-free checks ([S4.33]) keep their
// promise although the fast path never reads the block: a block freed again while it heads its
// page's local_free dies at once; a block freed twice with other frees in between is caught
// by the malloc that reaches its second copy, before it is handed out twice; and a double free
// that made the page's count reach 0 while a block is still live is caught when the page is
// given back ([S4.43]), before the page could be reformatted under that block, whatever the
// program writes into the blocks it gets (the keyed mark, [S4.48]); strict mode ([S4.49])
// catches the second kind in the free that makes it. Each case uses
// a size class of its own, so the forked children find the pages as the case left them.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
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

TEST_CASE("a block freed twice with a free in between is caught by the malloc that reaches it again") {
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
        api().free(a);   // not at the head of local_free: the fast path lets it through
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
    CHECK(api().check().ok);
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
    CHECK(api().check().ok);
}

// [S4.49] The same program as above, in strict mode: the second free of `a` is the call that
// dies, before anything else can happen to the page.
TEST_CASE("in strict mode a block freed twice with a free in between dies in its second free") {
    const std::size_t size = 368;
    void* a = api().malloc(size);
    void* b = api().malloc(size);
    void* c = api().malloc(size);   // keeps the page in use
    require_dies_naming("free", a, "double free", [=] {
        REQUIRE(descriptor.set_option("strict", "on"));
        api().free(a);
        api().free(b);
        api().free(a);
        battery::child_expect(false, "the second free of a returned");
    });
    api().free(a);
    api().free(b);
    api().free(c);
    CHECK(api().check().ok);
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
        api().free(a);          // used: 3 -> 0, with c live
        if (page->used != 0) return;   // the child exits normally: the REQUIRE above fails
        heap_collect(my_heap(), true);   // gives retired pages back: the walk finds `a` twice
    });
    api().free(a);
    api().free(b);
    api().free(c);
    CHECK(api().check().ok);
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
    CHECK(api().check().ok);
    heap_collect(my_heap(), true);
    CHECK(!page->in_use);   // the walk of S4.43 found every carved block once
    CHECK(api().check().ok);
    api().free(keep);
}

}  // namespace
}  // namespace edu::stage4
