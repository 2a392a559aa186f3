// tests/bad_input.cc: proves bad input never corrupts silently. Each case runs in a forked
// child whose stderr is captured: a pointer that is not a live block of the stage (double free,
// foreign, interior, misaligned) must end the child with SIGABRT after exactly one stderr line
// naming the stage, the call and the pointer; an impossible size must return NULL with ENOMEM
// and leave the heap, the old block and the process intact (the child then exits 0).
#include <doctest/doctest.h>


#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/support.h"

namespace edu::battery {
namespace {

int g_static_word = 1;

// Runs `body` in a child and requires the one-line abort the contract describes.
void require_dies_naming(const char* call, const void* ptr, const std::function<void()>& body) {
    require_one_line_abort(stage().name, call, ptr, {}, body);
}

// Runs `body` in a child that must survive and exit 0 with nothing on stderr.
void require_survives(const std::function<void()>& body) {
    ChildOutcome outcome = run_in_child(body);
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
    CHECK(outcome.stderr_text.empty());
}

// In a child: the heap still holds what it held and the checker is content.
void child_expect_heap_unchanged(const Stats& before) {
    Stats after = api().stats();
    child_expect(after.live_blocks == before.live_blocks, "live blocks changed");
    child_expect(after.live_bytes == before.live_bytes, "live bytes changed");
    child_expect(after.footprint == before.footprint, "footprint changed");
    child_expect_heap_ok(api(), "heap check failed after the call");
}

TEST_CASE("a double free aborts with one line naming the stage, free and the pointer") {
    void* p = api().malloc(100);
    REQUIRE(p != nullptr);
    void* keep = api().malloc(100);   // so the freed block has a live neighbour
    REQUIRE(keep != nullptr);
    require_dies_naming("free", p, [&] {
        api().free(p);
        api().free(p);
    });
    // Also once its neighbours are free and it has coalesced with them.
    require_dies_naming("free", keep, [&] {
        api().free(p);
        api().free(keep);
        api().free(keep);
    });
    api().free(keep);
    api().free(p);
    require_heap_ok(api());
}

TEST_CASE("freeing the address of a stack variable aborts with one line") {
    int local = 0;
    void* ptr = &local;
    require_dies_naming("free", ptr, [&] { api().free(ptr); });
}

TEST_CASE("freeing the address of a static variable aborts with one line") {
    void* ptr = &g_static_word;
    require_dies_naming("free", ptr, [&] { api().free(ptr); });
}

TEST_CASE("freeing a block from the C library's malloc aborts with one line") {
    void* foreign = std::malloc(64);
    REQUIRE(foreign != nullptr);
    require_dies_naming("free", foreign, [&] { api().free(foreign); });
    std::free(foreign);
}

TEST_CASE("freeing an interior pointer of a zeroed live block aborts with one line") {
    for (std::size_t size : {std::size_t{64}, std::size_t{256}, std::size_t{100000}}) {
        CAPTURE(size);
        auto* p = static_cast<unsigned char*>(api().malloc(size));
        REQUIRE(p != nullptr);
        std::memset(p, 0, size);   // no stale tags inside the payload to be mistaken for a block
        require_dies_naming("free", p + 16, [&] { api().free(p + 16); });
        api().free(p);
    }
    require_heap_ok(api());
}

TEST_CASE("freeing a misaligned pointer into a live block aborts with one line") {
    auto* p = static_cast<unsigned char*>(api().malloc(64));
    REQUIRE(p != nullptr);
    require_dies_naming("free", p + 1, [&] { api().free(p + 1); });
    require_dies_naming("free", p + 8, [&] { api().free(p + 8); });
    api().free(p);
}

TEST_CASE("realloc of a foreign or freed pointer aborts with one line naming realloc") {
    int local = 0;
    void* stack_ptr = &local;
    require_dies_naming("realloc", stack_ptr, [&] { api().realloc(stack_ptr, 100); });
    void* foreign = std::malloc(64);
    REQUIRE(foreign != nullptr);
    require_dies_naming("realloc", foreign, [&] { api().realloc(foreign, 10); });
    std::free(foreign);
    void* p = api().malloc(50);
    REQUIRE(p != nullptr);
    require_dies_naming("realloc", p, [&] {
        api().free(p);
        api().realloc(p, 200);
    });
    api().free(p);
}

TEST_CASE("realloc and usable_size of an interior pointer abort with one line naming the call") {
    for (std::size_t size : {std::size_t{64}, std::size_t{256}}) {
        CAPTURE(size);
        auto* p = static_cast<unsigned char*>(api().malloc(size));
        REQUIRE(p != nullptr);
        std::memset(p, 0, size);   // as for free: nothing in the payload that looks like a block
        require_dies_naming("realloc", p + 16, [&] { api().realloc(p + 16, size / 2); });
        require_dies_naming("usable_size", p + 16, [&] { api().usable_size(p + 16); });
        api().free(p);
    }
    require_heap_ok(api());
}

TEST_CASE("the thread-safe entry reports a double free the same way") {
    void* p = shared_api().malloc(40);
    REQUIRE(p != nullptr);
    require_dies_naming("free", p, [&] {
        shared_api().free(p);
        shared_api().free(p);
    });
    shared_api().free(p);
}

TEST_CASE("malloc of SIZE_MAX returns null with ENOMEM and the process goes on") {
    require_survives([] {
        Stats before = api().stats();
        for (std::size_t size : {SIZE_MAX, SIZE_MAX - 8, SIZE_MAX / 2 + 1}) {
            errno = 0;
            child_expect(api().malloc(size) == nullptr, "malloc of a huge size returned a block");
            child_expect(errno == ENOMEM, "malloc of a huge size left errno != ENOMEM");
        }
        child_expect_heap_unchanged(before);
        void* p = api().malloc(100);
        child_expect(p != nullptr, "malloc(100) failed after a refused request");
        api().free(p);
    });
}

// The walk as text, one entry a line, to compare two moments of one heap.
std::string walk_text() {
    std::string text;
    api().walk(
        [](const WalkEntry& e, void* context) {
            char line[160];
            std::snprintf(line, sizeof line, "%s %s %p %zu %u\n", e.kind, kWalkStateNames[static_cast<unsigned>(e.state)],
                          e.address, e.size, e.depth);
            *static_cast<std::string*>(context) += line;
            return true;
        },
        &text);
    return text;
}

// A refusal comes before anything else a call does: a request the stage cannot serve may not
// advance a clock that ages cached or dirty memory, so thousands of them give back nothing,
// unmap nothing and count nothing, whichever call of the family makes them.
TEST_CASE("thousands of refused requests leave the statistics and the heap walk as they were") {
    require_survives([] {
        std::vector<void*> blocks;   // leave memory that ageing would give back: emptied pages,
        for (int i = 0; i < 300; ++i) blocks.push_back(api().malloc(1000));   // a freed large block
        blocks.push_back(api().malloc(std::size_t{3} << 20));
        for (void* p : blocks) child_expect(p != nullptr, "malloc failed while setting up");
        for (void* p : blocks) api().free(p);
        void* kept = api().malloc(100);   // for realloc to refuse to grow
        child_expect(kept != nullptr, "malloc(100) failed while setting up");
        Stats before = api().stats();
        std::string walk_before = walk_text();
        for (int i = 0; i < 10000; ++i) {
            errno = 0;
            void* got = nullptr;
            switch (i % 4) {
                case 0: got = api().malloc(SIZE_MAX); break;
                case 1: got = api().calloc(SIZE_MAX / 2, 3); break;
                case 2: got = api().aligned_alloc(4096, SIZE_MAX - 8); break;
                default: got = api().realloc(kept, SIZE_MAX); break;
            }
            child_expect(got == nullptr && errno == ENOMEM, "a huge request was not refused with ENOMEM");
        }
        Stats after = api().stats();
        child_expect(after.mallocs == before.mallocs && after.frees == before.frees &&
                         after.bytes_requested == before.bytes_requested,
                     "request counters moved");
        child_expect(after.footprint == before.footprint && after.peak_footprint == before.peak_footprint,
                     "footprint changed");
        for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
            child_expect(after.os_calls[k] == before.os_calls[k], (std::string("calls to ") + kOsCallNames[k] + " changed").c_str());
        child_expect(walk_text() == walk_before, "the heap walk changed");
        child_expect_heap_ok(api(), "heap check failed after the refusals");
        api().free(kept);
    });
}

TEST_CASE("calloc whose product overflows returns null with ENOMEM and the process goes on") {
    require_survives([] {
        Stats before = api().stats();
        errno = 0;
        child_expect(api().calloc(SIZE_MAX / 2, 3) == nullptr,
                     "calloc(SIZE_MAX/2, 3) returned a block");
        child_expect(errno == ENOMEM, "calloc(SIZE_MAX/2, 3) left errno != ENOMEM");
        errno = 0;
        child_expect(api().calloc(1, SIZE_MAX) == nullptr, "calloc(1, SIZE_MAX) returned a block");
        child_expect(errno == ENOMEM, "calloc(1, SIZE_MAX) left errno != ENOMEM");
        child_expect_heap_unchanged(before);
    });
}

TEST_CASE("aligned_alloc of a huge size returns null with ENOMEM and the process goes on") {
    require_survives([] {
        Stats before = api().stats();
        for (std::size_t alignment : {std::size_t{16}, std::size_t{4096}, stage().max_alignment}) {
            errno = 0;
            child_expect(api().aligned_alloc(alignment, SIZE_MAX - 8) == nullptr,
                         "aligned_alloc of SIZE_MAX - 8 returned a block");
            child_expect(errno == ENOMEM, "aligned_alloc of SIZE_MAX - 8 left errno != ENOMEM");
        }
        child_expect_heap_unchanged(before);
    });
}

TEST_CASE("realloc to SIZE_MAX returns null with ENOMEM and leaves the old block intact") {
    require_survives([] {
        void* p = api().malloc(300);
        child_expect(p != nullptr, "malloc(300) failed");
        fill(p, 99, 0, 300);
        Stats before = api().stats();
        for (std::size_t size : {SIZE_MAX, SIZE_MAX - 8}) {
            errno = 0;
            child_expect(api().realloc(p, size) == nullptr,
                         "realloc to a huge size returned a block");
            child_expect(errno == ENOMEM, "realloc to a huge size left errno != ENOMEM");
            child_expect(first_mismatch(p, 99, 300) == -1, "the old block changed");
            child_expect(api().usable_size(p) >= 300, "the old block shrank");
        }
        child_expect_heap_unchanged(before);
        void* q = api().realloc(p, 600);   // still a live block: it can grow and be freed
        child_expect(q != nullptr, "realloc of the kept block failed");
        child_expect(first_mismatch(q, 99, 300) == -1, "the kept block lost its contents");
        api().free(q);
        child_expect_heap_ok(api(), "heap check failed after freeing the kept block");
    });
}

}  // namespace
}  // namespace edu::battery
