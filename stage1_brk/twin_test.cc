// stage1_brk/twin_test.cc: proves the NASM core and its C++ twin are the same algorithm.
// Both run on a break of their own (reserved_break.h), laid out identically, and receive the
// same seeded stream of operations: malloc, free, realloc, memalign, bad frees, a foreign sbrk
// user, a break that jumps below the heap, failing sbrk, policy switches. Every result is
// compared as an offset from the break's base; every 512 operations so are the full heap walks
// and both checkers' verdicts.
// More than 10^6 operations per run. Reproduce one seed with EDU_TWIN_SEED=<n>.
#include <doctest/doctest.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "stage1_brk/core.h"
#include "stage1_brk/reserved_break.h"
#include "stage1_brk/twin.h"

namespace edu::stage1 {
namespace {

ReservedBreak* g_core_break = nullptr;
const uint64_t kDefaultPurgeFloor = s1_purge_floor;
uint64_t g_core_race = 0;  // bytes another sbrk user takes just before the core's next growth
void* core_sbrk(intptr_t increment) {
    if (increment > 0 && g_core_race) g_core_break->bump(std::exchange(g_core_race, 0));
    return g_core_break->sbrk(increment);
}

struct WalkRow {
    uint64_t kind, offset, size;
    bool operator==(const WalkRow&) const = default;
};

// Runs both allocators side by side and fails at the first difference.
class Duel {
public:
    Duel()
        : twin_([this](intptr_t i) {
              if (i > 0 && twin_race_) twin_break_.bump(std::exchange(twin_race_, 0));
              return twin_break_.sbrk(i);
          }) {
        g_core_break = &core_break_;
        g_core_race = 0;
        s1_reset();
        s1_trim_fixed = 0;   // the default: the trim follows large frees ([S1.43]), in both
        s1_sbrk_hook = &core_sbrk;
        set_policy(S1_FIT_FIRST);
    }
    ~Duel() {
        s1_purge_floor = kDefaultPurgeFloor;
        s1_sbrk_hook = nullptr;
        s1_reset();
    }

    // [S1.36] A floor of 0 purges as soon as the waiting bytes exceed the live ones.
    void set_purge_floor(uint64_t bytes) {
        s1_purge_floor = bytes;
        twin_.purge_floor = bytes;
    }

    void set_policy(uint64_t policy) {
        s1_set_fit(policy);
        twin_.set_fit(policy);
    }

    // Offsets of the two results; equal offsets mean equal decisions.
    void same_pointer(const void* core, const void* twin, const char* what) {
        INFO(what);
        REQUIRE((core == nullptr) == (twin == nullptr));
        if (core) REQUIRE(core_break_.offset_of(core) == twin_break_.offset_of(twin));
    }

    struct Block {
        char* core;
        char* twin;
        uint64_t size;
        uint8_t fill;
    };

    bool malloc(uint64_t size, uint8_t fill, uint64_t alignment = 0) {
        last_freed_ = {};  // it may be handed out again: no longer a bad pointer
        void* c = alignment ? s1_memalign(alignment, size) : s1_malloc(size);
        void* t = alignment ? twin_.memalign(alignment, size) : twin_.malloc(size);
        same_pointer(c, t, alignment ? "memalign" : "malloc");
        if (!c) {
            REQUIRE(s1_status == S1_ENOMEM);
            REQUIRE(twin_.status == S1_ENOMEM);
            return false;
        }
        if (alignment) REQUIRE(reinterpret_cast<uintptr_t>(c) % alignment == 0);
        REQUIRE(s1_usable_size(c) == twin_.usable_size(t));
        REQUIRE(s1_usable_size(c) >= size);
        std::memset(c, fill, size);
        std::memset(t, fill, size);
        live_.push_back({static_cast<char*>(c), static_cast<char*>(t), size, fill});
        return true;
    }

    // True when the first `n` bytes at `p` all equal `fill`: the first byte is compared, and
    // each byte with its successor by one memcmp (vectorised; a byte loop made this test slow).
    static bool uniform(const char* p, uint64_t n, uint8_t fill) {
        return n == 0 || (static_cast<uint8_t>(p[0]) == fill && std::memcmp(p, p + 1, n - 1) == 0);
    }

    void verify(const Block& b) {
        if (!uniform(b.core, b.size, b.fill) || !uniform(b.twin, b.size, b.fill))
            FAIL("payload damaged in a block of " << b.size << " bytes");
    }

    void free(std::size_t index) {
        Block b = live_[index];
        verify(b);
        REQUIRE(s1_free(b.core) == S1_OK);
        REQUIRE(twin_.free(b.twin) == S1_OK);
        live_[index] = live_.back();
        live_.pop_back();
        last_freed_ = b;
    }

    void realloc(std::size_t index, uint64_t size, uint8_t fill) {
        last_freed_ = {};
        Block& b = live_[index];
        verify(b);
        void* c = s1_realloc(b.core, size);
        void* t = twin_.realloc(b.twin, size);
        same_pointer(c, t, "realloc");
        if (!c) {
            REQUIRE(s1_status == S1_ENOMEM);
            return;  // the old block is intact; verify() will say so later
        }
        b.core = static_cast<char*>(c);
        b.twin = static_cast<char*>(t);
        uint64_t kept = size < b.size ? size : b.size;
        REQUIRE(uniform(b.core, kept, b.fill));
        REQUIRE(uniform(b.twin, kept, b.fill));
        std::memset(b.core, fill, size);
        std::memset(b.twin, fill, size);
        b.size = size;
        b.fill = fill;
    }

    // Bad frees must be refused identically, and refused.
    void bad_free(std::mt19937_64& rng) {
        const char* core;
        const char* twin;
        switch (rng() % 3) {
            case 0:  // the block freed last, again
                if (!last_freed_.core) return;
                core = last_freed_.core;
                twin = last_freed_.twin;
                break;
            case 1: {  // inside a live block
                if (live_.empty()) return;
                const Block& b = live_[rng() % live_.size()];
                if (b.size < 48) return;
                core = b.core + 16;
                twin = b.twin + 16;
                break;
            }
            default: {  // misaligned
                if (live_.empty()) return;
                const Block& b = live_[rng() % live_.size()];
                core = b.core + 8;
                twin = b.twin + 8;
            }
        }
        uint32_t cs = s1_free(const_cast<char*>(core));
        uint32_t ts = twin_.free(const_cast<char*>(twin));
        REQUIRE(cs == ts);
        REQUIRE(cs != S1_OK);
    }

    void bump(uint64_t bytes) {
        core_break_.bump(bytes);
        twin_break_.bump(bytes);
    }
    // Someone else takes `bytes` between the next growth's query of the break and its sbrk.
    void race_next_growth(uint64_t bytes) {
        g_core_race = bytes;
        twin_race_ = bytes;
    }
    void move_to(uint64_t offset) {
        core_break_.move_to(offset);
        twin_break_.move_to(offset);
    }
    void set_limit(uint64_t bytes) {
        core_break_.set_limit(bytes);
        twin_break_.set_limit(bytes);
    }
    uint64_t used() const { return core_break_.used(); }

    void compare_heaps() {
        S1Report cr, tr;
        uint64_t cc = s1_check(&cr), tc = twin_.check(&tr);
        CAPTURE(cr.address);
        REQUIRE(cc == S1_CHECK_OK);
        REQUIRE(tc == S1_CHECK_OK);
        REQUIRE(cr.used_blocks == live_.size());
        REQUIRE(cr.used_blocks == tr.used_blocks);
        REQUIRE(cr.free_blocks == tr.free_blocks);
        REQUIRE(cr.heap_bytes == tr.heap_bytes);
        REQUIRE(s1_footprint == twin_.footprint);
        REQUIRE(s1_brk_calls == twin_.brk_calls);
        REQUIRE(s1_trim_followed == twin_.trim_followed);   // [S1.43]
        REQUIRE(s1_madvise_calls == twin_.madvise_calls);
        REQUIRE(s1_free_bytes == cr.free_bytes);  // the count kept by the lists is exact
        REQUIRE(s1_free_bytes == twin_.free_bytes);
        REQUIRE(s1_dirty_bytes == twin_.dirty_bytes);
        std::vector<WalkRow> core_rows, twin_rows;
        s1_walk(
            [](void* ctx, uint64_t kind, uint64_t address, uint64_t size) {
                auto* d = static_cast<Duel*>(ctx);
                d->core_rows_.push_back({kind, address - reinterpret_cast<uint64_t>(d->core_break_.base()), size});
                return 1;
            },
            this);
        twin_.walk([&](uint64_t kind, uint64_t address, uint64_t size) {
            twin_rows.push_back({kind, address - reinterpret_cast<uint64_t>(twin_break_.base()), size});
            return true;
        });
        core_rows.swap(core_rows_);
        core_rows_.clear();
        REQUIRE(core_rows.size() == twin_rows.size());
        for (std::size_t i = 0; i < core_rows.size(); ++i) {
            CAPTURE(i);
            REQUIRE(core_rows[i] == twin_rows[i]);
        }
    }

    std::vector<Block> live_;
    Block last_freed_{};

private:
    uint64_t twin_race_ = 0;
    ReservedBreak core_break_, twin_break_;
    Twin twin_;
    std::vector<WalkRow> core_rows_;
};

uint64_t random_size(std::mt19937_64& rng) {
    uint64_t pick = rng() % 1000;
    if (pick < 600) return rng() % 129;             // small objects
    if (pick < 900) return rng() % 2049;            // medium
    if (pick < 995) return rng() % 65537;           // large
    if (pick < 998) return rng() % (1u << 20);      // very large: exercises growth and trim
    return rng() % (4u << 20);                      // some past 1 MiB, which the trim follows [S1.43]
}

// One seeded session of `steps` operations.
void duel(uint64_t seed, int steps) {
    CAPTURE(seed);
    std::mt19937_64 rng(seed);
    Duel d;
    d.set_policy(seed % 4);
    if (seed % 2) d.set_purge_floor(0);  // purges often: the walk of the lists is compared too
    // The break starts high; now and then it jumps to a zone 256 MiB lower, so new regions land
    // below old ones and must be linked in address order.
    uint64_t zone = ReservedBreak::kReserve - (256u << 20);
    d.move_to(zone);
    for (int step = 0; step < steps; ++step) {
        CAPTURE(step);
        uint64_t op = rng() % 100;
        uint8_t fill = static_cast<uint8_t>(0x21 + rng() % 0xd0);  // never a small tag value
        bool crowded = d.live_.size() > 1500;
        if (op < 40 && !crowded) {
            d.malloc(random_size(rng), fill);
        } else if (op < 70 && !d.live_.empty()) {
            d.free(rng() % d.live_.size());
        } else if (op < 85 && !d.live_.empty()) {
            d.realloc(rng() % d.live_.size(), random_size(rng), fill);
        } else if (op < 91 && !crowded) {
            d.malloc(random_size(rng) % 4096, fill, uint64_t{32} << (rng() % 12));
        } else if (op < 95) {
            d.bad_free(rng);
        } else if (op < 97) {
            d.bump(rng() % 3 == 0 ? 4096 : 8 * (1 + rng() % 64));  // page-sized or unaligned
        } else if (op < 98) {
            if (rng() % 16 == 0 && zone > (256u << 20)) d.move_to(zone -= 256u << 20);
            else d.set_policy(rng() % 4);
        } else if (op < 99) {
            d.set_limit(d.used() + rng() % 65536);  // the next large growth fails
        } else {
            d.set_limit(ReservedBreak::kReserve);
        }
        if (step % 512 == 0) d.compare_heaps();
    }
    while (!d.live_.empty()) d.free(d.live_.size() - 1);
    d.compare_heaps();
    if (seed % 2) CHECK(s1_madvise_calls > 0);  // the purge ran, and the twin's agreed
}

// The random duel moves the break only between operations; this moves it inside a growth,
// between s1_heap_grow's query and its sbrk, by amounts that leave the extension's range (the
// 32 bytes a 240-byte block lacks after a 208-byte free tail) too short for a region, or not.
TEST_CASE("the core and its twin agree when the break moves inside a growth") {
    for (uint64_t nudge : {8, 16, 24, 4096}) {
        for (uint64_t policy : {S1_FIT_FIRST, S1_FIT_SEG}) {
            CAPTURE(nudge);
            CAPTURE(policy);
            Duel d;
            d.set_policy(policy);
            REQUIRE(d.malloc(16, 0x41));
            REQUIRE(d.malloc(200, 0x42));
            d.free(1);  // the heap ends in a 208-byte free block
            d.race_next_growth(nudge);
            REQUIRE(d.malloc(220, 0x43));
            d.compare_heaps();
            while (!d.live_.empty()) d.free(d.live_.size() - 1);
            d.compare_heaps();
        }
    }
}

TEST_CASE("the NASM core and its C++ twin agree on a million random operations") {
    if (const char* seed = std::getenv("EDU_TWIN_SEED")) {
        duel(std::strtoull(seed, nullptr, 10), 60000);
        return;
    }
    constexpr int kSeeds = 20, kSteps = 60000;  // 1.2 million operations
    for (uint64_t seed = 1; seed <= kSeeds; ++seed) duel(seed, kSteps);
}

}  // namespace
}  // namespace edu::stage1
