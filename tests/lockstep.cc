// tests/lockstep.cc: proves that stages 3 and 4 make the same decisions for one thread. Every
// trace of traces/ and a random workload (malloc, free, realloc, calloc, aligned_alloc) are
// replayed through both stages side by side, one operation at a time; after each operation
// the two answers must name the same block, and the two heap walks must show the same pages.
//
// The stages map their segments at different addresses, so everything is compared relatively:
// an answer is (segment ordinal, page index, offset from the page's first block, block size,
// page kind); a walk is the set of pages of the segments in use, each with its kind, its block
// size and the state (used or free) of every carved block. A segment gets its ordinal when an
// answer first lands in it, the same moment in both stages, and loses it when it holds no page
// in use. Three differences are by design, and the harness normalises exactly those:
//   * Stage 4's segment metadata is 12 KiB, stage 3's 8 KiB ([S4.5]: wider page records), so
//     page 0 of a small or medium segment holds fewer blocks in stage 4, and a page 0 that
//     fills up would send the next request elsewhere in one stage only. The harness fills
//     every page 0 with ballast right after the step that put it to use (each stage up to
//     its own capacity), never frees the ballast, and leaves ballast out of every comparison.
//     For the same reason a request just below 4 MiB is a large block in one stage and a huge
//     one in the other; the random workload makes none, and segment sizes of huge blocks (the
//     mapping's length, or whole arena slots) and page 0's area are not compared.
//   * A block aligned above 2 MiB lies in a mapping of its own in both stages (contract/mapped.h,
//     [S3.56], [S4.62]), at an address of the system's choosing: the walk shows the mapping at
//     depth 0, and it is compared as an ordinal (given when an answer first names its block,
//     like a segment's), its block's usable size and its footprint.
//   * The delays differ ([S3.34], [S3.14]: stage 3 purges dirty pages after 1024 generic
//     calls and drops cached segments after 8192; stage 4 waits 4096 and 32768), and a page
//     request prefers a dirty page. So the harness purges dirty pages and empties the segment
//     cache of both stages after every step: neither stage then holds a dirty page or a cached
//     segment, and page choice depends on nothing but the queues and the segments in use.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "stage3_segments/segment.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/segment.h"
#include "tests/support.h"
#include "tools/diff/workload.h"

namespace edu::lockstep {
namespace {

constexpr uintptr_t kSegmentBytes = uintptr_t{1} << 22;   // both stages: 4 MiB, aligned

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

enum Kind : int { small, medium, large, huge, mapping };
constexpr const char* kKindNames[] = {"small", "medium", "large", "huge", "mapping"};

// One page as the walk shows it, in relative terms; or one mapping of contract/mapped.h, as a
// page of kind `mapping` whose area is the mapping's footprint and whose one block is in use.
struct PageView {
    uint32_t segment = 0;          // ordinal (of the segment, or of the mapping)
    uint32_t index = 0;            // position in the segment (a mapping: 0)
    int kind = small;
    bool in_use = false;
    uint64_t area = 0;             // bytes of the page's area (0: page 0, whose area differs)
    uint64_t block_size = 0;
    std::string blocks;            // 'u' or 'f' per carved block that is not ballast
    std::vector<uint32_t> where;   // page 0: the index of each of those blocks (others: 0..n-1)
    uint64_t uncarved = 0;         // bytes not yet carved
    bool operator==(const PageView&) const = default;
};

std::string describe(const PageView& v) {
    char line[200];
    if (v.kind == mapping) {
        std::snprintf(line, sizeof line, "mapping %u: block %llu B, footprint %llu", v.segment,
                      static_cast<unsigned long long>(v.block_size), static_cast<unsigned long long>(v.area));
        return line;
    }
    std::snprintf(line, sizeof line, "segment %u page %u (%s, %s): block %llu B, area %llu, uncarved %llu, blocks ",
                  v.segment, v.index, kKindNames[v.kind], v.in_use ? "in use" : "free",
                  static_cast<unsigned long long>(v.block_size), static_cast<unsigned long long>(v.area),
                  static_cast<unsigned long long>(v.uncarved));
    std::string s = line;
    for (std::size_t i = 0; i < v.blocks.size(); ++i)
        s += std::to_string(v.where.empty() ? i : v.where[i]) + v.blocks[i] + " ";
    return s;
}

// What a stage's walk says of one segment and its pages, in its own addresses.
struct RawPage {
    uintptr_t lo = 0, hi = 0;      // the page's area
    bool in_use = false;
    uintptr_t start = 0;           // its first block
    uint64_t block_size = 0;
    std::string blocks;            // 'u' or 'f' per carved block, in address order
    uint64_t uncarved = 0;
};
struct RawSegment {
    uintptr_t base = 0;
    uint64_t size = 0;
    std::vector<RawPage> pages;
    int kind() const {
        if (pages.size() == 64) return small;
        if (pages.size() == 8) return medium;
        return size > kSegmentBytes ? huge : large;
    }
    bool holds_pages() const {
        return std::any_of(pages.begin(), pages.end(), [](const RawPage& p) { return p.in_use; });
    }
};

// A mapping of contract/mapped.h as the walk shows it: its footprint, and its block.
struct RawMapping {
    uintptr_t block = 0;
    uint64_t usable = 0;
    uint64_t footprint = 0;
};

// Collects a walk into `segments` and `mappings`. Entry kinds are told apart by their first
// letter ("segment", "segment metadata", "page", "block", "uncarved"; in a mapping, "mapping
// record" and "block"): this runs for every block after every step, so it keeps the page it
// is filling at hand.
struct Collector {
    std::vector<RawSegment>* segments;
    std::vector<RawMapping>* mappings;
    RawPage* page = nullptr;
    RawMapping* mapping = nullptr;   // the depth-0 entry the walk is in is a mapping
};

bool collect(const WalkEntry& e, void* context) {
    auto* c = static_cast<Collector*>(context);
    if (e.depth == 0 && std::strcmp(e.kind, "mapping") == 0) {
        c->mappings->push_back(RawMapping{0, 0, e.size});
        c->mapping = &c->mappings->back();
        return true;
    }
    if (e.depth == 0) c->mapping = nullptr;
    if (c->mapping != nullptr) {   // its record's page, then its block
        if (e.kind[0] == 'b') c->mapping->block = addr(e.address), c->mapping->usable = e.size;
        return true;
    }
    switch (e.depth == 0 ? 'S' : e.kind[0]) {
        case 'b':
            if (c->page->blocks.empty()) c->page->start = addr(e.address), c->page->block_size = e.size;
            c->page->blocks.push_back(e.state == WalkState::used ? 'u' : 'f');
            break;
        case 'p': {
            std::vector<RawPage>& pages = c->segments->back().pages;
            pages.push_back(RawPage{addr(e.address), addr(e.address) + e.size, e.state == WalkState::meta, 0, 0, {}, 0});
            c->page = &pages.back();
            break;
        }
        case 'u': c->page->uncarved = e.size; break;
        case 'S':
            if (std::strcmp(e.kind, "segment") != 0) FAIL("a depth-0 entry the walk could not read: " << std::string(e.kind));
            c->segments->push_back(RawSegment{addr(e.address), e.size, {}});
            c->segments->back().pages.reserve(64);
            break;
        default: break;   // the segment's metadata
    }
    return true;
}

// One stage under replay: its entry points, its segments' ordinals, its ballast.
struct Side {
    const char* name;
    const Api* api;
    void (*purge)();                         // every dirty page and cached segment, now
    std::map<uintptr_t, uint32_t> ordinal;   // segment base -> ordinal
    uint32_t next_ordinal = 0;
    std::map<uintptr_t, std::string> ballast;   // segment -> 'b' per ballast block of its page 0
    std::vector<RawSegment> segments;        // the last walk
    std::vector<RawMapping> mappings;        // its mappings

    void walk() {
        segments.clear();
        mappings.clear();
        Collector c{&segments, &mappings};
        api->walk(&collect, &c);
    }
    const RawSegment* segment_at(uintptr_t base) const {
        for (const RawSegment& s : segments)
            if (s.base == base) return &s;
        return nullptr;
    }
    const RawMapping* mapping_of(uintptr_t block) const {
        for (const RawMapping& m : mappings)
            if (m.block == block) return &m;
        return nullptr;
    }
};

void purge_stage3() {
    stage3::segment_purge(true);
    stage3::segment_cache_collect(true);
}
void purge_stage4() {
    stage4::Heap* heap = stage4::t_heap;
    if (heap == &stage4::g_empty_heap) return;
    stage4::segment_purge(heap, true);
    stage4::segment_cache_collect(heap, true);
}

// The relative form of an answer, from the walk taken after the operation.
std::string relative_answer(Side& side, const void* p) {
    if (p == nullptr) return "null";
    if (side.mapping_of(addr(p))) {
        auto [at, fresh] = side.ordinal.try_emplace(addr(p), side.next_ordinal);
        if (fresh) ++side.next_ordinal;
        return "mapping " + std::to_string(at->second) + ", block " + std::to_string(side.api->usable_size(p)) + " B";
    }
    uintptr_t base = addr(p) & ~(kSegmentBytes - 1);
    const RawSegment* s = side.segment_at(base);
    if (!s) return std::string("a block in no segment of the walk: ") + battery::hex(p);
    auto [at, fresh] = side.ordinal.try_emplace(base, side.next_ordinal);
    if (fresh) ++side.next_ordinal;
    for (uint32_t i = 0; i < s->pages.size(); ++i) {
        const RawPage& page = s->pages[i];
        if (addr(p) < page.lo || addr(p) >= page.hi) continue;
        char text[160];
        std::snprintf(text, sizeof text, "segment %u page %u (%s) offset %llu, block %zu B", at->second, i,
                      kKindNames[s->kind()], static_cast<unsigned long long>(addr(p) - page.start),
                      side.api->usable_size(p));
        return text;
    }
    return std::string("a block in no page of its segment: ") + battery::hex(p);
}

// Fills page 0 of every small or medium segment that is in use and holds no ballast yet, up to
// the page's capacity in this stage (see the file's comment), then walks again.
void fill_pages_zero(Side& side) {
    bool any = false;
    for (const RawSegment& s : side.segments) {
        if (s.kind() > medium || !s.pages[0].in_use || side.ballast.count(s.base)) continue;
        const RawPage& page = s.pages[0];
        uint64_t room = page.uncarved / page.block_size;
        room += static_cast<uint64_t>(std::count(page.blocks.begin(), page.blocks.end(), 'f'));
        std::string& mask = side.ballast[s.base];
        for (uint64_t i = 0; i < room; ++i) {
            void* p = side.api->malloc(page.block_size);
            if (addr(p) < page.lo || addr(p) >= page.hi) FAIL(side.name << ": ballast left page 0");
            std::size_t k = (addr(p) - page.start) / page.block_size;
            if (mask.size() <= k) mask.resize(k + 1, ' ');
            mask[k] = 'b';
        }
        any = true;
    }
    if (any) side.walk();
}

// The walk in relative terms. Segments without a page in use lose their ordinal here.
std::vector<PageView> relative_walk(Side& side) {
    std::vector<PageView> views;
    for (const RawSegment& s : side.segments) {
        if (!s.holds_pages()) {
            side.ordinal.erase(s.base);
            continue;
        }
        auto at = side.ordinal.find(s.base);
        if (at == side.ordinal.end()) FAIL(side.name << ": a segment in use that no answer reached");
        for (uint32_t i = 0; i < s.pages.size(); ++i) {
            const RawPage& page = s.pages[i];
            PageView v;
            v.segment = at->second;
            v.index = i;
            v.kind = s.kind();
            v.in_use = page.in_use;
            v.area = i == 0 ? 0 : page.hi - page.lo;
            v.block_size = page.block_size;
            v.uncarved = page.uncarved;
            if (i != 0) {
                v.blocks = page.blocks;
            } else {   // ballast lies in pages 0 only
                auto mask = side.ballast.find(s.base);
                for (uint32_t k = 0; k < page.blocks.size(); ++k) {
                    if (mask != side.ballast.end() && k < mask->second.size() && mask->second[k] == 'b') continue;
                    v.blocks += page.blocks[k];
                    v.where.push_back(k);
                }
            }
            views.push_back(std::move(v));
        }
    }
    for (const RawMapping& m : side.mappings) {
        auto at = side.ordinal.find(m.block);
        if (at == side.ordinal.end()) FAIL(side.name << ": a mapping that no answer reached");
        PageView v;
        v.segment = at->second;
        v.kind = mapping;
        v.in_use = true;
        v.area = m.footprint;
        v.block_size = m.usable;
        v.blocks = "u";
        views.push_back(std::move(v));
    }
    std::sort(views.begin(), views.end(),
              [](const PageView& a, const PageView& b) { return a.segment != b.segment ? a.segment < b.segment : a.index < b.index; });
    // Forget ordinals of segments and mappings that are gone from the walk.
    for (auto it = side.ordinal.begin(); it != side.ordinal.end();)
        it = side.segment_at(it->first) || side.mapping_of(it->first) ? std::next(it) : side.ordinal.erase(it);
    return views;
}

// One request, applied to a stage's blocks (indexed by the workload's ids).
struct Request {
    enum Kind { malloc, free, realloc, calloc, aligned } kind;
    uint32_t id;
    uint64_t size;
    uint64_t alignment;   // aligned
    std::string text() const {
        static constexpr const char* kNames[] = {"malloc", "free", "realloc", "calloc", "aligned_alloc"};
        return std::string(kNames[kind]) + " id " + std::to_string(id) + " size " + std::to_string(size) +
               (kind == aligned ? " alignment " + std::to_string(alignment) : "");
    }
};

void* apply(Side& side, std::vector<void*>& blocks, const Request& r) {
    if (blocks.size() <= r.id) blocks.resize(r.id + 1, nullptr);
    void*& slot = blocks[r.id];
    void* answer = nullptr;
    switch (r.kind) {
        case Request::malloc: answer = slot = side.api->malloc(r.size); break;
        case Request::calloc: answer = slot = side.api->calloc(1, r.size); break;
        case Request::aligned: answer = slot = side.api->aligned_alloc(r.alignment, r.size); break;
        case Request::free: side.api->free(slot), slot = nullptr; break;
        case Request::realloc: {
            void* q = side.api->realloc(slot, r.size);
            if (q || r.size == 0) slot = q;
            answer = q;
            break;
        }
    }
    return answer;
}

// Replays `requests` through both stages in step; stops at the first difference.
void replay(const std::string& name, const std::vector<Request>& requests) {
    static Side three{"stage3_segments", nullptr, &purge_stage3, {}, 0, {}, {}, {}};
    static Side four{"stage4_threads", nullptr, &purge_stage4, {}, 0, {}, {}, {}};
    three.api = find_stage(3)->single_thread;
    four.api = find_stage(4)->single_thread;
    std::vector<void*> blocks3, blocks4;
    for (std::size_t step = 0; step < requests.size(); ++step) {
        const Request& r = requests[step];
        void* a3 = apply(three, blocks3, r);
        void* a4 = apply(four, blocks4, r);
        std::string answer3, answer4;
        for (Side* side : {&three, &four}) {
            side->purge();
            side->walk();
            (side == &three ? answer3 : answer4) = relative_answer(*side, side == &three ? a3 : a4);
            fill_pages_zero(*side);
        }
        INFO(name << " step " << step << ": " << r.text());
        if (r.kind != Request::free && answer3 != answer4) FAIL("the answers differ: " << answer3 << " / " << answer4);
        std::vector<PageView> walk3 = relative_walk(three), walk4 = relative_walk(four);
        if (walk3 != walk4) {
            std::string diff;
            for (std::size_t i = 0; i < std::max(walk3.size(), walk4.size()) && diff.size() < 4000; ++i) {
                std::string x = i < walk3.size() ? describe(walk3[i]) : "(none)";
                std::string y = i < walk4.size() ? describe(walk4[i]) : "(none)";
                if (x != y) diff += "\n  stage 3: " + x + "\n  stage 4: " + y;
            }
            FAIL("the walks differ:" << diff);
        }
    }
    // Leave no workload block behind: the next replay starts from the same empty queues.
    for (std::size_t id = 0; id < blocks3.size(); ++id) {
        three.api->free(blocks3[id]);
        four.api->free(blocks4[id]);
    }
}

std::vector<Request> from_trace(const std::string& path) {
    std::ifstream in(path);
    REQUIRE_MESSAGE(in.good(), "cannot read " << path);
    diff::Workload w;
    std::string error;
    REQUIRE_MESSAGE(diff::parse_trace(in, path, &w, &error), error);
    std::vector<Request> out;
    for (const diff::Op& op : w.ops) {
        if (op.id == diff::kNoBlock) continue;   // free(NULL): nothing to compare
        Request::Kind kind = op.kind == diff::Op::alloc ? Request::malloc
                             : op.kind == diff::Op::free ? Request::free
                                                         : Request::realloc;
        out.push_back(Request{kind, op.id, op.size, 0});
    }
    return out;
}

// A random single-thread workload: mostly small blocks, some medium, large and huge ones,
// every call of the family (a few aligned_alloc calls above 2 MiB), a live set of a few hundred
// blocks.
std::vector<Request> random_workload(uint64_t seed, std::size_t count) {
    battery::Rng rng(seed);
    std::vector<Request> out;
    std::vector<uint32_t> live, dead;
    uint32_t ids = 0;
    auto size = [&rng]() -> uint64_t {
        uint64_t roll = rng.below(1000);
        if (roll < 700) return rng.range(0, 1024);
        if (roll < 930) return rng.range(1025, 64 * 1024);
        if (roll < 995) return rng.range(64 * 1024 + 1, 1536 * 1024);
        return rng.range(5 << 20, 9 << 20);   // huge, far from the large/huge border
    };
    auto alignment = [&rng]() -> uint64_t {   // 1 in 25: 4 or 8 MiB, a mapping of its own ([S3.56])
        return rng.below(25) == 0 ? uint64_t{4} << 20 << rng.below(2) : uint64_t{32} << rng.below(12);
    };
    while (out.size() < count) {
        uint64_t roll = rng.below(100);
        bool grow = live.size() < 50 || (live.size() < 400 && roll < 52);
        if (!grow) {
            std::size_t k = rng.below(live.size());
            uint32_t id = live[k];
            if (roll < 80) {
                out.push_back(Request{Request::free, id, 0, 0});
                live[k] = live.back();
                live.pop_back();
                dead.push_back(id);
            } else {
                out.push_back(Request{Request::realloc, id, size(), 0});
            }
            continue;
        }
        uint32_t id = dead.empty() ? ids++ : dead.back();
        if (!dead.empty()) dead.pop_back();
        live.push_back(id);
        if (roll < 8) out.push_back(Request{Request::calloc, id, size(), 0});
        else if (roll < 14) out.push_back(Request{Request::aligned, id, size(), alignment()});
        else out.push_back(Request{Request::malloc, id, size(), 0});
    }
    return out;
}

TEST_CASE("stages 3 and 4 give the same answers and walks on every trace of the course") {
    REQUIRE(find_stage(3) != nullptr);
    REQUIRE(find_stage(4) != nullptr);
    for (const char* trace : {"short1-basic", "short2-coalesce", "short3-realloc", "short4-worked", "binary-bal",
                              "binary2-bal", "coalescing", "fifo", "large", "lifo", "ltrace-awk-services",
                              "ltrace-python-json", "phases", "random-small", "random-wide", "realloc-grow",
                              "realloc-mixed"}) {
        std::string path = std::string("traces/") + trace + ".rep";
        replay(path, from_trace(path));
    }
}

TEST_CASE("stages 3 and 4 give the same answers and walks on a random workload of every call") {
    for (uint64_t seed : battery::seeds({11, 12})) replay("random seed " + std::to_string(seed), random_workload(seed, 20000));
}

}  // namespace
}  // namespace edu::lockstep

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    return context.run();
}
