// tests/accounting.cc: proves the stage's statistics and checker tell the truth: counts move by
// exactly what the driver did, peaks never fall below current values, growth is paid for with
// OS calls, freed memory is reused, a stage that says it returns memory does, and once all is
// freed nothing is live. It compares Stats and CheckResult before and after known workloads.
#include <doctest/doctest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <vector>

#include <valgrind/valgrind.h>

#include "contract/mapped.h"
#include "tests/support.h"

namespace edu::battery {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

uint64_t os_calls(const Stats& s) {
    uint64_t total = 0;
    for (uint64_t n : s.os_calls) total += n;
    return total;
}

void require_peaks_hold(const Stats& s) {
    CHECK(s.peak_live_bytes >= s.live_bytes);
    CHECK(s.peak_footprint >= s.footprint);
    CHECK(s.footprint >= s.live_bytes);   // live bytes are carved out of the footprint
}

// Allocates `total` bytes in `chunk`-sized blocks, with no other allocation in between.
std::vector<void*> allocate_in_blocks(std::size_t total, std::size_t chunk) {
    std::vector<void*> blocks;
    blocks.reserve(total / chunk + 1);
    for (std::size_t done = 0; done < total; done += chunk) blocks.push_back(api().malloc(chunk));
    for (void* p : blocks) REQUIRE(p != nullptr);
    return blocks;
}

void free_all(std::vector<void*>& blocks) {
    for (void* p : blocks) api().free(p);
    blocks.clear();
}

TEST_CASE("statistics count every malloc and free and the bytes asked for") {
    const std::size_t sizes[] = {0, 1, 24, 100, 1000, 5000, 70000, 300000, 2 * kMiB};
    Stats before = api().stats();
    std::vector<void*> blocks;
    uint64_t requested = 0, usable = 0;
    for (std::size_t n : sizes) {
        void* p = api().malloc(n);
        REQUIRE(p != nullptr);
        blocks.push_back(p);
        requested += n;
        usable += api().usable_size(p);
    }
    Stats mid = api().stats();
    CHECK(mid.mallocs == before.mallocs + std::size(sizes));
    CHECK(mid.frees == before.frees);
    CHECK(mid.bytes_requested == before.bytes_requested + requested);
    CHECK(mid.live_blocks == before.live_blocks + std::size(sizes));
    CHECK(mid.live_bytes == before.live_bytes + usable);
    CHECK(mid.peak_live_bytes >= before.live_bytes + usable);
    require_peaks_hold(mid);
    free_all(blocks);
    Stats after = api().stats();
    CHECK(after.mallocs == mid.mallocs);
    CHECK(after.frees == before.frees + std::size(sizes));
    CHECK(after.bytes_requested == mid.bytes_requested);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
    CHECK(after.peak_live_bytes >= mid.live_bytes);   // a peak stays where it was
    require_peaks_hold(after);
}

TEST_CASE("calloc and aligned_alloc are counted like malloc") {
    Stats before = api().stats();
    void* a = api().calloc(10, 24);
    void* b = api().aligned_alloc(4096, 500);
    REQUIRE(a != nullptr);
    REQUIRE(b != nullptr);
    uint64_t usable = api().usable_size(a) + api().usable_size(b);
    Stats mid = api().stats();
    CHECK(mid.mallocs == before.mallocs + 2);
    CHECK(mid.bytes_requested == before.bytes_requested + 240 + 500);
    CHECK(mid.live_blocks == before.live_blocks + 2);
    CHECK(mid.live_bytes == before.live_bytes + usable);
    api().free(a);
    api().free(b);
    Stats after = api().stats();
    CHECK(after.frees == before.frees + 2);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
}

// contract/allocator.h: realloc(nullptr, n) is a malloc; any other realloc is a resize, which
// counts as neither a malloc nor a free, whether the block stays or moves (within a size class,
// across classes, between a stage's small and large domains).
TEST_CASE("realloc counts as a resize, in place or moved: mallocs and frees do not move") {
    void* p = api().realloc(nullptr, 24);
    REQUIRE(p != nullptr);
    Stats before = api().stats();
    const uint64_t others = before.live_bytes - api().usable_size(p);  // bytes of other blocks
    uint64_t requested = 0;
    for (std::size_t n : {std::size_t{20}, std::size_t{100}, std::size_t{600}, std::size_t{5000},
                          std::size_t{300000}, std::size_t{40}, std::size_t{0}, std::size_t{2000}}) {
        fill(p, 7, 0, api().usable_size(p) < n ? api().usable_size(p) : n);
        void* q = api().realloc(p, n);
        REQUIRE(q != nullptr);
        p = q;
        requested += n;
        Stats now = api().stats();
        INFO("after realloc to " << n << " bytes");
        CHECK(now.mallocs == before.mallocs);
        CHECK(now.frees == before.frees);
        CHECK(now.live_blocks == before.live_blocks);
        CHECK(now.live_bytes == others + api().usable_size(p));
        CHECK(now.bytes_requested == before.bytes_requested + requested);
    }
    api().free(p);
    Stats after = api().stats();
    CHECK(after.mallocs == before.mallocs);
    CHECK(after.frees == before.frees + 1);
    CHECK(after.live_blocks == before.live_blocks - 1);
}

// The used entries of a walk: address -> usable bytes (an address seen twice maps to 0).
std::map<uintptr_t, std::size_t> used_entries() {
    std::map<uintptr_t, std::size_t> used;
    api().walk(
        [](const WalkEntry& e, void* context) {
            auto& map = *static_cast<std::map<uintptr_t, std::size_t>*>(context);
            if (e.state == WalkState::used) {
                auto [at, fresh] = map.emplace(reinterpret_cast<uintptr_t>(e.address), e.size);
                if (!fresh) at->second = 0;
            }
            return true;
        },
        &used);
    return used;
}

// Alignments above 2 MiB, which stages 3 and 4 serve from mappings of their own
// (contract/mapped.h) rather than from their segments, give blocks like any other: counted in
// the statistics (a realloc of one is a resize), in the checker's totals and in the walk.
TEST_CASE("blocks of the largest alignments are counted, checked and walked like any other") {
    Stats before = api().stats();
    std::vector<void*> blocks;
    uint64_t requested = 0, usable = 0;
    for (std::size_t alignment = 4 * kMiB; alignment <= stage().max_alignment; alignment *= 4) {
        for (std::size_t size : {std::size_t{100}, 3 * kMiB}) {
            void* p = api().aligned_alloc(alignment, size);
            REQUIRE(p != nullptr);
            REQUIRE(reinterpret_cast<uintptr_t>(p) % alignment == 0);
            blocks.push_back(p);
            requested += size;
            usable += api().usable_size(p);
        }
    }
    REQUIRE(!blocks.empty());
    Stats mid = api().stats();
    CHECK(mid.mallocs == before.mallocs + blocks.size());
    CHECK(mid.bytes_requested == before.bytes_requested + requested);
    CHECK(mid.live_blocks == before.live_blocks + blocks.size());
    CHECK(mid.live_bytes == before.live_bytes + usable);
    require_peaks_hold(mid);
    CheckResult checked = require_heap_ok(api());
    CHECK(checked.live_blocks == mid.live_blocks);
    CHECK(checked.live_bytes == mid.live_bytes);
    std::map<uintptr_t, std::size_t> used = used_entries();
    for (void* p : blocks) {
        INFO("block at " << hex(p));
        auto found = used.find(reinterpret_cast<uintptr_t>(p));
        REQUIRE(found != used.end());
        CHECK(found->second == api().usable_size(p));
    }
    // A resize: the block may move out of its mapping, and mallocs and frees stand still.
    void* moved = api().realloc(blocks.back(), 200);
    REQUIRE(moved != nullptr);
    Stats resized = api().stats();
    CHECK(resized.mallocs == mid.mallocs);
    CHECK(resized.frees == mid.frees);
    CHECK(resized.live_blocks == mid.live_blocks);
    CHECK(resized.bytes_requested == mid.bytes_requested + 200);
    blocks.back() = moved;
    usable = 0;
    for (void* p : blocks) usable += api().usable_size(p);
    CHECK(resized.live_bytes == before.live_bytes + usable);
    require_heap_ok(api());
    free_all(blocks);
    Stats after = api().stats();
    CHECK(after.frees == before.frees + mid.mallocs - before.mallocs);
    CHECK(after.live_blocks == before.live_blocks);
    CHECK(after.live_bytes == before.live_bytes);
    require_peaks_hold(after);
    require_heap_ok(api());
}

// A block of the largest alignments that a stage keeps in a mapping of its own (stages 3 and 4,
// contract/mapped.h) keeps its alignment through a realloc to a large size ([S3.64], [S4.70]):
// shrunk, it stays where it is, one mremap and no munmap, its footprint smaller; grown with a
// page of another mapping right past it, it cannot grow in place, and its pages may not move
// (the kernel would keep page alignment only), so realloc copies it: bytes kept, that page
// untouched, and the new block, if mapped, aligned. A stage that maps no such block skips it.
TEST_CASE("a mapped block of the largest alignments stays aligned when realloc resizes it") {
    int owner = stage().number;
    uint64_t blocks = mapped_totals(owner).blocks;
    auto* p = static_cast<unsigned char*>(api().aligned_alloc(4 * kMiB, 3 * kMiB));
    REQUIRE(p != nullptr);
    if (mapped_totals(owner).blocks != blocks + 1) {
        MESSAGE(std::string(stage().name) << " keeps its largest alignments in its own heap");
        api().free(p);
        return;
    }
    std::memset(p, 0x3c, 3 * kMiB);
    MappedTotals before = mapped_totals(owner);
    uint64_t footprint = api().stats().footprint;
    auto* q = static_cast<unsigned char*>(api().realloc(p, 2 * kMiB + 512 * kKiB));
    REQUIRE(q == p);
    MappedTotals after = mapped_totals(owner);
    CHECK(mapped_calls(after, OsCall::mremap) == mapped_calls(before, OsCall::mremap) + 1);
    CHECK(mapped_calls(after, OsCall::munmap) == mapped_calls(before, OsCall::munmap));
    CHECK(api().usable_size(q) == 2 * kMiB + 512 * kKiB);
    CHECK(api().stats().footprint == footprint - 512 * kKiB);
    CHECK((q[0] == 0x3c && q[2 * kMiB + 512 * kKiB - 1] == 0x3c));

    auto* past = q + api().usable_size(q);
    void* wall = mmap(past, 4 * kKiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    bool walled = wall == past;   // else something is there already: no room either way
    if (wall != MAP_FAILED && !walled) munmap(wall, 4 * kKiB);
    if (walled) std::memset(wall, 0x5a, 4 * kKiB);
    auto* r = static_cast<unsigned char*>(api().realloc(q, 4 * kMiB));
    REQUIRE(r != nullptr);
    CHECK(r != q);
    CHECK((r[0] == 0x3c && r[2 * kMiB + 512 * kKiB - 1] == 0x3c));
    CHECK((mapped_block_size(owner, r) == 0 || reinterpret_cast<uintptr_t>(r) % (4 * kMiB) == 0));
    if (walled) {
        CHECK((past[0] == 0x5a && past[4 * kKiB - 1] == 0x5a));
        munmap(wall, 4 * kKiB);
    }
    api().free(r);
    require_heap_ok(api());
}

TEST_CASE("the checker and the statistics agree on live blocks and bytes") {
    std::vector<void*> blocks;
    Rng rng(42);
    for (int i = 0; i < 500; ++i) {
        blocks.push_back(api().malloc(rng.range(0, 3000)));
        REQUIRE(blocks.back() != nullptr);
    }
    for (std::size_t i = 0; i < blocks.size(); i += 3) {   // leave holes between live blocks
        api().free(blocks[i]);
        blocks[i] = nullptr;
    }
    CheckResult checked = require_heap_ok(api());
    Stats s = api().stats();
    CHECK(checked.live_blocks == s.live_blocks);
    CHECK(checked.live_bytes == s.live_bytes);
    CHECK(checked.free_blocks > 0);   // a third of the blocks were freed between live ones
    for (void* p : blocks) api().free(p);
}

TEST_CASE("growing the heap is paid for with calls to the operating system") {
    Stats before = api().stats();
    // More than the stage holds now, so it must ask the OS for more.
    std::size_t total = before.footprint + 8 * kMiB;
    std::vector<void*> blocks = allocate_in_blocks(total, 256 * kKiB);
    Stats grown = api().stats();
    CHECK(grown.footprint > before.footprint);
    CHECK(grown.footprint >= total);
    CHECK(os_calls(grown) > os_calls(before));
    CHECK(grown.peak_footprint >= grown.footprint);
    require_peaks_hold(grown);
    free_all(blocks);
    require_peaks_hold(api().stats());
    require_heap_ok(api());
}

// A stage that maps its memory inaccessible and makes it writable as pages are used (stages 3
// and 4, [S3.47]) must not pay one mprotect per 64 KiB page: 16 MiB of 1000-byte blocks, taken
// in address order, spans 256 such pages and may cost at most a quarter as many calls. A stage
// that never calls mprotect passes trivially.
TEST_CASE("filling 16 MiB with small blocks makes memory writable in few, growing steps") {
    uint64_t before = api().stats().os_calls[static_cast<unsigned>(OsCall::mprotect)];
    std::vector<void*> blocks = allocate_in_blocks(16 * kMiB, 1000);
    uint64_t calls = api().stats().os_calls[static_cast<unsigned>(OsCall::mprotect)] - before;
    CAPTURE(calls);
    CHECK(calls <= 16 * kMiB / (64 * kKiB) / 4);
    free_all(blocks);
    require_heap_ok(api());
}

TEST_CASE("a stage that returns memory gives back most of a 64 MiB heap once it is freed") {
    std::vector<void*> blocks = allocate_in_blocks(64 * kMiB, kMiB);
    Stats peak = api().stats();
    free_all(blocks);
    Stats after = api().stats();
    CAPTURE(peak.footprint);
    CAPTURE(after.footprint);
    CHECK(after.peak_footprint >= peak.footprint);
    require_peaks_hold(after);
    require_heap_ok(api());
    CHECK(peak.footprint >= 64 * kMiB);
    if (stage().returns_memory) CHECK(after.footprint + 32 * kMiB <= peak.footprint);
}

// Resident bytes of this process, from /proc/self/statm (its second field, in pages).
uint64_t resident_bytes() {
    unsigned long size = 0, resident = 0;
    FILE* f = std::fopen("/proc/self/statm", "r");
    if (f == nullptr) return 0;
    int read = std::fscanf(f, "%lu %lu", &size, &resident);
    std::fclose(f);
    return read == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// A stage may keep freed large blocks for reuse, but only a bounded amount: a program that
// fills and frees 192 MiB of huge blocks, then makes no further call, must see at least half of
// what the fill added to its resident set go away (measured by the kernel, not by the stage's
// own statistics; a ratio, because a sanitizer's shadow memory multiplies both). In a child,
// so the parent's heap and threads do not blur the numbers.
TEST_CASE("huge blocks freed by a program that then goes quiet leave the resident set") {
    if (!stage().returns_memory) return;
    // Under valgrind the resident set is valgrind's: it keeps the pages it shadowed.
    if (RUNNING_ON_VALGRIND) return;
#if defined(__SANITIZE_THREAD__)
    // Under ThreadSanitizer the resident set also holds the shadow of every byte the memset
    // wrote; TSan drops that shadow on munmap but not when a brk heap trims or madvises its
    // pages (stages 1 and 2 keep 780 MiB resident there), so the figure says nothing here.
    return;
#endif
    ChildOutcome outcome = run_in_child([] {
        uint64_t before = resident_bytes();
        std::vector<void*> blocks;
        for (int i = 0; i < 8; ++i) {
            void* p = api().malloc(24 * kMiB);
            child_expect(p != nullptr, "malloc(24 MiB) failed");
            std::memset(p, 0x5a, 24 * kMiB);
            blocks.push_back(p);
        }
        uint64_t peak = resident_bytes();
        for (void* p : blocks) api().free(p);
        uint64_t after = resident_bytes();
        child_expect(peak >= before + 150 * kMiB, "filling 192 MiB did not raise the resident set");
        if (after - before > (peak - before) / 2) {
            std::fprintf(stderr, "resident: %llu MiB before, %llu at the peak, %llu after freeing\n",
                         static_cast<unsigned long long>(before / kMiB),
                         static_cast<unsigned long long>(peak / kMiB),
                         static_cast<unsigned long long>(after / kMiB));
            child_expect(false, "more than half of it stayed resident after everything was freed");
        }
    });
    INFO("child: " << outcome.describe());
    CHECK(outcome.exited);
    CHECK(outcome.exit_code == 0);
}

TEST_CASE("freed memory is reused rather than fetched again") {
    std::vector<void*> blocks = allocate_in_blocks(32 * kMiB, 64 * kKiB);
    Stats first = api().stats();
    free_all(blocks);
    for (int round = 0; round < 3; ++round) {
        blocks = allocate_in_blocks(32 * kMiB, 64 * kKiB);
        Stats again = api().stats();
        CAPTURE(round);
        CHECK(again.footprint <= first.footprint + first.footprint / 4);
        free_all(blocks);
    }
    require_heap_ok(api());
}

TEST_CASE("once everything is freed the checker and the statistics report nothing live") {
    std::vector<void*> blocks;
    for (std::size_t n : {std::size_t{0}, std::size_t{8}, std::size_t{300}, 40 * kKiB, 3 * kMiB})
        blocks.push_back(api().malloc(n));
    blocks.push_back(api().calloc(100, 3));
    blocks.push_back(api().aligned_alloc(64 * kKiB, 10));
    blocks.push_back(api().realloc(api().malloc(10), 5000));
    for (void* p : blocks) REQUIRE(p != nullptr);
    free_all(blocks);
    // The battery frees all it allocates, and nothing else in this process uses the stage.
    CheckResult checked = require_heap_ok(api());
    CHECK(checked.live_blocks == 0);
    CHECK(checked.live_bytes == 0);
    Stats s = api().stats();
    CHECK(s.live_blocks == 0);
    CHECK(s.live_bytes == 0);
    CHECK(s.mallocs == s.frees);
}

}  // namespace
}  // namespace edu::battery
