// stage4_threads/arena_test.cc: proves the arena's bitmap hands every bit to at most one
// claimer: runs are found inside a word and across words, claims fail cleanly when no run is
// free, and under contention (threads claiming and releasing runs of random lengths on one
// small bitmap) no bit is ever held by two threads, which a per-bit owner array checks with an
// atomic exchange on every claim. Then the real arena: threads taking segments at once, and
// the heap's cache of empty segments counted in system calls, and the checker's page geometry.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "contract/mapped.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/os.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/testing.h"
#include "tests/support.h"

namespace edu::stage4 {
namespace {

using testing::api;

// In a child (battery::run_in_child), on a thread of this stage: a first block, so the heap (and
// the arena) exist before the limit, then `resource` limited to `bytes`. The first block, to free.
void* heap_then_limit(int resource, rlim_t bytes) {
    void* first = api().malloc(100);
    battery::child_expect(first != nullptr, "no heap");
    rlimit limit{bytes, RLIM_INFINITY};
    battery::child_expect(setrlimit(resource, &limit) == 0, "setrlimit failed");
    return first;
}

// A block of `bytes`, written whole; `refused` fails the child when malloc says no.
void* written_block(std::size_t bytes, const char* refused) {
    void* p = api().malloc(bytes);
    battery::child_expect(p != nullptr, refused);
    std::memset(p, 1, bytes);
    return p;
}

// In a child, on a thread of this stage: a first block, then the largest address-space limit
// short of none, so that the arena is lazy ([S4.68]) and nothing runs out. The block, to free.
void* lazy_heap() {
    void* first = heap_then_limit(RLIMIT_AS, RLIM_INFINITY - 1);
    battery::child_expect(arena_limited() && arena_lazy(), "the arena is not lazy");
    return first;
}

// Runs `body` in a child, on a thread of this stage, and requires the child to exit with 0.
void on_thread_in_child(const std::function<void()>& body) {
    battery::ChildOutcome outcome = battery::run_in_child([&body] { testing::on_thread(body); });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

struct Bitmap {
    std::atomic<uint64_t> words[16] = {};   // 1024 bits
    uint64_t word(unsigned i) const { return words[i].load(); }
    bool all_clear() const {
        for (const auto& w : words)
            if (w.load() != 0) return false;
        return true;
    }
};

TEST_CASE("a run of up to 64 bits is claimed inside one word, lowest first") {
    Bitmap b;
    CHECK(bitmap_claim(b.words, 1024, 1, 0) == 0);
    CHECK(bitmap_claim(b.words, 1024, 3, 0) == 1);
    CHECK(b.word(0) == 0xf);
    b.words[0].store(0xffff'ffff'ffff'ff0fULL);   // a hole of 4 bits at 4..7
    CHECK(bitmap_claim(b.words, 1024, 4, 0) == 4);
    CHECK(bitmap_claim(b.words, 1024, 5, 0) == 64);   // no room left in word 0
    CHECK(bitmap_claim(b.words, 1024, 64, 0) == 128);   // a whole word
    CHECK(b.word(2) == ~uint64_t{0});
}

TEST_CASE("a run longer than a word starts at a word boundary and spans the next words") {
    Bitmap b;
    b.words[0].store(1);
    int64_t first = bitmap_claim(b.words, 1024, 130, 0);
    CHECK(first == 64);
    CHECK(b.word(1) == ~uint64_t{0});
    CHECK(b.word(2) == ~uint64_t{0});
    CHECK(b.word(3) == 3);
    bitmap_release(b.words, 64, 130);
    CHECK(b.word(1) == 0);
    CHECK(b.word(3) == 0);
    // A later word partly taken: the words claimed before it are given back.
    b.words[2].store(uint64_t{1} << 40);
    CHECK(bitmap_claim(b.words, 256, 150, 0) == -1);
    CHECK(b.word(1) == 0);
    CHECK(b.word(0) == 1);
}

TEST_CASE("bits past the end of the bitmap are never claimed and a full bitmap says so") {
    Bitmap b;
    CHECK(bitmap_claim(b.words, 100, 40, 1) == 0);   // word 1 holds only 36 bits
    CHECK(bitmap_claim(b.words, 100, 37, 1) == -1);            // ... too few, and word 0 is taken
    CHECK(bitmap_claim(b.words, 100, 36, 1) == 64);
    CHECK(bitmap_claim(b.words, 100, 24, 0) == 40);
    CHECK(bitmap_claim(b.words, 100, 1, 0) == -1);
    CHECK(bitmap_claim(b.words, 100, 0, 0) == -1);
    CHECK(bitmap_claim(b.words, 100, 101, 0) == -1);
}

TEST_CASE("threads claiming and releasing runs at once never share a bit") {
    constexpr uint32_t kBits = 1024;
    constexpr int kThreads = 8;
    constexpr int kRounds = 4000;
    Bitmap b;
    std::atomic<int> owner[kBits];
    for (auto& o : owner) o.store(0);
    std::atomic<int> overlaps{0};
    std::atomic<uint64_t> claims{0}, refusals{0};
    std::vector<std::thread> threads;
    for (int t = 1; t <= kThreads; ++t) {
        threads.emplace_back([&, t] {
            battery::Rng rng(static_cast<uint64_t>(t) * 7919);
            std::vector<std::pair<uint32_t, uint32_t>> held;
            for (int round = 0; round < kRounds; ++round) {
                if (held.size() < 6 && rng.per_mille(600)) {
                    auto count = static_cast<uint32_t>(rng.per_mille(900) ? rng.range(1, 12) : rng.range(60, 150));
                    int64_t first = bitmap_claim(b.words, kBits, count, static_cast<uint32_t>(rng.below(16)));
                    if (first < 0) {
                        refusals.fetch_add(1);
                        continue;
                    }
                    claims.fetch_add(1);
                    for (uint32_t i = 0; i < count; ++i)
                        if (owner[first + i].exchange(t) != 0) overlaps.fetch_add(1);
                    held.emplace_back(static_cast<uint32_t>(first), count);
                } else if (!held.empty()) {
                    std::size_t at = rng.below(held.size());
                    auto [first, count] = held[at];
                    for (uint32_t i = 0; i < count; ++i)
                        if (owner[first + i].exchange(0) != t) overlaps.fetch_add(1);
                    bitmap_release(b.words, first, count);
                    held[at] = held.back();
                    held.pop_back();
                }
            }
            for (auto [first, count] : held) {
                for (uint32_t i = 0; i < count; ++i) owner[first + i].store(0);
                bitmap_release(b.words, first, count);
            }
        });
    }
    for (auto& th : threads) th.join();
    INFO("claims " << claims.load() << ", refusals " << refusals.load());
    CHECK(overlaps.load() == 0);
    CHECK(claims.load() > kThreads * kRounds / 4);
    CHECK(b.all_clear());
}

TEST_CASE("threads taking segments from the arena at once each get their own") {
    REQUIRE(arena_ready());
    constexpr int kThreads = 6;
    std::vector<std::vector<void*>> blocks(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 40; ++i) {
                // Large blocks: each one is a segment of its own, some of several slots.
                std::size_t size = (i % 5 == 0) ? 6 * 1024 * 1024 : 300 * 1024;
                void* p = api().malloc(size);
                if (p) battery::fill(p, static_cast<uint64_t>(t * 1000 + i), 0, 4096);
                blocks[static_cast<std::size_t>(t)].push_back(p);
            }
        });
    }
    for (auto& th : threads) th.join();
    std::vector<uint32_t> owner(arena_slots(), 0);
    for (int t = 0; t < kThreads; ++t) {
        for (std::size_t i = 0; i < blocks[static_cast<std::size_t>(t)].size(); ++i) {
            void* p = blocks[static_cast<std::size_t>(t)][i];
            REQUIRE(p != nullptr);
            CHECK(battery::first_mismatch(p, static_cast<uint64_t>(t * 1000) + i, 4096) == -1);
            uint32_t slot = arena_slot_of(p);
            REQUIRE(slot < arena_slots());
            uint32_t blocks_here = arena_blocks_at(slot);
            REQUIRE(blocks_here >= 1);
            for (uint32_t s = slot; s < slot + blocks_here; ++s) {
                CHECK(owner[s] == 0);
                owner[s] = 1;
            }
        }
    }
    for (auto& list : blocks)
        for (void* p : list) api().free(p);
    battery::require_heap_ok(api());
}

// [S4.45] A freed huge segment stays in its heap's cache, with its slots and memory; a smaller
// huge request takes it without claiming (no mmap) and decommits what it no longer reaches;
// a segment over kHugeCacheMax goes straight back to the arena.
TEST_CASE("a huge segment waits in its heap's cache and serves a smaller huge block") {
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    auto calls = [](OsCall c) { return os_counters().calls[static_cast<unsigned>(c)].load(); };
    testing::on_thread([&] {   // a fresh heap of its own, abandoned empty at the end
        void* p = api().malloc(20 * kMiB);
        REQUIRE(p != nullptr);
        Heap* heap = testing::my_heap();   // made by the first malloc
        Segment* s = segment_of(p);
        uint64_t cached_before = heap->cache_bytes;
        api().free(p);
        CHECK(s->cached == 1);
        CHECK(heap->cache_bytes == cached_before + s->size);
        uint64_t maps = calls(OsCall::mmap), madvises = calls(OsCall::madvise);
        void* q = api().malloc(9 * kMiB);
        CHECK(segment_of(q) == s);
        CHECK(calls(OsCall::mmap) == maps);
        CHECK(calls(OsCall::madvise) == madvises + 1);
        CHECK(heap->cache_bytes == cached_before);
        api().free(q);
        void* giant = api().malloc(kHugeCacheMax + kMiB);
        REQUIRE(giant != nullptr);
        Segment* g = segment_of(giant);
        uint32_t slot = arena_slot_of(giant);
        api().free(giant);
        CHECK(arena_blocks_at(slot) == 0);   // unpublished: back in the arena
        CHECK(heap->cache != g);
        battery::require_heap_ok(api());
        segment_cache_collect(heap, true);
        CHECK(heap->cache_count == 0);
        CHECK(heap->cache_bytes == 0);
    });
}

// [S4.85] As stage 3's S3.78, per heap: while a fresh 40 MiB block is live, a 9 MiB block in the
// cached segment of a 20 MiB one keeps all its memory (S4.45 alone gave back 2 MiB, one
// madvise); once the 40 MiB block is freed (over kHugeCacheMax: straight back), the next such
// take trims to twice its reach. The heap checker sums the totals anew.
TEST_CASE("a heap's reused huge segment keeps its memory while its live huge blocks stay within twice their reach") {
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    auto calls = [](OsCall c) { return os_counters().calls[static_cast<unsigned>(c)].load(); };
    testing::on_thread([&] {
        void* a = api().malloc(40 * kMiB);
        void* p = api().malloc(20 * kMiB);
        REQUIRE(a != nullptr);
        REQUIRE(p != nullptr);
        Heap* heap = testing::my_heap();
        Segment* s = segment_of(p);
        CHECK(heap->huge.committed == heap->huge.reach);   // fresh: committed as far as they reach
        api().free(p);
        uint64_t maps = calls(OsCall::mmap), madvises = calls(OsCall::madvise);
        uint64_t committed = s->committed;
        void* q = api().malloc(9 * kMiB);
        CHECK(segment_of(q) == s);
        CHECK(calls(OsCall::mmap) == maps);
        CHECK(calls(OsCall::madvise) == madvises);   // kept: 40 + 20 MiB <= 2 x (40 + 9)
        CHECK(s->committed == committed);
        battery::require_heap_ok(api());
        api().free(q);
        api().free(a);
        CHECK(heap->huge.reach == 0);
        CHECK(heap->huge.committed == 0);
        q = api().malloc(9 * kMiB);
        CHECK(segment_of(q) == s);
        CHECK(calls(OsCall::madvise) == madvises + 1);
        CHECK(heap->huge.committed == 2 * heap->huge.reach);
        battery::require_heap_ok(api());
        api().free(q);
        segment_cache_collect(heap, true);
    });
}

// `count` blocks of 200 KiB (each a one-block segment of its own) allocated, freed, and
// allocated again: the second round takes every segment back from the cache, committed, with
// no mmap (none given back, none claimed) and no mprotect.
void replaced_from_cache(int count) {
    constexpr std::size_t kBlock = 200 * 1024;
    auto calls = [](OsCall c) { return os_counters().calls[static_cast<unsigned>(c)].load(); };
    testing::on_thread([&] {
        std::vector<void*> blocks;
        for (int i = 0; i < count; ++i) blocks.push_back(api().malloc(kBlock));
        for (void* p : blocks) REQUIRE(p != nullptr);
        uint64_t maps = calls(OsCall::mmap), protects = calls(OsCall::mprotect);
        for (void* p : blocks) api().free(p);
        CHECK(testing::my_heap()->cache_count >= static_cast<uint32_t>(count));
        CHECK(calls(OsCall::mmap) == maps);
        for (void*& p : blocks) p = api().malloc(kBlock);
        CHECK(calls(OsCall::mmap) == maps);
        CHECK(calls(OsCall::mprotect) == protects);
        for (void* p : blocks) api().free(p);
        battery::require_heap_ok(api());
        segment_cache_collect(testing::my_heap(), true);
        battery::require_heap_ok(api());
    });
}

// [S4.19] A thread that keeps a dozen 200 KiB blocks and replaces them gets every segment back
// from its cache (eight, stage 3's first bound, gave 8 mprotect more).
TEST_CASE("a dozen one-block segments freed wait in the cache and serve the next dozen without a system call") {
    replaced_from_cache(12);
}

// [S4.87] A program whose live large blocks swing wider than sixteen (stage 3's count until
// S3.87; its pages_test has this case too): forty of them.
// With a cache of sixteen, 24 segments went back to the arena (an mmap over each) and the
// second forty claimed and committed 24 fresh ones (16 cached, 24 mmap and 24 mprotect more).
TEST_CASE("forty one-block segments freed wait in the cache and serve the next forty without a system call") {
    static_assert(40 <= kCacheSegments);
    replaced_from_cache(40);
}

// [S4.88] A 1 MiB block's segment, cached and reused for a 300 KiB block, gives it the reach
// the first one committed: the same end, so the tail guard is written on the page the first
// block's guard touched, and taking the block faults no page. A block under a quarter of that
// reach gets its own size (S3.96): the check stage 3's pages_test runs too (tests/support.h).
// Before S4.88 a reused block's usable size was its own and its guard's store faulted one page;
// with S4.88's first bound (twice) the 300 KiB block still did (311,280 bytes, not 1,052,656).
TEST_CASE("a reused large segment gives its next block the reach it committed, and its tail guard faults no page") {
    testing::on_thread([] {
        battery::reused_large_segment_keeps_its_reach(
            api(), [](std::size_t n) { return api().malloc(n); },
            [](const void* p) -> const void* { return segment_of(p); },
            [](const void* s) { return static_cast<const Segment*>(s)->cached == 1; },
            stage3::one_block_usable(200 * 1024));
        segment_cache_collect(testing::my_heap(), true);
    });
}

// [S4.35] A page's geometry is checked by stage 3's check_page_grid (S3.29), and this is
// stage 3's check of it too (tests/support.h): a block size that is no class and a start off
// its grid are named.
TEST_CASE("the checker names a page whose block size is no class or whose start is off its grid") {
    testing::on_thread([] {
        void* p = api().malloc(48);
        REQUIRE(p != nullptr);
        Page* page = page_of(p);
        battery::checker_names_page_grid_faults(api(), page->block_size, page->start);
        api().free(p);
    });
}

// [S4.35] A one-block page in use lists nothing of its owner's (a remote free may be on its
// xthread_free): named in stage 3's words (tests/support.h).
TEST_CASE("the checker names a one-block page that lists a block") {
    testing::on_thread([] {
        void* p = api().malloc(100 * 1024);
        REQUIRE(p != nullptr);
        Page* page = page_of(p);
        REQUIRE(page->bin == kOneBlockBin);
        battery::checker_names_one_block_page_lists(api(), [&](bool on) {
            page->local_free = on ? static_cast<Block*>(p) : nullptr;
        });
        api().free(p);
    });
}

// [S4.89] What the cache's one-slot segments keep committed is counted as they come and go, and
// the purge takes away what it gives back: a 1 MiB block's segment and a 200 KiB one's, cached,
// add their commits; the purge brings the count back; a segment taken again takes its own
// away. A count made wrong on purpose is what the checker reports: it sums the cache anew.
// (A purge the kernel refuses keeps the count: S4.77's case runs the checker after one.)
TEST_CASE("a heap counts what its cached one-slot segments keep committed, through the purge, and the checker compares") {
    constexpr std::size_t kKiB = 1024;
    testing::on_thread([&] {
        void* a = api().malloc(1024 * kKiB);
        void* b = api().malloc(200 * kKiB);
        REQUIRE(a != nullptr);
        REQUIRE(b != nullptr);
        Heap* heap = testing::my_heap();
        Segment* sa = segment_of(a);
        Segment* sb = segment_of(b);
        uint64_t before = heap->cache_committed;   // what a reclaimed segment may have brought
        api().free(a);
        REQUIRE(sa->cached == 1);
        CHECK(sa->committed >= 1024 * kKiB);
        CHECK(heap->cache_committed == before + sa->committed);
        api().free(b);
        REQUIRE(sb->cached == 1);
        CHECK(heap->cache_committed == before + sa->committed + sb->committed);
        battery::require_heap_ok(api());
        segment_purge(heap, true);
        CHECK(sa->committed == 0);
        CHECK(sb->committed == 0);
        CHECK(heap->cache_committed == 0);
        battery::require_heap_ok(api());
        void* c = api().malloc(300 * kKiB);   // the newest cached one-slot segment: sb
        REQUIRE(c != nullptr);
        CHECK(segment_of(c) == sb);
        api().free(c);
        CHECK(heap->cache_committed == sb->committed);
        heap->cache_committed += kOsPage;
        CheckResult wrong = api().check();
        heap->cache_committed -= kOsPage;
        CHECK_FALSE(wrong.ok);
        CHECK(std::string(wrong.message).find("cache's committed bytes") != std::string::npos);
        battery::require_heap_ok(api());
        segment_cache_collect(heap, true);
        CHECK(heap->cache_committed == 0);
    });
}

// A segment fresh from the arena is made writable with one mprotect (S3.48): its header and
// what its first use reaches (here a 200 KiB block), where the header and then the block took
// two. A cached one-block segment whose memory the purge gave back (madvise keeps the
// protection, S3.47) serves the next block without an mprotect, as long as the slots it
// reaches are writable already; a bigger block makes the rest writable in one step.
TEST_CASE("a claimed segment costs one mprotect, and a purged cached one none when reused") {
    constexpr std::size_t kBlock = 200 * 1024;
    auto calls = [](OsCall c) { return os_counters().calls[static_cast<unsigned>(c)].load(); };
    testing::on_thread([&] {
        uint64_t protects = calls(OsCall::mprotect);
        void* p = api().malloc(kBlock);
        REQUIRE(p != nullptr);
        Heap* heap = testing::my_heap();
        Segment* s = segment_of(p);
        CHECK(calls(OsCall::mprotect) == protects + 1);
        api().free(p);
        REQUIRE(s->cached == 1);
        segment_purge(heap, true);                          // its memory goes back, not its slots
        CHECK(s->committed == 0);
        protects = calls(OsCall::mprotect);
        uint64_t advised = calls(OsCall::madvise);
        void* q = api().malloc(kBlock);
        CHECK(segment_of(q) == s);
        CHECK(calls(OsCall::mprotect) == protects);         // writable still
        CHECK(calls(OsCall::madvise) == advised);
        battery::require_heap_ok(api());
        api().free(q);
        void* r = api().malloc(3 * kBlock);
        CHECK(segment_of(r) == s);
        CHECK(calls(OsCall::mprotect) == protects + 1);     // the slots past the first block
        api().free(r);
        battery::require_heap_ok(api());
        segment_cache_collect(heap, true);
    });
}

// S3.49: a small segment whose last page was freed waits in the cache with that page dirty;
// taken again for small pages, it keeps it and hands the same page out, committed: no madvise
// to give it back and no fault to get it again. (page_alloc and page_release directly: the
// heap's queues and the reclaiming of abandoned segments stay out of the way.)
TEST_CASE("a cached small segment serving small pages again keeps its dirty pages") {
    auto calls = [](OsCall c) { return os_counters().calls[static_cast<unsigned>(c)].load(); };
    testing::on_thread([&] {
        void* first = api().malloc(200 * 1024);   // makes the heap; a one-block segment
        REQUIRE(first != nullptr);
        Heap* heap = testing::my_heap();
        uint64_t protects = calls(OsCall::mprotect);
        Page* page = page_alloc(heap, PageKind::small);
        REQUIRE(page != nullptr);
        Segment* s = segment_of(page);
        CHECK(s->used_pages == 1);                          // fresh from the arena
        CHECK(calls(OsCall::mprotect) == protects + 1);     // header and page 0 together
        uint64_t footprint = testing::footprint();
        page_release(heap, page);
        CHECK(s->cached == 1);
        CHECK(s->dirty_pages == 1);
        uint64_t advised = calls(OsCall::madvise);
        protects = calls(OsCall::mprotect);
        Page* again = page_alloc(heap, PageKind::small);
        CHECK(again == page);
        CHECK(s->dirty_pages == 0);
        CHECK(calls(OsCall::madvise) == advised);
        CHECK(calls(OsCall::mprotect) == protects);
        CHECK(testing::footprint() == footprint);
        page_release(heap, again);
        api().free(first);
        battery::require_heap_ok(api());
        segment_cache_collect(heap, true);
    });
}

// [S4.60] Sixteen freed 1 MiB blocks leave sixteen cached segments with 17 MiB writable; under
// a data limit 24 MiB above what the process held before them, a 12 MiB block fits only once
// they go back to the arena. The blocks come before the limit: under it, each would have had a
// mapping of its own ([S4.83]), and nothing would be cached. (Not under a sanitizer, whose own
// mappings move VmData while the child runs.)
TEST_CASE("under a data limit, a heap's cached segments go back to make room for a big block") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* first = api().malloc(100);
        battery::child_expect(first != nullptr, "no heap");
        const std::size_t before = battery::data_bytes();
        void* blocks[16];
        for (void*& p : blocks) p = written_block(kMiB, "a 1 MiB block was refused");
        for (void* p : blocks) api().free(p);
        battery::child_expect(testing::my_heap()->cache_count == 16, "the freed blocks' segments are not cached");
        rlimit limit{before + 24 * kMiB, RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_DATA, &limit) == 0, "setrlimit failed");
        void* big = written_block(12 * kMiB, "the 12 MiB block was refused");
        battery::child_expect(testing::my_heap()->cache_count == 0, "the cache was not given back");
        api().free(big);
        api().free(first);
    });
}

// [S4.82] Under a data limit, 4,000-byte blocks until NULL, every other one freed: their pages
// hold free blocks, but no page of a smaller bin can be had. A 600-byte request gets one of
// those blocks (its usable size the larger bin's), until none is left: then NULL with ENOMEM.
// Failed before: NULL at the first. (Not under a sanitizer, whose own mappings move VmData.)
TEST_CASE("under a data limit, a free block of a larger bin serves when no page can be had") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* first = heap_then_limit(RLIMIT_DATA, battery::data_bytes() + 4 * kMiB);
        battery::small_blocks_from_larger_free_ones(api(), [](std::size_t n) { return api().malloc(n); });
        api().free(first);
    });
}

// [S4.115] Stage 3's S3.97: a larger bin serves an aligned request only if every block of it
// keeps the alignment. Failed before: a 4 KiB-aligned request got a 5,120-byte block.
TEST_CASE("under a data limit, a larger bin serves an aligned request only with aligned blocks") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* first = heap_then_limit(RLIMIT_DATA, battery::data_bytes() + 4 * kMiB);
        battery::aligned_blocks_from_larger_free_ones(
            api(), [](std::size_t n) { return api().malloc(n); },
            [](std::size_t alignment, std::size_t n) { return api().aligned_alloc(alignment, n); });
        api().free(first);
    });
}

// [S4.76] A segment given back while the process is at its map count's limit: the mmap that
// maps its slots PROT_NONE again must split the reservation where the slots end (the slot after
// is free, so PROT_NONE continues past them), and is refused. The slots stay writable, and before
// the fix they kept their pages too, 1 MiB of the old block's bytes resident while the footprint
// said they were given back. Now madvise gives them back: nothing of the segment is resident.
TEST_CASE("a segment given back at the map count's limit gives its pages back all the same") {
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* kept[8];
        unsigned kept_count = 0;
        void* p = written_block(kMiB, "a 1 MiB block was refused");
        while (arena_claimed(arena_slot_of(p) + 1, 1)) {   // a free slot after it, PROT_NONE
            battery::child_expect(kept_count < 8, "no 1 MiB block is followed by a free slot");
            kept[kept_count++] = p;
            p = written_block(kMiB, "a 1 MiB block was refused");
        }
        Segment* s = segment_of(p);
        api().free(p);
        battery::child_expect(s->cached && s->committed >= kMiB, "the block's segment is not cached with its memory");
        {
            battery::MapCountFull full;
            segment_cache_collect(testing::my_heap(), true);   // back to the arena
        }
        battery::expect_refused_but_given_back(s, kSegmentSize);
        for (unsigned i = 0; i < kept_count; ++i) api().free(kept[i]);
        void* again = written_block(kMiB, "a 1 MiB block was refused after the refused release");
        battery::child_expect(api().check().ok, "the heap check failed");
        api().free(again);
    });
}

// [S4.77] Stage 3's S3.70 in a heap of stage 4: a cached 1 MiB block's memory whose first page
// is locked (madvise refuses it) stays committed, counted and on the purge list through a
// purge. A small block of the same fresh heap then takes that segment for another kind, whose
// pages count from zero: its memory must go first, is refused again, and the segment goes back
// to the arena instead (a fresh one serves the block), where formatting it kept 1 MiB counted
// for pages it does not have and failed the check.
TEST_CASE("a cached segment whose memory the kernel refuses to decommit stays counted, and is not reused for another kind") {
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* big = written_block(kMiB, "a 1 MiB block was refused");
        Segment* s = segment_of(big);
        api().free(big);
        battery::child_expect(s->cached && s->on_purge_list, "the block's segment is not cached with its memory");
        battery::child_expect(battery::lock_pages(big, kOsPage), "mlock failed");
        uint64_t committed = s->committed, before = testing::footprint();
        segment_purge(testing::my_heap(), true);
        battery::child_expect(s->committed == committed && s->on_purge_list, "the refused purge uncounted the segment's memory");
        battery::child_expect(testing::footprint() == before, "the refused purge lowered the footprint");
        battery::child_expect(api().check().ok, "the heap check failed after the refused purge");
        void* small = api().malloc(100);
        battery::child_expect(small != nullptr, "a small block was refused");
        battery::child_expect(testing::my_heap()->cache_count == 0, "the segment stayed cached");
        battery::child_expect(api().check().ok, "the heap check failed after the small block");
        api().free(small);
    });
}

// [S4.78] Stage 3's S3.71 in a lazy arena: the middle one of three pages in a row whose blocks'
// mappings merged is freed at the map count's limit, so its munmap is refused. Before, the
// page's next format found its own old mapping in the way, took it for one not ours, and
// malloc(100) said NULL for good; now the page keeps what it maps, gives the pages back, and
// unmaps it when next taken. (Not under a sanitizer, whose shadow memory may lie where a lazy
// arena is placed.)
TEST_CASE("in a lazy arena, a page freed at the map count's limit is mapped again afterwards") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first_block = lazy_heap();
        auto take = [] {
            auto* p = static_cast<char*>(api().malloc(100));
            battery::child_expect(p != nullptr, "a 100-byte block was refused");
            std::memset(p, 1, 100);
            return p;
        };
        std::vector<char*> fillers, kept;   // fillers: the last free pages of segments claimed before the switch
        do fillers.push_back(static_cast<char*>(written_block(kSmallMax, "a small block was refused")));
        while (!segment_of(fillers.back())->lazy);
        do kept.push_back(take());   // this bin's page from before the switch, filled up
        while (!segment_of(kept.back())->lazy);
        std::vector<char*> middle = battery::middle_of_three_pages(take, [](const void* p) -> const void* { return page_of(p); }, kept);
        Page* page = page_of(middle[0]);
        Segment* s = segment_of(page);
        battery::child_expect(s->lazy && segment_of(kept.back()) == s && page_of(kept.back())->index == page->index + 1,
                              "the blocks are not on three pages in a row of a lazy segment");
        {
            battery::MapCountFull limit;
            for (char* p : middle) api().free(p);
            heap_collect(testing::my_heap(), true);   // if the page retired, it goes back to its segment now
        }
        battery::child_expect(page->in_use == 0, "the page was not freed");
        battery::expect_refused_but_given_back(reinterpret_cast<void*>(page_area(s, page).lo), std::size_t{1} << kSmallPageShift);
        for (std::size_t i = 0; i < 1000; ++i) kept.push_back(take());
        battery::child_expect(api().check().ok, "the heap check failed");
        for (char* p : kept) api().free(p);
        for (char* p : fillers) api().free(p);
        api().free(first_block);
    });
}

// [S4.80] Stage 3's S3.73 in a lazy arena: a page not ours at the start of the next free page
// of a lazily mapped small segment blocks that page; fresh pages of two new size classes come
// from the pages after it. Before, the blocked page went back free and malloc said NULL. (Not
// under a sanitizer, whose shadow memory may lie where a lazy arena is placed.)
TEST_CASE("in a lazy arena, a free page whose start holds a mapping not ours is passed over") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first = lazy_heap();
        std::vector<char*> fillers;   // the last free pages of segments claimed before the switch
        do fillers.push_back(static_cast<char*>(written_block(kSmallMax, "a small block was refused")));
        while (!segment_of(fillers.back())->lazy);
        Segment* s = segment_of(fillers.back());
        auto blocked = static_cast<unsigned>(__builtin_ctzll(s->free_pages));
        unsigned char* foreign = battery::map_page_not_ours(reinterpret_cast<void*>(page_area(s, &s->pages()[blocked]).lo));
        void* small = written_block(2000, "a 2000-byte block was refused: the blocked page was taken again");
        void* other = written_block(3000, "a 3000-byte block was refused");
        battery::child_expect(page_of(small)->index != blocked && page_of(other)->index != blocked, "a block lies in the blocked page");
        battery::child_expect(api().check().ok, "the heap check failed");
        battery::child_expect(battery::page_not_ours_intact(foreign), "the page not ours changed");
        api().free(small);
        api().free(other);
        for (char* p : fillers) api().free(p);
        api().free(first);
        munmap(foreign, kOsPage);
    });
}

bool mapped(const void* at, std::size_t bytes);

// [S4.79] The switch to a lazy arena ([S4.68]) made at the map count's limit: the munmap of each
// run of free slots would cut a hole in the reservation, and is refused. Before, the slots were
// marked unheld all the same, still mapped PROT_NONE, and every later claim found its slots'
// own mapping in the way (EEXIST, taken for a mapping not ours), kept them claimed for good and
// went on to the next: the first fresh segment after it left all but the last run of slots
// claimed for good. Now they stay held, and the next claim unmaps the one it takes and every
// free one still held (the map count has room again): the segment maps what it uses, and a
// free slot far away is no longer reserved.
// (Not under a sanitizer, whose shadow memory may lie where a lazy arena is placed.)
TEST_CASE("the arena going lazy at the map count's limit still hands out slots a segment can map") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first = api().malloc(100);   // the arena, reserved
        battery::child_expect(first != nullptr && !arena_lazy(), "no reserved arena");
        {
            battery::MapCountFull limit;
            rlimit none{RLIM_INFINITY - 1, RLIM_INFINITY};
            battery::child_expect(setrlimit(RLIMIT_AS, &none) == 0 && arena_limited() && arena_lazy(), "no switch");
        }
        uint32_t far = arena_slots() / 2;   // a free slot no claim below takes
        battery::child_expect(!arena_claimed(far, 1) && mapped(arena_segment(far), kOsPage), "no reserved free slot");
        uint32_t hint = 0;
        Segment* s = arena_claim(1, &hint);
        battery::child_expect(s != nullptr, "no slot to claim");
        uint32_t slot = arena_slot_of(s);
        battery::child_expect(arena_unheld(slot), "the claimed slot is still held");
        battery::child_expect(arena_commit(s, kOsPage), "the claimed slot cannot be mapped");
        battery::child_expect(!mapped(arena_segment(far), kOsPage) && arena_unheld(far), "the free slots stay reserved");
        arena_release(slot, 1, kOsPage);
        void* medium = written_block(kMediumMax, "a medium block was refused");
        battery::child_expect(api().check().ok, "the heap check failed");
        api().free(medium);
        api().free(first);
    });
}

// [S4.86] In a lazy arena, a segment's own mapping given back at the map count's limit, between
// a page of the test's own on each side (the one below in a free slot): the munmap would cut a hole and is refused, and the
// mapping stays behind. Before, its slot went back to the bitmap all the same, and the next
// claim of it found that mapping in the way (EEXIST, taken for a mapping not ours) and kept the
// slot claimed for good. Now the slot stays claimed while the leftover stands, and the next
// claim unmaps exactly it first: the slot is claimed again and maps, both pages intact.
// (Not under a sanitizer, whose shadow memory may lie where a lazy arena is placed.)
TEST_CASE("in a lazy arena, a slot whose munmap was refused can be mapped again afterwards") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first = lazy_heap();
        uint32_t hint = 0;
        Segment* run = arena_claim(3, &hint);   // three free slots in a row; the lower two go back
        battery::child_expect(run != nullptr, "no three slots to claim");
        uint32_t hole = arena_slot_of(run), below_slot = hole + 1, slot = hole + 2;
        arena_release(hole, 1, 0);
        arena_release(below_slot, 1, 0);
        Segment* s = arena_segment(slot);
        battery::child_expect(arena_commit(s, kOsPage), "the slot cannot be mapped");
        unsigned char* below = battery::map_page_not_ours(reinterpret_cast<char*>(s) - kOsPage);
        unsigned char* past = battery::map_page_not_ours(reinterpret_cast<char*>(s) + kOsPage);
        {
            battery::MapCountFull limit;
            arena_release(slot, 1, kOsPage);
        }
        battery::child_expect(mapped(s, kOsPage), "the munmap was not refused: the test proves nothing");
        // A claim from the hint takes the lowest free slot: the two given back below, and before
        // them any hole that earlier test cases left (the child inherits the arena as it was,
        // which the segment cache's timing shapes; a test that took one claim for the slot below
        // failed on such a hole). Each is taken until this slot comes; a slot above it would mean
        // it was skipped.
        hint = hole / 64;
        std::vector<uint32_t> lower;
        Segment* again = nullptr;
        while (again == nullptr) {
            Segment* next = arena_claim(1, &hint);
            battery::child_expect(next != nullptr && arena_slot_of(next) <= slot, "the slot given back is not claimed again");
            if (next == s) again = next;
            else lower.push_back(arena_slot_of(next));
        }
        battery::child_expect(arena_commit(again, kOsPage), "the slot cannot be mapped: its own leftover is in the way");
        battery::child_expect(battery::page_not_ours_intact(below) && battery::page_not_ours_intact(past),
                              "a page not ours changed");
        arena_release(slot, 1, kOsPage);
        for (uint32_t taken : lower) arena_release(taken, 1, 0);
        battery::child_expect(!arena_claimed(slot, 1), "the slot stays claimed");
        api().free(first);
    });
}

// [S4.66] Under an address-space limit 64 MiB above what the process holds, 600 blocks just
// above the medium maximum each get a mapping of their own (contract/mapped.h) instead of a
// 4 MiB slot of the arena (the arena, reserved before the limit here, goes lazy at the first
// of them, [S4.68], so a mapping may even land in the range it gave back: the test asks that
// no segment holds them). Another thread reads their sizes, reallocates one and frees them, every
// other one first, so that mapped.cc's table of addresses grows twice and loses entries from
// the middle of its runs; the checker counts them while they live. (Not under a sanitizer,
// whose own mappings move VmSize.)
TEST_CASE("under an address-space limit, large blocks get mappings of their own, freed by any thread") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20, kBlock = kMediumMax + 1000, kCount = 600;
    battery::ChildOutcome outcome = battery::run_in_child([] {
        static void* blocks[kCount];
        uint64_t before = mapped_totals(kStageNumber).blocks;
        testing::on_thread([] {
            void* first = heap_then_limit(RLIMIT_AS, battery::address_space_bytes() + 64 * kMiB);
            for (void*& p : blocks) {
                p = api().malloc(kBlock);
                battery::child_expect(p != nullptr, "a large block was refused");
                battery::child_expect(arena_blocks_at(arena_slot_of(p)) == 0, "a large block took a slot of the arena");
                std::memset(p, 7, kBlock);
            }
            battery::child_expect(api().check().ok, "the heap check failed");
            api().free(first);
        });
        battery::child_expect(mapped_totals(kStageNumber).blocks == before + kCount, "the blocks are not mapped");
        testing::on_thread([] {
            for (void* p : blocks)
                battery::child_expect(api().usable_size(p) >= kBlock, "usable_size of a mapped block is wrong");
            auto* grown = static_cast<unsigned char*>(api().realloc(blocks[0], 2 * kBlock));
            battery::child_expect(grown != nullptr && grown[kBlock - 1] == 7, "realloc lost a mapped block's bytes");
            blocks[0] = grown;
            for (std::size_t first : {0, 1})
                for (std::size_t i = first; i < kCount; i += 2) api().free(blocks[i]);
        });
        battery::child_expect(mapped_totals(kStageNumber).blocks == before, "a mapped block outlived its free");
        battery::child_expect(api().check().ok, "the heap check failed after the frees");
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// [S4.70] Under an address-space limit 96 MiB above what the process holds, a 1 MiB block of
// a fresh thread's heap lies in a mapping of its own ([S4.66]); grown by realloc in 1 MiB
// steps to 64 MiB and shrunk back, it keeps its bytes and its entry in the mapped table, and
// each step is one mremap, no mmap or munmap (tests/support.h, as stage 3's S3.64). Copying
// instead fails it twice over: an mmap and munmaps each step, and a copy holds old and new at
// once (127 MiB by the last step).
TEST_CASE("under an address-space limit, a mapped block grows by mremap, without a copy") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        void* first = heap_then_limit(RLIMIT_AS, battery::address_space_bytes() + 96 * kMiB);
        battery::grow_mapped_in_steps(api(), kStageNumber, kMiB, kMiB, 64 * kMiB);
        api().free(first);
    });
}

bool mapped(const void* at, std::size_t bytes);

// [S4.68] A limit set after the arena was reserved, with no room left for any new mapping (the
// limit is what the process holds: a mapping of one page is refused). The next cold path that
// asks about the limit (here a large block: in-process, no drop-in library tells the stage)
// gives back every slot no segment holds, as mincore shows; the segment of the first block
// stays, held whole, until its heap trims it to what it maps, and stays usable: its next pages
// are mapped at their addresses; a thread can start; segments claimed afterwards map only what
// they commit; given back, both are unmapped. (Not under a sanitizer, whose own mappings move
// VmSize.)
TEST_CASE("under an address-space limit set after start-up, the arena gives back what no segment holds") {
    if (battery::kUnderSanitizer) return;
    battery::ChildOutcome outcome = battery::run_in_child([] {
        testing::on_thread([] {
            void* first = heap_then_limit(RLIMIT_AS, battery::address_space_bytes());
            battery::child_expect(!arena_lazy(), "the arena was lazy before the limit");
            Segment* held_segment = segment_of(first);
            void* page = mmap(nullptr, kOsPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            battery::child_expect(page == MAP_FAILED, "a new mapping fitted under the limit");
            void* big = api().malloc(kMediumMax + 1000);   // asks getrlimit: the switch
            battery::child_expect(big != nullptr, "a large block was refused");
            std::memset(big, 3, kMediumMax + 1000);
            battery::child_expect(arena_lazy(), "the arena did not go lazy");
            battery::child_expect(!mapped(arena_segment(arena_slots() - 1), kOsPage), "the untouched range is still mapped");
            battery::child_expect(mapped(held_segment, kSegmentSize), "the first block's segment lost its slot");
            segment_trim_held(testing::my_heap());   // what its next tick would do
            char* tail = reinterpret_cast<char*>(held_segment) + kSegmentSize - kOsPage;
            battery::child_expect(!mapped(tail, kOsPage), "the held segment was not trimmed");
            battery::child_expect(mapped(held_segment, kMetaSize), "the trim took the segment's header");
            static void* small[1500];   // 1.5 MB of small blocks: pages past what the segment mapped
            for (void*& p : small) {
                p = api().malloc(1000);
                battery::child_expect(p != nullptr && segment_of(p) == held_segment, "a small block left the trimmed segment");
                std::memset(p, 6, 1000);
            }
            for (void* p : small) api().free(p);
            std::thread([] {
                void* p = api().malloc(100);
                battery::child_expect(p != nullptr, "a new thread got no block");
                api().free(p);
            }).join();
            void* again = api().malloc(100);
            battery::child_expect(segment_of(again) == held_segment, "a small block left the trimmed segment");
            std::memset(again, 4, 100);
            void* medium = api().malloc(kSmallMax + 1);   // a segment claimed after the switch
            battery::child_expect(medium != nullptr, "a medium block was refused");
            std::memset(medium, 5, kSmallMax + 1);
            Segment* fresh = segment_of(medium);
            battery::child_expect(!mapped(reinterpret_cast<char*>(fresh) + kSegmentSize - kOsPage, kOsPage),
                                  "a segment claimed after the switch mapped its whole slot");
            battery::child_expect(api().check().ok, "the heap check failed");
            for (void* p : {first, big, again, medium}) api().free(p);
            heap_collect(testing::my_heap(), true);
            battery::child_expect(!mapped(held_segment, kOsPage), "the trimmed segment was not unmapped when given back");
            battery::child_expect(!mapped(fresh, kOsPage), "the fresh segment was not unmapped when given back");
        });
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// [S4.68] A segment abandoned by an exited thread before the switch keeps its reservation until
// a heap that has trimmed its own reclaims it: then it is trimmed too, and its block lives on.
// (Not under a sanitizer, as above.)
TEST_CASE("a segment abandoned before the arena went lazy is trimmed when a heap reclaims it") {
    if (battery::kUnderSanitizer) return;
    battery::ChildOutcome outcome = battery::run_in_child([] {
        void* own = api().malloc(100);   // this thread's heap, which trims its own below
        static void* left;
        testing::on_thread([] {
            left = api().malloc(100);   // the thread exits with it: its segment is abandoned
            std::memset(left, 9, 100);
        });
        char* tail = reinterpret_cast<char*>(segment_of(left)) + kSegmentSize - kOsPage;
        rlimit limit{RLIM_INFINITY - 1, RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0 && arena_limited() && arena_lazy(), "no switch");
        segment_trim_held(testing::my_heap());
        battery::child_expect(mapped(tail, kOsPage), "an abandoned segment was trimmed without an owner");
        battery::child_expect(heap_reclaim(testing::my_heap(), 1), "nothing was reclaimed");
        battery::child_expect(testing::my_heap()->owned[arena_slot_of(left)] == 1, "another segment was reclaimed");
        battery::child_expect(!mapped(tail, kOsPage), "the reclaimed segment was not trimmed");
        battery::child_expect(static_cast<unsigned char*>(left)[99] == 9, "the block lost its bytes");
        api().free(left);
        api().free(own);
        battery::child_expect(api().check().ok, "the heap check failed");
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// Four threads at once each write 3.5 MiB of medium blocks (seven 512 KiB pages of one segment),
// wait for the others (so that none reclaims another's segment), free them and exit: their
// segments are abandoned empty ([S4.26]), still mapped, and their records are free again.
void leave_empty_segments() {
    std::atomic<int> holding{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&holding] {
            void* blocks[56];
            for (void*& p : blocks) p = written_block(kMediumMax, "a medium block was refused");
            for (++holding; holding.load() < 4;) std::this_thread::yield();
            for (void* p : blocks) api().free(p);
        });
    }
    for (std::thread& t : threads) t.join();
    battery::child_expect(abandoned_count() >= 4, "the exited threads left no segments");
}

// [S4.69] Under a limit 2 MiB above what the process holds after leave_empty_segments, a 12 MiB
// block needs the room those segments keep. Refused while a refusal reclaimed only one of them
// (malloc_one_block's reclaim of one) and gave back the heap's cache; served now that it first
// takes every abandoned segment (the empty ones go back to the arena, unmapped) and tries once
// more. The arena goes lazy after the threads have claimed (lazy_heap): their segments are held,
// so their dirty pages keep their memory (in a lazy arena a freed page is unmapped at once,
// S3.62). (Not under a sanitizer, whose own mappings move VmSize.)
TEST_CASE("under an address-space limit, exited threads' empty segments go back to make room for a big block") {
    if (battery::kUnderSanitizer) return;
    constexpr std::size_t kMiB = std::size_t{1} << 20;
    on_thread_in_child([] {
        leave_empty_segments();
        void* first = lazy_heap();
        rlimit limit{battery::address_space_bytes() + 2 * kMiB, RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
        void* big = written_block(12 * kMiB, "the 12 MiB block was refused");
        battery::child_expect(abandoned_count() == 0, "abandoned segments were left");
        battery::child_expect(api().check().ok, "the heap check failed");
        api().free(big);
        api().free(first);
    });
}

// [S4.69] A thread's heap record is mapped when every record is in use. Under a limit that leaves
// no room for one (the limit is what the process holds), the exited threads' empty segments go
// back first, without a heap: threads started before the limit, one more than there are free
// records, each take a record at once (heap_acquire, which reclaims nothing); the last needs a
// new one. A segment an exited thread left with a live block stays abandoned. (Not under a
// sanitizer, as above.)
TEST_CASE("under an address-space limit, a new thread's heap record gets the room of exited threads' empty segments") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first = lazy_heap();
        leave_empty_segments();
        static void* kept;
        std::thread([] { kept = written_block(100, "a small block was refused"); }).join();
        unsigned free_records = 0;
        for (Heap* h = first_record(); h != nullptr; h = h->next_record) free_records += h->state.load() == HeapState::free;
        std::atomic<bool> go{false};
        std::atomic<unsigned> acquired{0}, refused{0};
        std::vector<std::thread> threads;
        for (unsigned t = 0; t <= free_records; ++t) {
            threads.emplace_back([&] {
                while (!go.load()) std::this_thread::yield();
                ++(heap_acquire() != nullptr ? acquired : refused);
                while (acquired.load() + refused.load() <= free_records) std::this_thread::yield();
            });
        }
        rlimit limit{battery::address_space_bytes(), RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
        go = true;
        for (std::thread& t : threads) t.join();
        battery::child_expect(refused.load() == 0, "a thread got no heap record");
        battery::child_expect(abandoned_count() == 1 && (abandoned_word(arena_slot_of(kept) / 64) >> (arena_slot_of(kept) % 64) & 1),
                              "the empty segments were not given back, or the live one was");
        api().free(kept);
        api().free(first);
    });
}

// [S4.116] A thread whose first call is a free, when no heap record can be had (every record in
// use and no room to map one: the limit is what the process holds, and no empty segment is left
// to give back): the free is done all the same (a remote free, with no heap of the caller's to
// reclaim into), and must be counted. It was not: the statistics kept the block live, and the
// heap check at exit said "statistics disagree with the pages' live blocks" (found by a churn
// of four threads, each one's first call often a free of another's block, under random
// address-space limits near 90 MiB). (Not under a sanitizer, as above.)
TEST_CASE("a free by a thread that can have no heap record is counted all the same") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        void* first = lazy_heap();
        void* block = written_block(100, "a small block was refused");
        orphans_abandon();
        abandoned_release_empty();
        unsigned free_records = 0;
        for (Heap* h = first_record(); h != nullptr; h = h->next_record) free_records += h->state.load() == HeapState::free;
        std::atomic<unsigned> holding{0};
        std::atomic<bool> go{false}, done{false};
        std::atomic<bool> had_record{true};
        std::vector<std::thread> holders;
        for (unsigned t = 0; t < free_records; ++t) {
            holders.emplace_back([&] {
                battery::child_expect(heap_acquire() != nullptr, "a free record was refused");
                ++holding;
                while (!done.load()) std::this_thread::yield();
            });
        }
        std::thread freer([&] {
            while (!go.load()) std::this_thread::yield();
            api().free(block);   // its first call
            had_record = t_heap != &g_empty_heap;
        });
        while (holding.load() < free_records) std::this_thread::yield();
        Stats before = api().stats();
        rlimit limit{battery::address_space_bytes(), RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
        go = true;
        freer.join();
        limit.rlim_cur = RLIM_INFINITY;
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
        done = true;
        for (std::thread& t : holders) t.join();
        battery::child_expect(!had_record.load(), "the freeing thread got a heap record (the test proves nothing)");
        battery::child_expect(api().stats().frees == before.frees + 1, "the free was not counted");
        battery::child_expect_heap_ok(api(), "the heap check failed");
        api().free(first);
    });
}

// [S4.69] Under pressure a segment keeps writable only what its pages in use reach: a medium
// segment written up to its seventh page keeps its first page (one live block) and gives back
// the rest once the purge has run, unmapped in a lazy arena; its pages come back when asked for.
// The segment is claimed before the arena goes lazy (held, then trimmed): one claimed lazily
// unmaps each page as it is freed (S3.62) and has nothing to give back. (Not under a sanitizer,
// as above.)
TEST_CASE("under pressure, a segment gives back what it keeps writable past its pages in use") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        static void* blocks[56];   // seven 512 KiB medium pages, in one segment
        for (void*& p : blocks) p = written_block(kMediumMax, "a medium block was refused");
        void* first = lazy_heap();
        segment_trim_held(testing::my_heap());   // what its next tick would do
        Segment* s = segment_of(blocks[0]);
        battery::child_expect(!s->lazy, "the segment was claimed lazily");
        char* seventh = reinterpret_cast<char*>(s) + 6 * (std::size_t{1} << kMediumPageShift);
        for (std::size_t i = 1; i < 56; ++i) api().free(blocks[i]);
        heap_collect(testing::my_heap(), true);   // retired pages freed, dirty pages purged
        battery::child_expect(mapped(seventh, kOsPage), "the seventh page was unmapped before the shrink");
        battery::child_expect(segment_shrink(testing::my_heap()), "nothing was given back");
        battery::child_expect(!mapped(seventh, kOsPage), "the seventh page is still mapped");
        battery::child_expect(static_cast<unsigned char*>(blocks[0])[kMediumMax - 1] == 1, "the live block lost its bytes");
        battery::child_expect(api().check().ok, "the heap check failed after the shrink");
        for (std::size_t i = 1; i < 56; ++i) blocks[i] = written_block(kMediumMax, "a medium block was refused after the shrink");
        battery::child_expect(api().check().ok, "the heap check failed");
        for (void* p : blocks) api().free(p);
        api().free(first);
    });
}

// S3.62 and [S4.69]: in a lazy arena a fresh page maps its first blocks as it carves them. Under a
// limit that leaves no room (the limit is what the process holds), a new bin's page in the open
// lazy segment (claimed once the held one was full) cannot map them while the heap's cache keeps
// the held segment, emptied, with its dirty pages; the page goes back, the relief returns the
// cache to the arena (unmapped) and the page is asked for once more. Fails with find_page's
// retry removed: the block is refused. (Not under a sanitizer, as above.)
TEST_CASE("under an address-space limit, a page whose first blocks cannot be mapped gets the cache's room") {
    if (battery::kUnderSanitizer) return;
    on_thread_in_child([] {
        static void* blocks[56];   // seven 512 KiB medium pages, in one held segment
        for (void*& p : blocks) p = written_block(kMediumMax, "a medium block was refused");
        void* first = lazy_heap();
        std::vector<void*> held;   // the rest of the held segment, then the first lazy block
        do held.push_back(written_block(kMediumMax, "a medium block was refused after the switch"));
        while (!segment_of(held.back())->lazy);
        void* open = held.back();
        held.pop_back();
        battery::child_expect(held.size() < 8 && segment_of(open) != segment_of(blocks[0]), "the held segment was not full");
        for (void* p : blocks) api().free(p);
        for (void* p : held) api().free(p);
        battery::child_expect(testing::my_heap()->cache_count != 0, "the held segment is not cached");
        rlimit none_left{battery::address_space_bytes(), RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &none_left) == 0, "setrlimit failed");
        void* p = written_block(20000, "the block was refused");
        battery::child_expect(segment_of(p) == segment_of(open), "the block is not in the open lazy segment");
        battery::child_expect(testing::my_heap()->cache_count == 0, "the cache was not given back");
        battery::child_expect(api().check().ok, "the heap check failed");
        api().free(p);
        api().free(open);
        api().free(first);
    });
}

// [S4.68] The switch while other threads claim and give back segments (each round a medium
// block in a fresh segment, freed and its segment returned at once): every claim gets slots
// that are wholly held or wholly unheld, and no block is lost or shared. The limit is the
// largest there is short of none, so nothing runs out. Run under ThreadSanitizer too.
TEST_CASE("the arena goes lazy while other threads claim and give back segments") {
    battery::ChildOutcome outcome = battery::run_in_child([] {
        testing::on_thread([] { api().free(api().malloc(100)); });
        battery::child_expect(!arena_lazy(), "the arena was lazy before the limit");
        std::atomic<bool> go{false};
        std::vector<std::thread> workers;
        for (int t = 0; t < 4; ++t) {
            workers.emplace_back([&go, t] {
                while (!go.load()) std::this_thread::yield();
                for (int round = 0; round < 200; ++round) {
                    auto* p = static_cast<unsigned char*>(api().malloc(kSmallMax + 1));
                    battery::child_expect(p != nullptr, "a medium block was refused");
                    std::memset(p, t + round, kSmallMax + 1);
                    battery::child_expect(p[kSmallMax] == static_cast<unsigned char>(t + round), "a block was overwritten");
                    api().free(p);
                    heap_collect(testing::my_heap(), true);   // its segment back to the arena
                }
            });
        }
        go = true;
        rlimit limit{RLIM_INFINITY - 1, RLIM_INFINITY};
        battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
        battery::child_expect(arena_limited(), "the limit is not seen");
        for (std::thread& w : workers) w.join();
        battery::child_expect(arena_lazy(), "the arena did not go lazy");
        battery::child_expect(api().check().ok, "the heap check failed");
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

// [S4.67] A process that starts under an address-space limit gets a lazy arena: nothing
// reserved, a segment's slots mapped as far as it has made them writable, unmapped when it goes
// back. The case re-executes this binary under a 1 GiB limit (the arena of this process exists
// already), where it asks the kernel what is mapped (mincore fails on an unmapped page), puts
// pages of its own past the end of a segment's mapping and in the slot the next segment would
// claim, which the arena must step around and leave intact, and makes a segment's claim fit its
// header alone (a limit 16 KiB above what the process holds): the medium page's first blocks
// cannot be mapped, malloc says NULL and the page goes back; with room, the next medium block's
// page maps what it carves (S3.62).
// (Not under a sanitizer, whose shadow memory needs terabytes of address space.)
constexpr const char* kLazyCase = "under an address-space limit from the start the arena maps only what segments make writable";

bool mapped(const void* at, std::size_t bytes) {
    static unsigned char pages[64];
    return mincore(const_cast<void*>(at), bytes, pages) == 0;
}

void prove_lazy_arena() {
    testing::on_thread([] {
        void* small = api().malloc(100);
        REQUIRE(small != nullptr);
        REQUIRE(arena_lazy());
        Segment* s = segment_of(small);
        auto* base = reinterpret_cast<char*>(s);
        CHECK(mapped(base, kMetaSize));
        char* tail = base + kSegmentSize - kOsPage;
        CHECK_FALSE(mapped(tail, kOsPage));   // the slot's tail is not mapped: a page not ours goes there
        REQUIRE(mmap(tail, kOsPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == tail);
        *tail = 0x5b;
        // A page not ours in the slot after: the next segment's claim must leave it and go on.
        uint32_t next = arena_slot_of(small) + 1;
        void* foreign = mmap(arena_segment(next), kOsPage, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        REQUIRE(foreign == static_cast<void*>(arena_segment(next)));
        std::memset(foreign, 0x5a, kOsPage);
        // A medium block claims a segment whose header alone fits under the limit: no block.
        rlimit tight{battery::address_space_bytes() + 16 * 1024, RLIM_INFINITY};
        REQUIRE(setrlimit(RLIMIT_AS, &tight) == 0);
        void* refused = api().malloc(kSmallMax + 1);
        rlimit wide{std::size_t{1} << 30, RLIM_INFINITY};
        REQUIRE(setrlimit(RLIMIT_AS, &wide) == 0);
        CHECK(refused == nullptr);
        void* medium = api().malloc(kSmallMax + 1);   // its page maps its first blocks now
        REQUIRE(medium != nullptr);
        std::memset(medium, 1, kSmallMax + 1);
        uint32_t at = arena_slot_of(medium);
        CHECK(at != next);
        CHECK(arena_claimed(next, 1));   // kept claimed: no claim tries it again
        CHECK(static_cast<unsigned char*>(foreign)[kOsPage - 1] == 0x5a);
        battery::check_heap_ok(api());
        api().free(medium);
        api().free(small);
        heap_collect(testing::my_heap(), true);   // retired pages, purge, cache: all back
        CHECK_FALSE(mapped(arena_segment(at), kOsPage));   // given back: unmapped
        CHECK(mapped(foreign, kOsPage));
        CHECK(static_cast<unsigned char*>(foreign)[0] == 0x5a);
        CHECK_FALSE(mapped(base, kOsPage));   // the small block's segment went back: its header,
        CHECK(mapped(tail, kOsPage));         // not the page beyond what it mapped
        CHECK(*tail == 0x5b);
        munmap(foreign, kOsPage);
        munmap(tail, kOsPage);
    });
}

TEST_CASE(kLazyCase) {
    if (battery::kUnderSanitizer) return;
    if (std::getenv("EDU_LAZY_ARENA_PROCESS") != nullptr) return prove_lazy_arena();
    battery::ChildOutcome outcome = battery::run_in_child(
        [] {
            setenv("EDU_LAZY_ARENA_PROCESS", "1", 1);
            rlimit limit{std::size_t{1} << 30, RLIM_INFINITY};
            battery::child_expect(setrlimit(RLIMIT_AS, &limit) == 0, "setrlimit failed");
            std::string filter = std::string("--test-case=") + kLazyCase;
            // doctest writes its report on stdout: send it to stderr, which the parent reads.
            execl("/proc/self/exe", "arena_test", filter.c_str(), "--out=/dev/stderr", nullptr);
            battery::child_expect(false, "cannot re-execute the test");
        },
        60);
    INFO("lazy arena process: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
    CHECK(outcome.stderr_text.find("1 passed") != std::string::npos);
}

}  // namespace
}  // namespace edu::stage4
