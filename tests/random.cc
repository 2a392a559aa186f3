// tests/random.cc: proves long seeded mixes of malloc, calloc, realloc, aligned_alloc and free
// keep every block intact and the heap consistent: a shadow model fills each live block with
// its id's pattern and re-reads it before free or realloc, refuses overlapping blocks, and the
// stage's checker must agree with it every 64 operations. The failing seed is printed.
// Replay: bazel test //tests:stage1_battery --test_env=EDU_BATTERY_SEED=<seed> (one seed);
// --test_env=EDU_BATTERY_OPS=<n> sets the operations per seed (default 20000).
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "tests/support.h"

namespace edu::battery {
namespace {

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;

uint64_t ops_per_seed() {
    const char* text = std::getenv("EDU_BATTERY_OPS");
    if (text == nullptr || *text == 0) return 20000;
    char* end = nullptr;
    uint64_t ops = std::strtoull(text, &end, 0);
    INFO("EDU_BATTERY_OPS=" << std::string(text));
    REQUIRE((end != text && *end == 0 && ops > 0));
    return ops;
}

// One random workload against the single-threaded entry. Every decision comes from the seed,
// never from an address, so a seed replays the same operations on every run.
class Workload {
public:
    explicit Workload(uint64_t seed) : rng_(seed), baseline_(api().stats().live_blocks) {
        std::size_t max = stage().max_alignment;
        max_align_log2_ = 0;
        while ((std::size_t{2} << max_align_log2_) <= max && max_align_log2_ < 18)
            ++max_align_log2_;  // aligned requests go up to min(max_alignment, 256 KiB)
        shadow_.reserve(kTarget * 2);
    }

    void run(uint64_t ops) {
        for (op_ = 0; op_ < ops; ++op_) {
            unsigned chance = shadow_.size() < kTarget ? 600 : 400;
            if (shadow_.size() == 0 || rng_.per_mille(chance)) allocate();
            else release();
            if (op_ % 64 == 63) agree_with_checker();
        }
        drain();
    }

private:
    static constexpr std::size_t kTarget = 300;   // live blocks the mix hovers around

    // Tiny mostly, KiBs often, hundreds of KiB sometimes, MiBs now and then.
    std::size_t pick_size() {
        uint64_t r = rng_.below(1000);
        if (r < 550) return rng_.range(0, 128);
        if (r < 850) return rng_.range(129, 2 * kKiB);
        if (r < 970) return rng_.range(2 * kKiB + 1, 64 * kKiB);
        if (r < 997) return rng_.range(64 * kKiB + 1, 512 * kKiB);
        return rng_.range(kMiB, 4 * kMiB);
    }

    void allocate() {
        uint64_t kind = rng_.below(100);
        uint64_t id = next_id_++;
        std::size_t size = pick_size();
        std::size_t alignment = 16;
        void* p = nullptr;
        bool zeroed = false;
        if (kind < 55) {
            what_ = "malloc";
            p = api().malloc(size);
        } else if (kind < 72) {
            what_ = "calloc";
            std::size_t each = std::size_t{1} << rng_.below(5);   // 1..16
            std::size_t count = size / each;
            size = count * each;
            p = api().calloc(count, each);
            zeroed = true;
        } else if (kind < 92) {
            what_ = "aligned_alloc";
            uint64_t log2 = rng_.per_mille(960) ? rng_.range(0, 12) : rng_.range(13, max_align_log2_);
            alignment = std::size_t{1} << log2;
            p = api().aligned_alloc(alignment, size);
        } else {
            what_ = "realloc(nullptr)";
            p = api().realloc(nullptr, size);
        }
        INFO(context() << ": " << std::string(what_) << " of " << size << " bytes, alignment "
                       << alignment);
        REQUIRE(p != nullptr);
        REQUIRE(is_aligned(p, alignment));
        std::size_t usable = api().usable_size(p);
        REQUIRE(usable >= size);
        if (zeroed) REQUIRE(first_nonzero(p, size) == -1);
        record(Block{id, static_cast<unsigned char*>(p), size, usable});
    }

    void release() {
        std::size_t at = rng_.below(shadow_.size());
        Block old = shadow_.live()[at];
        {
            INFO(context() << ": block id " << old.id << " at " << hex(old.ptr) << " (" << old.size
                           << " bytes asked, " << old.usable << " usable) changed while live");
            REQUIRE(first_mismatch(old.ptr, old.id, old.usable) == -1);
        }
        if (rng_.per_mille(700)) {
            what_ = "free";
            shadow_.remove(at);
            api().free(old.ptr);
            return;
        }
        what_ = "realloc";
        std::size_t size = rng_.per_mille(20) ? 0 : pick_size();
        shadow_.remove(at);
        void* p = api().realloc(old.ptr, size);
        INFO(context() << ": realloc of id " << old.id << " from " << old.size << " to " << size);
        REQUIRE(p != nullptr);
        REQUIRE(is_aligned(p, 16));
        std::size_t usable = api().usable_size(p);
        REQUIRE(usable >= size);
        std::size_t kept = old.size < size ? old.size : size;
        REQUIRE(first_mismatch(p, old.id, kept) == -1);
        // Bytes past the old request are the program's only from now on: refill them.
        auto* bytes = static_cast<unsigned char*>(p);
        fill(bytes, old.id, kept, usable);
        record(Block{old.id, bytes, size, usable});
    }

    void record(const Block& block) {
        std::string overlap = shadow_.add(block);
        INFO(context() << ": " << std::string(what_));
        REQUIRE_MESSAGE(overlap.empty(), overlap);
        fill(block.ptr, block.id, 0, block.usable);
    }

    void agree_with_checker() {
        INFO(context() << ": heap check after " << std::string(what_));
        CheckResult result = require_heap_ok(api());
        CHECK(result.live_blocks == baseline_ + shadow_.size());
        CHECK(api().stats().live_blocks == baseline_ + shadow_.size());
    }

    void drain() {
        while (shadow_.size() > 0) {
            const Block b = shadow_.live().back();
            INFO("draining: block id " << b.id << " at " << hex(b.ptr));
            REQUIRE(first_mismatch(b.ptr, b.id, b.usable) == -1);
            shadow_.remove(shadow_.size() - 1);
            api().free(b.ptr);
        }
        CheckResult result = require_heap_ok(api());
        CHECK(result.live_blocks == baseline_);
        CHECK(api().stats().live_blocks == baseline_);
    }

    std::string context() const { return "operation " + std::to_string(op_); }

    Rng rng_;
    Shadow shadow_;
    uint64_t baseline_;
    uint64_t next_id_ = 0;
    uint64_t op_ = 0;
    unsigned max_align_log2_;
    const char* what_ = "start";
};

void run_seed(uint64_t seed, uint64_t ops) {
    INFO("seed " << seed << " (replay: --test_env=EDU_BATTERY_SEED=" << seed << ")");
    Workload(seed).run(ops);
}

TEST_CASE("random mixes of the whole family keep every block intact") {
    for (uint64_t seed : seeds({1, 2, 3, 0x5eed5eed}))
        run_seed(seed, ops_per_seed());
}

// Each option the stage offers (stage 1: fit policy, growth margin, trim threshold) changes
// how requests are served; every value must keep the same promises. `values` lists choices
// separated by '|'; a choice in angle brackets ("<bytes>") stands for a number and is tried
// with a few. Options are set between workloads, as the contract allows, then restored.
std::vector<std::string> choices(const std::string& values) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start <= values.size()) {
        std::size_t bar = values.find('|', start);
        if (bar == std::string::npos) bar = values.size();
        std::string value = values.substr(start, bar - start);
        start = bar + 1;
        if (value.empty()) continue;
        if (value.front() == '<') {
            for (const char* number : {"0", "4096", "1048576"}) out.push_back(number);
        } else {
            out.push_back(value);
        }
    }
    return out;
}

TEST_CASE("random mixes keep every block intact under every value of every option") {
    const Stage& s = stage();
    REQUIRE((s.option_count == 0 || s.options != nullptr));
    for (std::size_t i = 0; i < s.option_count; ++i) {
        const OptionInfo& option = s.options[i];
        const char* current = s.get_option(option.name);
        REQUIRE(current != nullptr);
        const std::string original = current;
        for (const std::string& value : choices(option.values)) {
            INFO("option " << std::string(option.name) << "=" << value);
            REQUIRE(s.set_option(option.name, value.c_str()));
            REQUIRE(std::string(s.get_option(option.name)) == value);
            for (uint64_t seed : seeds({100 + i})) run_seed(seed, ops_per_seed() / 4);
        }
        REQUIRE(s.set_option(option.name, original.c_str()));
        REQUIRE(std::string(s.get_option(option.name)) == original);
    }
}

TEST_CASE("unknown options and values are refused and change nothing") {
    const Stage& s = stage();
    CHECK_FALSE(s.set_option("no-such-option", "1"));
    CHECK(s.get_option("no-such-option") == nullptr);
    for (std::size_t i = 0; i < s.option_count; ++i) {
        const char* name = s.options[i].name;
        const std::string before = s.get_option(name);
        CHECK_FALSE(s.set_option(name, "no-such-value"));
        CHECK(std::string(s.get_option(name)) == before);
    }
}

// A ring of slots churned by a xorshift generator: an occupied slot is freed, an empty one gets
// 16..1039 bytes. Half the ring stays live, so frees land between live blocks all the time.
TEST_CASE("a churned ring of slots keeps the heap consistent") {
    for (uint64_t seed : seeds({7, 8})) {
        INFO("seed " << seed << " (replay: --test_env=EDU_BATTERY_SEED=" << seed << ")");
        for (std::size_t ring : {std::size_t{256}, std::size_t{4096}}) {
            CAPTURE(ring);
            uint64_t baseline = api().stats().live_blocks;
            std::vector<Block> slots(ring, Block{0, nullptr, 0, 0});
            uint32_t x = static_cast<uint32_t>(seed * 2654435761u) | 1u;
            for (uint64_t step = 0; step < 50000; ++step) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                Block& slot = slots[x % ring];
                if (slot.ptr != nullptr) {
                    INFO("step " << step << ": slot " << x % ring << " id " << slot.id);
                    REQUIRE(first_mismatch(slot.ptr, slot.id, slot.size) == -1);
                    api().free(slot.ptr);
                    slot.ptr = nullptr;
                } else {
                    std::size_t size = 16 + (x & 0x3ff);
                    void* p = api().malloc(size);
                    INFO("step " << step << ": malloc(" << size << ")");
                    REQUIRE(p != nullptr);
                    slot = Block{step, static_cast<unsigned char*>(p), size, size};
                    fill(p, step, 0, size);
                }
                if (step % 5000 == 4999) require_heap_ok(api());
            }
            for (Block& slot : slots) {
                if (slot.ptr == nullptr) continue;
                REQUIRE(first_mismatch(slot.ptr, slot.id, slot.size) == -1);
                api().free(slot.ptr);
            }
            CheckResult result = require_heap_ok(api());
            CHECK(result.live_blocks == baseline);
        }
    }
}

}  // namespace
}  // namespace edu::battery
