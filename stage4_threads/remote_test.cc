// stage4_threads/remote_test.cc: proves frees that cross threads keep every promise: a block
// freed by another thread waits on its page's xthread_free, still counted as used, until the
// owner collects it; the first remote free into a full page goes to the owner's delayed list
// and brings the page out of the full queue, and the owner frees such a block only once its
// pusher has let go of the page (`pushing`); a large block freed remotely gives its segment
// back at the owner's next generic call; producers and consumers trading half a million blocks
// end with nothing live and the checker content; bad remote frees die with one line (a double free also when both frees went to the delayed list), a pointer
// far into a huge block named for what it is. Internals are read directly; each case uses block
// sizes of its own.
#include <doctest/doctest.h>

#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "stage3_segments/bins.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/stage4.h"
#include "stage4_threads/testing.h"
#include "tests/support.h"

namespace edu::stage4 {
namespace {

using testing::api;
using testing::delay_state;
using testing::delayed_count;
using testing::my_heap;
using testing::on_thread;
using testing::remote_count;

// Allocates blocks of `size` until the page of the first one moves to the full queue.
std::vector<void*> fill_a_page(std::size_t size, Page** page_out) {
    std::vector<void*> blocks{api().malloc(size)};
    Page* page = stage4::page_of(blocks[0]);
    while (page->queue != kFullQueue) {
        void* p = api().malloc(size);
        REQUIRE(p != nullptr);
        blocks.push_back(p);
    }
    *page_out = page;
    return blocks;
}

void free_all(std::vector<void*>& blocks) {
    for (void* p : blocks) api().free(p);
    blocks.clear();
}

TEST_CASE("a block freed by another thread waits on xthread_free, still used, until collected") {
    std::vector<void*> mine;
    for (int i = 0; i < 20; ++i) mine.push_back(api().malloc(48));
    Page* page = stage4::page_of(mine[0]);
    for (void* p : mine) REQUIRE(stage4::page_of(p) == page);
    uint32_t used = page->used;
    std::size_t before = remote_count(page);
    on_thread([&] {
        for (int i = 0; i < 10; ++i) api().free(mine[static_cast<std::size_t>(i)]);
    });
    CHECK(remote_count(page) == before + 10);
    CHECK(page->used == used);                       // the owner has not seen them yet
    battery::require_heap_ok(api());                 // and the checker does not count them live
    CHECK(page_collect_remote(page) == before + 10);
    CHECK(page->used == used - before - 10);
    CHECK(remote_count(page) == 0);
    for (std::size_t i = 10; i < mine.size(); ++i) api().free(mine[i]);
    battery::require_heap_ok(api());
}

// [S4.56] Secure mode covers the shared list: another thread's push encodes its link with the
// page's keys, the owner decodes it when it collects, and a link damaged while the block waits
// there is caught at the collect with one line.
TEST_CASE("in secure mode remote frees are pushed with encoded links, and a damaged one is caught") {
    REQUIRE(descriptor.set_option("secure", "on"));
    std::vector<void*> mine;
    for (int i = 0; i < 20; ++i) mine.push_back(api().malloc(80));
    Page* page = stage4::page_of(mine[0]);
    for (void* p : mine) REQUIRE(stage4::page_of(p) == page);
    REQUIRE((page->keys[0] | page->keys[1]) != 0);
    page_collect_remote(page);
    on_thread([&] {
        for (int i = 0; i < 10; ++i) api().free(mine[static_cast<std::size_t>(i)]);
    });
    const Block* head = block_of(page->xthread_free.load(std::memory_order_acquire));
    REQUIRE(head == mine[9]);
    CHECK(head->link != reinterpret_cast<uintptr_t>(mine[8]));   // stored encoded...
    CHECK(decode(page, head->link) == reinterpret_cast<uintptr_t>(mine[8]));   // ...decoded by the owner
    CHECK(remote_count(page) == 10);
    CHECK(page_collect_remote(page) == 10);
    for (std::size_t i = 10; i < mine.size(); ++i) api().free(mine[i]);
    battery::require_heap_ok(api());
    REQUIRE(descriptor.set_option("secure", "off"));

    battery::ChildOutcome out = battery::run_in_child([] {
        descriptor.set_option("secure", "on");
        void* a = api().malloc(80);
        void* b = api().malloc(80);
        Page* p = stage4::page_of(a);
        page_collect_remote(p);
        on_thread([&] {
            api().free(a);
            api().free(b);   // xthread_free: b -> a
        });
        std::memset(b, 0x41, 8);   // a write after free into b's link
        page_collect_remote(p);
        battery::child_expect(false, "the damaged link went unnoticed");
    });
    INFO(out.describe());
    CHECK(out.signal == SIGABRT);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find("free list corrupted") != std::string::npos);
}

// [S4.56] Keys are changed only by their owner: while another thread's heap is in use the
// switch is refused and changes nothing; once that thread has exited it goes through.
TEST_CASE("secure mode cannot be switched while another thread's heap is in use") {
    void* p = nullptr;
    testing::ParkedThread other([&] { p = api().malloc(64); }, [&] { api().free(p); });
    CHECK_FALSE(descriptor.set_option("secure", "on"));
    CHECK(std::string(descriptor.get_option("secure")) == "off");
    other.release();
    CHECK(descriptor.set_option("secure", "on"));
    battery::require_heap_ok(api());
    CHECK(descriptor.set_option("secure", "off"));
}

TEST_CASE("the first remote free into a full page goes to the owner's delayed list") {
    const std::size_t size = 3584;
    Page* page = nullptr;
    std::vector<void*> blocks = fill_a_page(size, &page);
    CHECK(delay_state(page) == Delay::to_heap);
    std::vector<void*> in_page;
    for (void* p : blocks)
        if (stage4::page_of(p) == page) in_page.push_back(p);
    REQUIRE(in_page.size() == page->capacity);
    Heap* heap = my_heap();
    REQUIRE(delayed_count(heap) == 0);
    on_thread([&] { api().free(in_page[3]); });
    CHECK(delayed_count(heap) == 1);                 // on the heap, not on the page
    CHECK(remote_count(page) == 0);
    CHECK(delay_state(page) == Delay::to_page);      // the next one goes to the page again
    CHECK(page->queue == kFullQueue);                // until the owner's next generic call
    battery::require_heap_ok(api());
    api().free(api().malloc(100000));                // any generic call will do
    CHECK(delayed_count(heap) == 0);
    CHECK(page->queue == stage3::bin_of(size));
    CHECK(page->used == page->capacity - 1);
    on_thread([&] { api().free(in_page[4]); });
    CHECK(remote_count(page) == 1);
    CHECK(delayed_count(heap) == 0);
    for (void* p : blocks)
        if (p != in_page[3] && p != in_page[4]) api().free(p);
    battery::require_heap_ok(api());
}

// [S4.22] `pushing` is a promise: from a remote free's first CAS on a full page (to_heap ->
// pushing) to its last (pushing -> to_page) it writes to the owner's heap and the page, so the
// owner may free no block it took from its delayed list before the state has moved on. Here the
// pusher stops inside `pushing`, as one preempted between its CASes would, with a large block,
// whose free gives its segment back: draining without waiting gave the segment back under it.
TEST_CASE("the owner frees a delayed block only once its pusher has let go of the page") {
    battery::ChildOutcome out = battery::run_in_child([] {
        void* big = api().malloc(700 * 1024);   // a one-block page: born to_heap
        Page* page = stage4::page_of(big);
        Heap* heap = my_heap();
        std::atomic<bool> pushed{false}, let_go{false}, drained{false};
        std::thread pusher([&] {   // free_delayed's steps, stopping in `pushing` a while
            uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
            uintptr_t held = (word & ~kDelayMask) | static_cast<uintptr_t>(Delay::pushing);
            bool took = delay_of(word) == Delay::to_heap &&
                        page->xthread_free.compare_exchange_strong(word, held, std::memory_order_acq_rel);
            auto* b = static_cast<Block*>(big);
            b->mark = freed_mark(b);
            b->link = encode(page, 0);
            heap->delayed_free.store(b, std::memory_order_release);
            pushed.store(true, std::memory_order_release);
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            if (!took || drained.load(std::memory_order_acquire)) return;   // the page may be gone
            let_go.store(true, std::memory_order_relaxed);
            page->xthread_free.store(word & ~kDelayMask, std::memory_order_release);   // to_page
        });
        while (!pushed.load(std::memory_order_acquire)) std::this_thread::yield();
        heap_delayed_free(heap);
        drained.store(true, std::memory_order_release);
        bool waited = let_go.load(std::memory_order_relaxed);
        pusher.join();
        battery::child_expect(waited, "the delayed block was freed while its pusher still held `pushing`");
        battery::child_expect(page->in_use == 0, "the large block's page was not given back");
    });
    INFO(out.describe());
    CHECK(out.exited);
    CHECK(out.exit_code == 0);
}

TEST_CASE("a large block freed by another thread gives its segment back at the next generic call") {
    void* big = api().malloc(1024 * 1024);
    REQUIRE(big != nullptr);
    Page* page = stage4::page_of(big);
    CHECK(delay_state(page) == Delay::to_heap);
    on_thread([&] { api().free(big); });
    CHECK(delayed_count(my_heap()) == 1);
    CHECK(page->in_use == 1);
    void* small = api().malloc(5000);                // generic: the direct cache stops at 1 KiB
    CHECK(delayed_count(my_heap()) == 0);
    CHECK(page->in_use == 0);
    api().free(small);
    battery::require_heap_ok(api());
}

TEST_CASE("frees count on the thread that frees, and the sums over threads balance") {
    Stats before = api().stats();
    std::vector<void*> blocks;
    on_thread([&] {
        for (int i = 0; i < 300; ++i) blocks.push_back(api().malloc(static_cast<std::size_t>(20 + i)));
    });
    Stats mid = api().stats();
    CHECK(mid.mallocs == before.mallocs + 300);
    CHECK(mid.live_blocks == before.live_blocks + 300);
    on_thread([&] { free_all(blocks); });
    Stats after = api().stats();
    CHECK(after.frees == before.frees + 300);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
    heap_reclaim(my_heap(), ~0u);                    // the producer's segments, now empty
    battery::require_heap_ok(api());
}

// Two producers allocate and fill blocks and hand them over in batches; two consumers check
// and free them. Producers exit while their blocks are still being freed, so most remote frees
// land in abandoned segments.
TEST_CASE("producers and consumers trading half a million blocks end with nothing live") {
    constexpr int kPerProducer = 250000;
    constexpr std::size_t kBatch = 64;
    Stats before = api().stats();
    std::mutex mutex;
    std::condition_variable ready;
    std::deque<std::vector<std::pair<void*, uint64_t>>> queue;
    int producers_left = 2;
    std::atomic<int> damaged{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&, t] {
            battery::Rng rng(static_cast<uint64_t>(t) + 500);
            std::vector<std::pair<void*, uint64_t>> batch;
            for (int i = 0; i < kPerProducer; ++i) {
                std::size_t size = rng.per_mille(995) ? rng.range(1, 2048) : rng.range(64 * 1024, 300 * 1024);
                void* p = api().malloc(size);
                if (!p) {
                    damaged.fetch_add(1);
                    break;
                }
                uint64_t id = (static_cast<uint64_t>(t) << 40) | static_cast<uint64_t>(i);
                battery::fill(p, id, 0, size < 64 ? size : 64);
                batch.emplace_back(p, id | (uint64_t{size < 64 ? size : 64} << 48));
                if (batch.size() == kBatch) {
                    std::lock_guard<std::mutex> lock(mutex);
                    queue.push_back(std::move(batch));
                    batch.clear();
                    ready.notify_one();
                }
            }
            std::lock_guard<std::mutex> lock(mutex);
            if (!batch.empty()) queue.push_back(std::move(batch));
            --producers_left;
            ready.notify_all();
        });
    }
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&] {
            for (;;) {
                std::vector<std::pair<void*, uint64_t>> batch;
                {
                    std::unique_lock<std::mutex> lock(mutex);
                    ready.wait(lock, [&] { return !queue.empty() || producers_left == 0; });
                    if (queue.empty()) return;
                    batch = std::move(queue.front());
                    queue.pop_front();
                }
                for (auto [p, tag] : batch) {
                    uint64_t id = tag & ((uint64_t{1} << 48) - 1);
                    if (battery::first_mismatch(p, id, tag >> 48) != -1) damaged.fetch_add(1);
                    api().free(p);
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(damaged.load() == 0);
    Stats after = api().stats();
    CHECK(after.mallocs == before.mallocs + 2 * kPerProducer);
    CHECK(after.frees == before.frees + 2 * kPerProducer);
    CHECK(after.live_blocks == before.live_blocks);
    battery::require_heap_ok(api());
    heap_reclaim(my_heap(), ~0u);                    // what the producers left: all empty now
    CHECK(abandoned_count() == 0);
    CHECK(battery::require_heap_ok(api()).live_blocks == before.live_blocks);
    heap_collect(my_heap(), true);                   // the cache and dirty pages go back too
    CHECK(testing::footprint() <= before.footprint + 1024 * 1024);
}

// Runs `body` in a child and requires the one-line abort naming stage 4, free and `ptr`.
void require_dies_naming(const void* ptr, const char* what, const std::function<void()>& body) {
    battery::require_one_line_abort(kStageName, "free", ptr, {what}, body);
}

// [S4.46] The second remote free only suspects; the owner's collect confirms and dies.
TEST_CASE("a block freed twice by other threads aborts with one line when its owner collects") {
    void* p = api().malloc(64);
    void* keep = api().malloc(64);   // the page stays in use
    Page* page = stage4::page_of(p);
    require_dies_naming(p, "double free", [p, page] {
        on_thread([p] { api().free(p); });
        on_thread([p] { api().free(p); });
        page_collect_remote(page);
    });
    require_dies_naming(p, "double free", [p, page] {   // collected in between: found on free
        on_thread([p] { api().free(p); });
        page_collect_remote(page);
        on_thread([p] { api().free(p); });
        page_collect_remote(page);
    });
    api().free(p);
    api().free(keep);
}

TEST_CASE("a large block freed twice by other threads aborts with one line at the owner's next malloc") {
    void* p = api().malloc(600000);
    require_dies_naming(p, "double free", [p] {
        on_thread([p] { api().free(p); });   // to the owner's delayed list
        on_thread([p] { api().free(p); });   // on the page's xthread_free, suspect
        api().free(api().malloc(100));       // takes the delayed list, collects, confirms
    });
    api().free(p);
}

// [S4.46] on the delayed list: a block freed twice by other threads into a page that went full
// again in between is pushed on the owner's delayed list twice, the second time with the suspect
// mark and linked to itself. Only the drain's own confirmation of the block (the rest of the
// batch holds it) sees the double free; without it the block was freed locally twice.
TEST_CASE("a block freed twice by other threads onto the owner's delayed list aborts with one line when it drains") {
    const std::size_t size = 3328;   // a class no other case here uses
    Page* page = nullptr;
    std::vector<void*> blocks = fill_a_page(size, &page);
    void* p = nullptr;
    for (void* b : blocks)
        if (stage4::page_of(b) == page) p = b;
    REQUIRE(p != nullptr);
    require_dies_naming(p, "double free", [p, page] {
        on_thread([p] { api().free(p); });                    // to the delayed list: to_page again
        page_set_delay(page, Delay::to_heap, false);          // full again, as page_to_full would
        on_thread([p] { api().free(p); });                    // suspect, and on the delayed list again
        REQUIRE(delay_state(page) == Delay::to_page);
        heap_delayed_free(my_heap());
    });
    free_all(blocks);
}

// [S4.48] Only a program that knew the key could write the mark; this test knows it. The
// remote free suspects the block, and the owner, finding it on none of its lists, frees it.
TEST_CASE("a live block that holds its own freed mark, freed by another thread, is confirmed live and freed") {
    const std::size_t size = 1776;   // a class no other case here uses
    auto* p = static_cast<uint64_t*>(api().malloc(size));
    void* keep = api().malloc(size);
    Page* page = stage4::page_of(p);
    uint32_t used = page->used;
    p[1] = freed_mark(p);
    on_thread([p] { api().free(p); });
    CHECK(static_cast<Block*>(static_cast<void*>(p))->mark == suspect_mark(p));
    battery::require_heap_ok(api());   // a suspect on xthread_free is not an error yet
    CHECK(page_collect_remote(page) == 1);
    CHECK(page->used == used - 1);
    CHECK(static_cast<Block*>(static_cast<void*>(p))->mark == freed_mark(p));
    battery::require_heap_ok(api());
    CHECK(api().malloc(size) == p);   // handed out again, once
    api().free(p);
    api().free(keep);
}

TEST_CASE("an interior pointer freed by another thread aborts with one line") {
    auto* p = static_cast<char*>(api().malloc(256));
    std::memset(p, 0, 256);
    require_dies_naming(p + 16, "not the start of a block", [p] { on_thread([p] { api().free(p + 16); }); });
    api().free(p);
}

// [S4.72] A huge segment publishes its first slot only (S4.12), so a pointer 5 MiB into a 16 MiB
// block finds no marker in its own slot; the cold path finds the segment below it and names the
// pointer as stage 3 does (S3.66), from the owner's thread or another, in free or realloc; once
// the block is freed its segment waits in the owner's cache, and the line says so.
TEST_CASE("a pointer past a huge block's first 4 MiB is named an interior pointer, on any thread") {
    auto* huge = static_cast<char*>(api().malloc(16 << 20));
    REQUIRE(huge != nullptr);
    char* far = huge + (5 << 20);
    REQUIRE(arena_blocks_at(arena_slot_of(far)) == 0);   // the case the markers alone call foreign
    const char* words = "interior pointer, 5242880 bytes into the huge block";
    require_dies_naming(far, words, [far] { api().free(far); });
    require_dies_naming(far, words, [far] { on_thread([far] { api().free(far); }); });
    battery::require_one_line_abort(kStageName, "realloc", far, {words}, [far] {
        on_thread([far] { api().realloc(far, 100); });
    });
    char local = 0;
    require_dies_naming(&local, "not from this heap", [&local] { api().free(&local); });
    api().free(huge);
    require_dies_naming(far, "it lies in a free huge segment", [far] { api().free(far); });
}

TEST_CASE("a never-allocated block freed by another thread is caught when the owner collects") {
    const std::size_t size = 1536;   // a class no other case here uses
    void* p = api().malloc(size);
    Page* page = stage4::page_of(p);
    REQUIRE(page->carved < page->capacity);
    void* uncarved = reinterpret_cast<void*>(page->start + uintptr_t{page->carved} * page->block_size);
    require_dies_naming(uncarved, "never allocated", [uncarved, page] {
        on_thread([uncarved] { api().free(uncarved); });   // passes the checks a remote free can make
        page_collect_remote(page);                         // the owner's check does not
    });
    api().free(p);
}

}  // namespace
}  // namespace edu::stage4
