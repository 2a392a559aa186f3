// stage3_segments/secure_test.cc: proves the secure mode (option "secure"): links are stored
// encoded with per-page keys and decode to the same lists, the mode can be switched with live
// blocks and lists (every list is re-encoded), and an overflow into a free block's link is
// caught by the next malloc with one line, where plain mode would hand out the forged address.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "stage3_segments/heaps.h"
#include "stage3_segments/page.h"
#include "stage3_segments/secure.h"
#include "stage3_segments/stage3.h"
#include "stage3_segments/testing.h"
#include "tests/support.h"

namespace edu::stage3 {
namespace {

using testing::api;
using testing::OptionScope;

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST_CASE("decoding undoes encoding for any keys, and zero keys change nothing") {
    battery::Rng rng(5);
    Page page{};
    for (int i = 0; i < 10000; ++i) {
        page.keys[0] = rng.next();
        page.keys[1] = rng.next();
        uintptr_t x = rng.next() & ((uintptr_t{1} << 47) - 16);
        REQUIRE(decode(&page, encode(&page, x)) == x);
        REQUIRE(decode(&page, encode(&page, 0)) == 0);
    }
    page.keys[0] = page.keys[1] = 0;
    CHECK(encode(&page, 0x1234560) == 0x1234560);
    CHECK(freed_mark(&page) == kFreedMark);
}

TEST_CASE("in secure mode free blocks hold encoded links under keys that differ per page") {
    OptionScope secure("secure", "on");
    Heap* h = heap_create();
    REQUIRE(h != nullptr);
    void* a = heap_malloc(h, 32);
    void* b = heap_malloc(h, 2000);
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    Page* pa = page_of(a);
    Page* pb = page_of(b);
    CHECK((pa->keys[0] | pa->keys[1]) != 0);
    CHECK((pa->keys[0] != pb->keys[0] || pa->keys[1] != pb->keys[1]));
    const Block* head = pa->free;                        // the next carved block
    REQUIRE(head != nullptr);
    CHECK(head->link != addr(head) + 32);                 // stored encoded...
    CHECK(decode(pa, head->link) == addr(head) + 32);     // ...and decodes to the next block
    CHECK(head->mark == freed_mark(pa));
    CHECK(head->mark != kFreedMark);
    api().free(a);
    CHECK(list_length(pa, pa->local_free) == 1);
    heap_destroy(h);
    battery::require_heap_ok(api());
}

TEST_CASE("switching secure mode on and off re-encodes every list and keeps every block") {
    std::vector<void*> blocks;
    for (uint64_t i = 0; i < 6000; ++i) {
        std::size_t n = 16 + i * 13 % 3000;
        void* p = api().malloc(n);
        REQUIRE(p != nullptr);
        battery::fill(p, i, 0, 16);
        blocks.push_back(p);
    }
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
        api().free(blocks[i]);
        blocks[i] = nullptr;
    }
    for (const char* mode : {"on", "off", "on", "off"}) {
        CAPTURE(mode);
        REQUIRE(testing::set_option("secure", mode));
        battery::require_heap_ok(api());
        std::vector<void*> more;
        for (int i = 0; i < 3000; ++i) more.push_back(api().malloc(static_cast<std::size_t>(16 + i % 2000)));
        for (void* p : more) api().free(p);
        battery::require_heap_ok(api());
    }
    for (uint64_t i = 0; i < blocks.size(); ++i) {
        if (!blocks[i]) continue;
        CHECK(battery::first_mismatch(blocks[i], i, 16) == -1);
        api().free(blocks[i]);
    }
    battery::require_heap_ok(api());
}

// Overflows block `a` by eight bytes into the link of the free block after it, then mallocs.
void overflow_then_malloc(Heap* h) {
    auto* a = static_cast<unsigned char*>(heap_malloc(h, 48));
    std::memset(a, 0x41, 48 + 8);
    heap_malloc(h, 48);   // pops the damaged block: its link now says 0x4141414141414141
    heap_malloc(h, 48);   // plain mode hands that address out; secure mode never gets here
    battery::child_expect(false, "the overflow went unnoticed");
}

TEST_CASE("an overflow into a free block's link is caught by the next malloc in secure mode") {
    battery::ChildOutcome out = battery::run_in_child([] {
        testing::set_option("secure", "on");
        overflow_then_malloc(heap_create());
    });
    INFO(out.describe());
    CHECK(out.signaled);
    CHECK(out.signal == SIGABRT);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find("stage3_segments: malloc(0x") != std::string::npos);
    CHECK(out.stderr_text.find("free list corrupted") != std::string::npos);
    // The same program in plain mode: the forged address comes out of malloc (and faults).
    battery::ChildOutcome plain = battery::run_in_child([] { overflow_then_malloc(heap_create()); });
    INFO(plain.describe());
    CHECK(plain.stderr_text.find("free list corrupted") == std::string::npos);
}

TEST_CASE("a double free is reported in secure mode too") {
    battery::ChildOutcome out = battery::run_in_child([] {
        testing::set_option("secure", "on");
        void* p = api().malloc(100);
        api().free(p);
        api().free(p);
    });
    INFO(out.describe());
    CHECK(out.signal == SIGABRT);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find("double free") != std::string::npos);
}

// [S3.37] Another thread allocates and frees through the locked entry (as every thread of a
// program does under the drop-in library) while this one switches the mode back and forth.
// Under ThreadSanitizer an unlocked re-keying is a reported race; in any build, a list
// re-encoded under a running malloc would hand out a bad block or fail the check.
TEST_CASE("switching secure mode while another thread allocates through the locked entry is safe") {
    const Api& locked = *descriptor.thread_safe;
    std::atomic<bool> stop{false};
    std::atomic<int> damaged{0};
    std::thread worker([&] {
        battery::Rng rng(17);
        std::vector<void*> live;
        for (uint64_t id = 0; !stop.load(std::memory_order_relaxed) || id < 2000; ++id) {
            std::size_t size = rng.range(1, 600);
            void* p = locked.malloc(size);
            battery::fill(p, id, 0, size);
            live.push_back(p);
            if (battery::first_mismatch(p, id, size) != -1) damaged.fetch_add(1);
            if (live.size() > 300 || rng.per_mille(400)) {
                std::size_t k = rng.below(live.size());
                locked.free(live[k]);
                live[k] = live.back();
                live.pop_back();
            }
        }
        for (void* p : live) locked.free(p);
    });
    std::string before = descriptor.get_option("secure");
    for (int i = 0; i < 200; ++i) REQUIRE(descriptor.set_option("secure", i % 2 ? "off" : "on"));
    stop.store(true);
    worker.join();
    descriptor.set_option("secure", before.c_str());
    CHECK(damaged.load() == 0);
    CHECK(locked.check().ok);
}

}  // namespace
}  // namespace edu::stage3
