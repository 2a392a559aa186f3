// tests/walker.cc: proves the heap walker shows the heap as the contract describes it: each
// live block of the driver's shadow model is visited exactly once as a `used` entry at its
// address with its usable size, used entries never overlap, nested entries lie inside an entry
// one level up, the used entries add up to what the checker counts, and a visitor that returns
// false ends the walk. It records every entry of a walk over a heap with holes and compares.
#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <vector>

#include "tests/support.h"

namespace edu::battery {
namespace {

struct Recorded {
    const char* kind;
    WalkState state;
    uintptr_t start;
    uintptr_t end;
    unsigned depth;
};

std::vector<Recorded> walk_all(const Api& heap) {
    std::vector<Recorded> entries;
    entries.reserve(4096);
    heap.walk(
        [](const WalkEntry& e, void* context) {
            auto start = reinterpret_cast<uintptr_t>(e.address);
            static_cast<std::vector<Recorded>*>(context)->push_back(
                {e.kind, e.state, start, start + e.size, e.depth});
            return true;
        },
        &entries);
    return entries;
}

std::string at(const Recorded& e) { return hex(reinterpret_cast<const void*>(e.start)); }

// A heap with holes: blocks of many sizes and alignments, every third one freed again.
struct HeapWithHoles {
    Shadow shadow;

    HeapWithHoles() {
        Rng rng(77);
        std::vector<Block> all;
        for (uint64_t id = 0; id < 300; ++id) {
            std::size_t size =
                rng.per_mille(50) ? rng.range(64 * 1024, 600 * 1024) : rng.range(0, 2000);
            std::size_t alignment = std::size_t{1} << rng.range(4, 13);
            void* p = id % 5 == 0 ? api().aligned_alloc(alignment, size) : api().malloc(size);
            REQUIRE(p != nullptr);
            all.push_back(Block{id, static_cast<unsigned char*>(p), size, api().usable_size(p)});
        }
        for (const Block& b : all) {
            if (b.id % 3 == 0) {
                api().free(b.ptr);
                continue;
            }
            std::string overlap = shadow.add(b);
            REQUIRE_MESSAGE(overlap.empty(), overlap);
            fill(b.ptr, b.id, 0, b.usable);
        }
    }

    ~HeapWithHoles() {
        for (const Block& b : shadow.live()) api().free(b.ptr);
    }
};

TEST_CASE("the walker visits every live block once as a used entry with its usable size") {
    HeapWithHoles heap;
    std::vector<Recorded> entries = walk_all(api());
    std::map<uintptr_t, std::vector<const Recorded*>> used_at;
    for (const Recorded& e : entries)
        if (e.state == WalkState::used) used_at[e.start].push_back(&e);
    for (const Block& b : heap.shadow.live()) {
        INFO("block id " << b.id << " at " << hex(b.ptr) << ", usable " << b.usable);
        auto found = used_at.find(reinterpret_cast<uintptr_t>(b.ptr));
        REQUIRE(found != used_at.end());
        REQUIRE(found->second.size() == 1);
        const Recorded& entry = *found->second.front();
        CHECK(entry.end - entry.start == api().usable_size(b.ptr));
    }
    // Walking reads the heap, never writes it.
    for (const Block& b : heap.shadow.live()) REQUIRE(first_mismatch(b.ptr, b.id, b.usable) == -1);
    require_heap_ok(api());
}

TEST_CASE("the used entries add up to the checker's live blocks and bytes") {
    HeapWithHoles heap;
    uint64_t used = 0, used_bytes = 0;
    for (const Recorded& e : walk_all(api())) {
        if (e.state != WalkState::used) continue;
        ++used;
        used_bytes += e.end - e.start;
    }
    CheckResult checked = require_heap_ok(api());
    CHECK(used == checked.live_blocks);
    CHECK(used_bytes == checked.live_bytes);
    CHECK(used >= heap.shadow.size());
}

TEST_CASE("used entries never overlap and nested entries lie inside their parents") {
    HeapWithHoles heap;
    std::vector<Recorded> entries = walk_all(api());
    REQUIRE(!entries.empty());
    std::vector<Recorded> used;
    std::map<unsigned, std::vector<Recorded>> by_depth;
    for (const Recorded& e : entries) {
        REQUIRE(e.kind != nullptr);
        CHECK(e.kind[0] != 0);
        REQUIRE(static_cast<unsigned>(e.state) < kWalkStateCount);
        CHECK(e.end >= e.start);
        if (e.state == WalkState::used) used.push_back(e);
        by_depth[e.depth].push_back(e);
    }
    auto by_start = [](const Recorded& a, const Recorded& b) { return a.start < b.start; };
    std::sort(used.begin(), used.end(), by_start);
    for (std::size_t i = 1; i < used.size(); ++i) {
        INFO("used entries at " << at(used[i - 1]) << " and " << at(used[i]));
        CHECK(used[i - 1].end <= used[i].start);
    }
    for (auto& [depth, list] : by_depth) std::sort(list.begin(), list.end(), by_start);
    REQUIRE(by_depth.begin()->first == 0);   // the outermost entries have depth 0
    for (const auto& [depth, list] : by_depth) {
        if (depth == 0) continue;
        auto parents = by_depth.find(depth - 1);
        REQUIRE(parents != by_depth.end());
        for (const Recorded& e : list) {
            INFO(std::string(e.kind) << " at " << at(e) << " (depth " << depth << ", "
                                     << e.end - e.start << " bytes)");
            const std::vector<Recorded>& up = parents->second;
            auto after = std::upper_bound(up.begin(), up.end(), e, by_start);
            REQUIRE(after != up.begin());
            const Recorded& parent = *std::prev(after);
            CHECK(parent.start <= e.start);
            CHECK(e.end <= parent.end);
        }
    }
}

TEST_CASE("a visitor that returns false stops the walk") {
    HeapWithHoles heap;
    const std::size_t total = walk_all(api()).size();
    REQUIRE(total >= 3);
    for (std::size_t stop_after : {std::size_t{1}, std::size_t{2}, total / 2}) {
        struct Counter {
            std::size_t seen, limit;
        } counter{0, stop_after};
        api().walk(
            [](const WalkEntry&, void* context) {
                auto* c = static_cast<Counter*>(context);
                return ++c->seen < c->limit;
            },
            &counter);
        CAPTURE(stop_after);
        CHECK(counter.seen == stop_after);
    }
    require_heap_ok(api());
}

}  // namespace
}  // namespace edu::battery
