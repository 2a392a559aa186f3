// stage4_threads/abandon_test.cc: proves heaps die with their threads without losing a block: many
// short-lived threads exit with live blocks that others free later; an abandoned segment is
// reclaimed by the first thread that frees into it, its live blocks intact and now freed locally; a
// segment emptied that way goes back to the arena; a thread that exits frees the blocks others left
// on its delayed list, and gives its retired pages back; the segment abandoned last is reclaimed
// first by a thread that needs pages (heap_reclaim saying whether it took one), a retired page in
// it adopted as in use; a thread that allocates again in its own destructors gets a heap again and
// gives it back; a live huge block's reach and commit move with its segment to the heap that
// reclaims it; a record whose thread exited holding it becomes an orphan, a live thread's never;
// and in a child of fork() the other threads' heaps are lost but the survivor's works.
// Internals are read directly (arena bits, owned[], heap records).
#include <doctest/doctest.h>

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/os.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/stage4.h"
#include "stage4_threads/testing.h"
#include "tests/support.h"

namespace edu::stage4 {
namespace {

using testing::api;
using testing::my_heap;
using testing::on_thread;

struct Kept {
    void* ptr;
    uint64_t id;
    std::size_t size;
};

void check_and_free(const std::vector<Kept>& blocks) {
    for (const Kept& b : blocks) {
        REQUIRE(battery::first_mismatch(b.ptr, b.id, b.size) == -1);
        api().free(b.ptr);
    }
}

// Every abandoned segment, taken by the calling thread (what needing pages does, all at once).
void reclaim_everything() { heap_reclaim(my_heap(), ~0u); }

TEST_CASE("a thread that needs pages reclaims the segment abandoned last before older ones") {
    reclaim_everything();
    // Two threads, alive at once so that each takes a fresh segment, keep a block each and
    // exit one after the other: two abandoned segments, the second one abandoned last. Which
    // slot is lower is up to the arena.
    void* first = nullptr;
    void* second = nullptr;
    std::mutex mutex;
    std::condition_variable changed;
    int allocated = 0, may_exit = 0;
    auto body = [&](void** out, int order) {
        *out = api().malloc(100);
        std::unique_lock<std::mutex> lock(mutex);
        ++allocated;
        changed.notify_all();
        changed.wait(lock, [&] { return may_exit >= order; });
    };
    std::thread a(body, &first, 1), b(body, &second, 2);
    {
        std::unique_lock<std::mutex> lock(mutex);
        changed.wait(lock, [&] { return allocated == 2; });
        may_exit = 1;
        changed.notify_all();
    }
    a.join();
    {
        std::lock_guard<std::mutex> lock(mutex);
        may_exit = 2;
        changed.notify_all();
    }
    b.join();
    uint32_t first_slot = arena_slot_of(first), second_slot = arena_slot_of(second);
    REQUIRE(first_slot != second_slot);
    CHECK(abandoned_recent(0) == second_slot);
    CHECK(abandoned_recent(1) == first_slot);
    // A new thread that needs a page of that size reclaims one segment: the newest, whatever
    // the bitmap order.
    bool took_second = false, took_first = true;
    on_thread([&] {
        void* mine = api().malloc(100);
        took_second = my_heap()->owned[second_slot] != 0;
        took_first = my_heap()->owned[first_slot] != 0;
        api().free(mine);
        api().free(second);   // local now
    });
    CHECK(took_second);
    CHECK(!took_first);
    api().free(first);        // still abandoned: a remote free into an ownerless segment
    reclaim_everything();
    CHECK(battery::require_heap_ok(api()).ok);
}

// [S4.27] heap_reclaim's answer is what its callers go on: reclaim_for takes another segment only
// after one was adopted, and under pressure ([S4.69]) heap_relieve tries the allocation again
// only when something was adopted or given back.
TEST_CASE("heap_reclaim says whether it adopted a segment") {
    void* mine = api().malloc(100);                  // this thread's heap is a real one
    reclaim_everything();
    CHECK_FALSE(heap_reclaim(my_heap(), 1));         // nothing is abandoned
    void* kept = nullptr;
    on_thread([&] { kept = api().malloc(100); });    // leaves a segment with a live block
    CHECK(heap_reclaim(my_heap(), 1));               // true: one segment adopted
    CHECK(my_heap()->owned[arena_slot_of(kept)] != 0);
    api().free(kept);
    api().free(mine);
    battery::require_heap_ok(api());
}

TEST_CASE("many short-lived threads exit with live blocks that other threads free later") {
    reclaim_everything();
    Stats before = api().stats();
    std::vector<Kept> kept;
    std::mutex mutex;
    for (int wave = 0; wave < 8; ++wave) {
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t) {
            threads.emplace_back([&, wave, t] {
                battery::Rng rng(static_cast<uint64_t>(wave * 8 + t));
                std::vector<Kept> mine;
                for (int i = 0; i < 400; ++i) {
                    std::size_t size = rng.per_mille(990) ? rng.range(1, 3000) : rng.range(70000, 900000);
                    void* p = api().malloc(size);
                    REQUIRE(p != nullptr);
                    uint64_t id = static_cast<uint64_t>(wave * 8 + t) * 1000 + static_cast<uint64_t>(i);
                    battery::fill(p, id, 0, size);
                    if (rng.per_mille(300)) api().free(p);   // some die at home
                    else mine.push_back(Kept{p, id, size});
                }
                std::lock_guard<std::mutex> lock(mutex);
                kept.insert(kept.end(), mine.begin(), mine.end());
            });
        }
        for (auto& th : threads) th.join();
    }
    CHECK(abandoned_count() > 0);
    CHECK(other_heaps_in_use() == 0);
    CHECK(battery::require_heap_ok(api()).live_blocks == before.live_blocks + kept.size());
    // Half freed by a thread of their own, half by this one; all of them remote frees.
    std::vector<Kept> first_half(kept.begin(), kept.begin() + static_cast<std::ptrdiff_t>(kept.size() / 2));
    std::vector<Kept> second_half(kept.begin() + static_cast<std::ptrdiff_t>(kept.size() / 2), kept.end());
    on_thread([&] { check_and_free(first_half); });
    check_and_free(second_half);
    Stats after = api().stats();
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
    reclaim_everything();
    CHECK(abandoned_count() == 0);
    battery::require_heap_ok(api());
}

TEST_CASE("an abandoned segment is reclaimed by the first thread that frees into it, live blocks intact") {
    reclaim_everything();
    const std::size_t size = 2560;
    std::vector<Kept> kept;
    on_thread([&] {
        for (int i = 0; i < 30; ++i) {
            void* p = api().malloc(size);
            battery::fill(p, static_cast<uint64_t>(i), 0, size);
            kept.push_back(Kept{p, static_cast<uint64_t>(i), size});
        }
    });
    uint32_t slot = arena_slot_of(kept[0].ptr);
    CHECK(abandoned_count() >= 1);
    CHECK((abandoned_word(slot / 64) >> (slot % 64) & 1) == 1);
    CHECK(my_heap()->owned[slot] == 0);
    Page* page = stage4::page_of(kept[0].ptr);
    CHECK(page->heap.load() == nullptr);
    CHECK(testing::delay_state(page) == Delay::never);
    REQUIRE(stage4::page_of(kept[1].ptr) == page);
    uint32_t used = page->used;
    api().free(kept[1].ptr);                         // a remote free into an abandoned page ...
    kept.erase(kept.begin() + 1);
    CHECK((abandoned_word(slot / 64) >> (slot % 64) & 1) == 0);   // ... takes the segment ([S4.47])
    CHECK(page->used == used - 1);
    CHECK(my_heap()->owned[slot] == 1);
    CHECK(page->heap.load() == my_heap());
    CHECK(testing::delay_state(page) != Delay::never);
    CHECK(testing::remote_count(page) == 0);         // collected on adoption
    battery::require_heap_ok(api());
    check_and_free(kept);                            // local frees now
    battery::require_heap_ok(api());
}

// [S4.85] A live huge block's reach and commit leave its heap's totals when its thread exits
// (segment_detach) and join the reclaiming heap's (segment_attach); its free then takes them
// out of the right heap. The checker sums each heap's totals anew.
TEST_CASE("a live huge block abandoned and reclaimed moves its reach and commit to the reclaiming heap") {
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    reclaim_everything();
    Heap* me = my_heap();
    std::size_t reach = me->huge.reach, committed = me->huge.committed;
    void* p = nullptr;
    stage3::HugeTotals theirs;
    on_thread([&] {
        p = api().malloc(20 * kMiB);
        REQUIRE(p != nullptr);
        theirs = my_heap()->huge;
        CHECK(theirs.reach >= 20 * kMiB);
    });
    CHECK(me->huge.reach == reach);
    reclaim_everything();
    CHECK(my_heap()->owned[arena_slot_of(p)] == 1);
    CHECK(me->huge.reach == reach + theirs.reach);
    CHECK(me->huge.committed == committed + theirs.committed);
    battery::require_heap_ok(api());
    api().free(p);
    CHECK(me->huge.reach == reach);
    CHECK(me->huge.committed == committed);
    battery::require_heap_ok(api());
    segment_cache_collect(me, true);
}

TEST_CASE("a retired page allocated from again is adopted as a page in use, not a retiring one") {
    reclaim_everything();
    const std::size_t size = 64;                     // the direct cache's: the fast path serves it
    void* mine = api().malloc(size);                 // this heap's bin has a page of its own
    void* theirs = nullptr;
    uint16_t expire_at_exit = 0;
    on_thread([&] {
        api().free(api().malloc(size));              // the bin's only page retires (S3.41) ...
        theirs = api().malloc(size);                 // ... and the fast path allocates from it
        expire_at_exit = stage4::page_of(theirs)->retire_expire;
    });
    REQUIRE(expire_at_exit != 0);                    // what the abandoned page carries
    reclaim_everything();
    Page* page = stage4::page_of(theirs);
    CHECK(page->heap.load() == my_heap());
    CHECK(page->retire_expire == 0);                 // it is not where collection looks (S3.54)
    battery::require_heap_ok(api());
    api().free(theirs);
    api().free(mine);
    battery::require_heap_ok(api());
}

// [S4.26] step 2 drains the delayed frees: a block another thread freed into a full page of the
// leaving heap is freed into its page before the segment is abandoned, and the record goes back
// to the pool with an empty delayed list (the next thread that takes it would free the blocks
// into segments it does not own).
TEST_CASE("a thread that exits frees the blocks other threads left on its delayed list") {
    reclaim_everything();
    const std::size_t size = 2304;                   // a class no other case here uses
    std::vector<void*> blocks;
    Page* page = nullptr;
    Heap* heap = nullptr;
    testing::ParkedThread owner(
        [&] {
            blocks.push_back(api().malloc(size));
            heap = my_heap();                        // a real heap once it has allocated
            page = stage4::page_of(blocks[0]);
            while (page->queue != kFullQueue) blocks.push_back(api().malloc(size));   // the next malloc moves it
        },
        [] {});
    void* delayed = blocks[0];
    blocks.erase(blocks.begin());
    REQUIRE(testing::delay_state(page) == Delay::to_heap);
    api().free(delayed);                             // a remote free into a full page: its heap's list
    REQUIRE(heap->delayed_free.load(std::memory_order_acquire) == delayed);
    owner.release();                                 // the owner exits without another malloc
    CHECK(heap->delayed_free.load(std::memory_order_acquire) == nullptr);   // drained when it left
    uint32_t slot = arena_slot_of(segment_of(page));
    REQUIRE(segment_borrow(slot));
    int on_local = list_find(page, page->local_free, static_cast<Block*>(delayed));
    segment_unborrow(slot);
    CHECK(on_local == 1);                            // freed into its page, which the segment keeps
    battery::require_heap_ok(api());
    for (void* p : blocks) api().free(p);
    battery::require_heap_ok(api());
}

// [S4.26] step 2: a leaving heap gives back every empty page, retired ones too, so a segment it
// abandons holds only pages with live blocks; one whose pages are all empty is abandoned empty
// (the next heap takes it as a cached segment, and [S4.69] can give it back under pressure).
TEST_CASE("a thread's retired pages go back to their segment when it exits") {
    reclaim_everything();
    Page* page = nullptr;
    uint16_t retiring = 0;
    on_thread([&] {
        void* p = api().malloc(2640);                // a class no other case here uses
        page = stage4::page_of(p);
        api().free(p);                               // the bin's only page retires in place (S3.41)
        retiring = page->retire_expire;
    });
    REQUIRE(retiring != 0);
    uint32_t slot = arena_slot_of(segment_of(page));
    REQUIRE(segment_borrow(slot));                   // abandoned: ours to read for a moment
    Segment* s = arena_segment(slot);
    uint32_t used_pages = s->used_pages;
    uint8_t in_use = page->in_use;
    segment_unborrow(slot);
    CHECK(in_use == 0);                              // a leaving heap frees every empty page, retired or not
    CHECK(used_pages == 0);
    battery::require_heap_ok(api());
}

TEST_CASE("a segment emptied by another thread's frees goes back to the arena") {
    reclaim_everything();
    std::vector<void*> blocks;
    on_thread([&] {
        for (int i = 0; i < 200; ++i) blocks.push_back(api().malloc(700));
    });
    uint32_t slot = arena_slot_of(blocks[0]);
    REQUIRE(arena_blocks_at(slot) == 1);
    uint64_t footprint = testing::footprint();
    for (void* p : blocks) api().free(p);            // the first takes the segment ([S4.47])
    Segment* s = arena_segment(slot);
    CHECK(s->used_pages == 0);                       // every page freed ...
    CHECK(s->cached == 1);                           // ... and the segment in this heap's cache
    heap_collect(my_heap(), true);                   // which gives it back when asked
    CHECK(arena_blocks_at(slot) == 0);               // unpublished: the slots are free again
    CHECK(!arena_claimed(slot, 1));
    CHECK(testing::footprint() < footprint);
    battery::require_heap_ok(api());
}

// A thread_local object whose destructor allocates: it runs before the pthread key's
// destructor, and again if the thread allocates after its heap was abandoned.
struct AllocatesAtExit {
    void* p = nullptr;
    ~AllocatesAtExit() {
        api().free(p);
        void* q = api().malloc(123);
        api().free(q);
    }
};

TEST_CASE("a thread that allocates in its thread_local destructors still gives its heap back") {
    Stats before = api().stats();
    for (int i = 0; i < 20; ++i) {
        on_thread([] {
            static thread_local AllocatesAtExit guard;
            guard.p = api().malloc(77);
        });
    }
    CHECK(other_heaps_in_use() == 0);
    Stats after = api().stats();
    CHECK(after.mallocs == before.mallocs + 40);
    CHECK(after.live_blocks == before.live_blocks);
    battery::require_heap_ok(api());
}

// [S4.97] A thread whose last free comes after its exit hook (a key destructor of its own that
// runs after stage 4's) frees a large buffer into a borrowed record, which it orphans: the
// record kept the huge segment in its cache, committed, for whichever thread took the orphan
// next, where a heap that freed it before its exit hook sheds it ([S4.93]). Sixteen threads that
// hold their heaps at once, then exit, each freeing 8 MiB it wrote: the orphans they left held
// 16 huge segments, about 134 MiB of footprint, until the checker or pressure abandoned them.
// The footprint is read before anything abandons orphans (api().stats() and the checker do).
namespace {
// Runs `body` on `n` threads that then wait until every one has run it, so all hold their heaps
// at once, and joins them.
void at_once(int n, void (*body)()) {
    std::mutex mutex;
    std::condition_variable cv;
    int ready = 0;
    std::vector<std::thread> threads;
    for (int t = 0; t < n; ++t) {
        threads.emplace_back([&] {
            body();
            std::unique_lock<std::mutex> hold(mutex);
            if (++ready == n) cv.notify_all();
            cv.wait(hold, [&] { return ready == n; });
        });
    }
    for (std::thread& t : threads) t.join();
}
pthread_key_t g_late_free_key;
void late_free(void* p) { api().free(p); }
}  // namespace

TEST_CASE("a large buffer freed after the exit hook leaves no committed cache in an orphan") {
    api().free(api().malloc(1));   // stage 4's key first: late_free runs after its exit hook
    REQUIRE(pthread_key_create(&g_late_free_key, late_free) == 0);
    constexpr int kThreads = 16;
    constexpr std::size_t kLarge = std::size_t{8} << 20;
    uint64_t before = testing::footprint();
    at_once(kThreads, [] {
        auto* p = static_cast<char*>(api().malloc(kLarge));
        REQUIRE(p != nullptr);
        std::memset(p, 1, kLarge);
        pthread_setspecific(g_late_free_key, p);
    });
    uint64_t after = testing::footprint();
    pthread_key_delete(g_late_free_key);
    INFO("footprint before " << before << " B, after " << after << " B");
    CHECK(after <= before + (std::uint64_t{4} << 20));   // one cached huge segment is 8 MiB
    battery::require_heap_ok(api());
}

// [S4.97] A thread whose key destructor (after stage 4's exit hook) allocates and frees many
// small blocks: each malloc took the thread's orphan back, but each free, made with no heap,
// pushed its block on its page's remote list, which nobody collects while the record stays
// orphaned, so every page the destructor filled stayed committed. Threads one after another,
// each filling 32 MiB in its destructor and freeing it there: the last one's orphan kept them,
// a footprint of about 37 MiB. A free after the exit hook now takes the thread's orphan back
// first and frees its own block locally. (Threads that run at once may still take each other's
// orphans, and then free remotely: the chapter, [S4.97].)
namespace {
pthread_key_t g_late_churn_key;
constexpr int kLateBlocks = 32 * 1024;
// Frees `value`, then allocates `count` blocks of about 1 KiB, writes them and frees them all.
void fill_and_free(void* value, int count) {
    api().free(value);
    std::vector<void*> blocks;   // its buffer is a borrowed call's too
    blocks.reserve(static_cast<std::size_t>(count));
    for (int i = 0; i < count; ++i) {
        void* p = api().malloc(1000 + (i % 7) * 16);
        REQUIRE(p != nullptr);
        std::memset(p, 1, 1000);
        blocks.push_back(p);
    }
    for (void* p : blocks) api().free(p);
}
void late_churn(void* value) { fill_and_free(value, kLateBlocks); }
}  // namespace

TEST_CASE("small blocks allocated and freed after the exit hook leave no pages behind") {
    api().free(api().malloc(1));   // stage 4's key first: late_churn runs after its exit hook
    REQUIRE(pthread_key_create(&g_late_churn_key, late_churn) == 0);
    uint64_t before = testing::footprint();
    for (int t = 0; t < 4; ++t) on_thread([] { pthread_setspecific(g_late_churn_key, api().malloc(20)); });
    uint64_t after = testing::footprint();
    pthread_key_delete(g_late_churn_key);
    INFO("footprint before " << before << " B, after " << after << " B");
    CHECK(after <= before + (std::uint64_t{16} << 20));
    battery::require_heap_ok(api());
}

// [S4.105] [S4.106] Threads that run at once, each filling and freeing 8 MiB of small blocks in a
// key destructor after the exit hook: each orphan kept the pages its last frees emptied, dirty,
// waiting for a purge delay its clock, standing still, never reached (about a segment each: 16
// threads left 25.6 to 70.3 MB). An orphaning now purges once the pages its calls left dirty
// pass kOrphanDirtyBytes; with that alone, 3.0 to 24 MiB from run to run, for the threads took
// each other's orphans and freed their own blocks remotely into them; a borrowed call now
// prefers a free record to another's orphan: 8,802,304 bytes in every run. And the price of the
// rule: 100 threads, one after another, each making 200 free(malloc(64)) in its destructor,
// empty their page at every free; purging every orphan (heap_collect(heap, true)) made an
// madvise of each free, 20,000 here (none now). The footprint is read before anything abandons
// the orphans (api().stats() and the checker do).
namespace {
pthread_key_t g_late_fill_key;
constexpr int kFillBlocks = 8 * 1024;
void late_fill(void* value) { fill_and_free(value, kFillBlocks); }
pthread_key_t g_late_pairs_key;
void late_pairs(void* value) {
    api().free(value);
    for (int i = 0; i < 200; ++i) api().free(api().malloc(64));
}
uint64_t madvise_calls() { return os_counters().calls[static_cast<unsigned>(OsCall::madvise)].load(); }
}  // namespace

TEST_CASE("orphans of threads that ran at once keep few dirty pages, and pairs after the hook purge nothing") {
    api().free(api().malloc(1));   // stage 4's key first: the destructors run after its exit hook
    REQUIRE(pthread_key_create(&g_late_fill_key, late_fill) == 0);
    constexpr int kThreads = 16;
    uint64_t before = testing::footprint();
    at_once(kThreads, [] { pthread_setspecific(g_late_fill_key, api().malloc(20)); });
    uint64_t after = testing::footprint();
    pthread_key_delete(g_late_fill_key);
    INFO("footprint before " << before << " B, after " << after << " B");
    // Each orphan may keep less than kOrphanDirtyBytes dirty, and its retired pages (one per bin
    // it used, 7 small pages here) and segment metadata.
    CHECK(after <= before + kThreads * (kOrphanDirtyBytes + (std::uint64_t{8} << kSmallPageShift)));

    REQUIRE(pthread_key_create(&g_late_pairs_key, late_pairs) == 0);
    uint64_t madvise_before = madvise_calls();
    for (int t = 0; t < 100; ++t) on_thread([] { pthread_setspecific(g_late_pairs_key, api().malloc(20)); });
    uint64_t madvises = madvise_calls() - madvise_before;
    pthread_key_delete(g_late_pairs_key);
    INFO("madvise calls for 100 threads of 200 pairs after the hook: " << madvises);
    CHECK(madvises <= 100);
    battery::require_heap_ok(api());
}

TEST_CASE("heap records are reused by later threads, so the registry stays small") {
    for (int i = 0; i < 50; ++i) on_thread([] { api().free(api().malloc(10)); });
    std::size_t records = 0;
    for (Heap* h = first_record(); h; h = h->next_record) ++records;
    CHECK(records < 20);
}

// [S4.113] A thread whose first call comes in the last round of key destructors exits holding a
// keyed record that no round gives back; forget_exit_hook makes the same exit without relying on
// glibc's rounds (which ThreadSanitizer's runtime does not survive, google/sanitizers#943). The
// walk makes that record an orphan, with its live block, which another thread frees remotely,
// and leaves alone the record of a thread that is still alive and the caller's own.
TEST_CASE("a record whose thread exited holding it becomes an orphan; a live thread's does not") {
    Heap* alive_heap = nullptr;
    testing::ParkedThread alive([&] {
        api().free(api().malloc(100));
        alive_heap = my_heap();
    }, [] {});
    api().free(api().malloc(100));
    Heap* gone = nullptr;
    void* left = nullptr;
    on_thread([&] {
        left = api().malloc(300);
        std::memset(left, 7, 300);
        gone = my_heap();
        forget_exit_hook();
    });
    REQUIRE(gone->state.load() == HeapState::in_use);   // nothing gave it back
    CHECK(orphan_dead_records() >= 1);
    CHECK(gone->state.load() == HeapState::orphaned);
    CHECK(alive_heap->state.load() == HeapState::in_use);
    CHECK(my_heap()->state.load() == HeapState::in_use);
    CHECK(orphan_dead_records() == 0);                  // nothing more to find
    CHECK(static_cast<unsigned char*>(left)[299] == 7);
    api().free(left);
    battery::require_heap_ok(api());
    alive.release();
}

// [S4.114] Without the walk each such thread keeps a record: 300 threads, one at a time, would
// leave 300. heap_acquire walks when it would map a record and the pool has reached twice the
// records held at the last walk (earlier cases may have left that mark high), so the pool grows
// to that mark at most, and then not at all.
namespace {
std::size_t record_count() {
    std::size_t n = 0;
    for (Heap* h = first_record(); h; h = h->next_record) ++n;
    return n;
}
}  // namespace

TEST_CASE("threads that exit holding their records leave the registry small") {
    std::size_t before = record_count(), mark = dead_scan_threshold(), middle = 0;
    for (int t = 0; t < 300; ++t) {
        on_thread([] {
            api().free(api().malloc(64));
            forget_exit_hook();
        });
        if (t == 99) middle = record_count();
    }
    std::size_t after = record_count();
    INFO("records before " << before << ", after 100 threads " << middle << ", after 300 " << after
                           << "; the walk's mark " << mark << " before, " << dead_scan_threshold() << " after");
    CHECK(after <= std::max(before, mark) + 4);
    CHECK(after <= middle + 2);
    battery::require_heap_ok(api());
}

// A thread keeps its heap, blocks live, while this one forks: in the child that heap is lost
// (its segments neither read nor reclaimed), this thread's heap works, and so does the checker.
TEST_CASE("in a child of fork() the other threads' heaps are lost and the survivor's works") {
    void* theirs = nullptr;
    testing::ParkedThread other([&] { theirs = api().malloc(500); }, [&] { api().free(theirs); });
    void* mine = api().malloc(500);
    // A page of ours left `pushing` by a thread that does not exist in the child.
    Page* page = stage4::page_of(mine);
    uintptr_t word = page->xthread_free.load();
    page->xthread_free.store((word & ~kDelayMask) | static_cast<uintptr_t>(Delay::pushing));
    battery::ChildOutcome outcome = battery::run_in_child(
        [&] {
            battery::child_expect(testing::delay_state(page) == Delay::to_page, "pushing state survived the fork");
            bool lost = false;
            for (Heap* h = first_record(); h; h = h->next_record) lost |= h->state.load() == HeapState::lost;
            battery::child_expect(lost, "the other thread's heap is not marked lost");
            api().free(mine);
            void* p = api().malloc(3000);
            battery::child_expect(p != nullptr, "malloc in the child failed");
            api().free(theirs);                       // a remote free into a lost heap: harmless
#if !defined(__SANITIZE_THREAD__)   // ThreadSanitizer refuses threads after a multi-threaded fork
            // [S4.113] In the child this thread has another tid: a walk made by a new thread
            // must not find the parent's tid gone and take this thread's record.
            std::thread([] { orphan_dead_records(); }).join();
            battery::child_expect(my_heap()->state.load() == HeapState::in_use, "the survivor lost its record");
#endif
            api().free(p);
            battery::child_expect(api().check().ok, "heap check failed in the child");
        },
        10, &descriptor);
    page->xthread_free.store(word);
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
    other.release();
    api().free(mine);
    battery::require_heap_ok(api());
}

}  // namespace
}  // namespace edu::stage4
