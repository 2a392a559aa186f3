// stage3_segments/secure_test.cc: proves what is stage 3's own in secure mode: links are stored
// encoded with per-page keys and decode to the same lists, and switching the mode is safe while
// another thread calls through the locked entry. What the contract shows of secure mode (the
// switch keeps every block, a damaged link is caught with one line, a double free is reported)
// is the battery's tests/secure.cc, run on stages 3 and 4 alike.
#include <doctest/doctest.h>

#include <sys/single_threaded.h>

#include <atomic>
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
    battery::check_heap_ok(locked);
}

// [S3.50] The drop-in library copies the thread-safe table into slots of its own
// (contract/preload.cc) and copies it again only after set_option. A mode change made once a
// second thread has existed leaves g_thread_safe, and so the copy, naming the old mode: only its
// locked branch may ever run again. That holds in a fork child too, because glibc never sets
// __libc_single_threaded back to true; the copy then serves the child in the current mode.
TEST_CASE("a copy of the thread-safe table taken after a mode change in a threaded process serves a fork child") {
    std::thread([] {}).join();   // the process has had a second thread: the flag is false for good
    std::string before = descriptor.get_option("secure");
    REQUIRE(descriptor.set_option("secure", before == "on" ? "off" : "on"));
    const Api copy = *descriptor.thread_safe;   // what publish_slots copies after set_option
    battery::ChildOutcome outcome = battery::run_in_child(
        [&copy] {
            battery::child_expect(!__libc_single_threaded,
                                  "the fork child reads __libc_single_threaded true: contract/preload.cc "
                                  "must publish its slots again after a fork");
            std::vector<void*> blocks;
            for (std::size_t size = 1; size < 2000; size += 37) {
                blocks.push_back(copy.malloc(size));
                battery::fill(blocks.back(), size, 0, size);
            }
            for (void* p : blocks) copy.free(p);
            battery::child_expect_heap_ok(copy, "heap check failed in the child");
        },
        10, &descriptor);
    descriptor.set_option("secure", before.c_str());
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

}  // namespace
}  // namespace edu::stage3
