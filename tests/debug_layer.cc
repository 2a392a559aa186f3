// tests/debug_layer.cc: proves the contract's debug mode (contract/debug.h) over this stage,
// in-process: a correct workload runs through it with every byte kept and nothing reported,
// and each kind of misuse ends a forked child with one line naming the stage, the call, the
// pointer, the block, its size and the kind. The drop-in side is tests/misuse.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "contract/debug.h"
#include "tests/support.h"

namespace edu::battery {
namespace {

const Api& debug() { return debug_entry(stage(), api()); }

// Each case leaves nothing behind, quarantine included: later cases may need an empty heap.
struct Drained {
    ~Drained() { debug_drain(debug()); }
};

void require_report(const char* call, const void* ptr, std::initializer_list<const char*> words,
                    const std::function<void()>& body) {
    require_one_line_abort(stage().name, call, ptr, words, body);
}

TEST_CASE("debug mode: a correct workload keeps every byte and the fences of every block") {
    Drained drained;
    Rng rng(77);
    std::vector<Block> live;
    uint64_t id = 0;
    for (int step = 0; step < 4000; ++step) {
        unsigned choice = static_cast<unsigned>(rng.below(10));
        if (live.empty() || choice < 5) {
            std::size_t n = rng.per_mille(50) ? rng.range(4096, 70000) : rng.below(600);
            std::size_t alignment = rng.per_mille(100) ? std::size_t{64} << rng.below(4) : 16;
            auto* p = static_cast<unsigned char*>(alignment > 16 ? debug().aligned_alloc(alignment, n)
                                                                 : debug().malloc(n));
            REQUIRE(p != nullptr);
            CHECK(is_aligned(p, alignment));
            CHECK(debug().usable_size(p) == n);  // the rest is fence
            fill(p, id, 0, n);
            live.push_back({id++, p, n, n});
        } else {
            std::size_t i = rng.below(live.size());
            Block& b = live[i];
            REQUIRE(first_mismatch(b.ptr, b.id, b.size) == -1);
            if (choice < 8) {
                debug().free(b.ptr);
                live[i] = live.back();
                live.pop_back();
            } else {
                std::size_t n = rng.below(2000);
                auto* q = static_cast<unsigned char*>(debug().realloc(b.ptr, n));
                REQUIRE(q != nullptr);
                CHECK(first_mismatch(q, b.id, n < b.size ? n : b.size) == -1);
                fill(q, b.id, 0, n);
                b.ptr = q;
                b.size = b.usable = n;
            }
        }
    }
    check_heap_ok(debug());
    for (Block& b : live) debug().free(b.ptr);
    require_heap_ok(debug());
}

TEST_CASE("debug mode: calloc zeroes, impossible sizes return NULL with ENOMEM") {
    Drained drained;
    auto* p = static_cast<unsigned char*>(debug().calloc(10, 10));
    REQUIRE(p != nullptr);
    CHECK(first_nonzero(p, 100) == -1);
    debug().free(p);
    errno = 0;
    CHECK(debug().malloc(SIZE_MAX - 8) == nullptr);
    CHECK(errno == ENOMEM);
    errno = 0;
    CHECK(debug().calloc(SIZE_MAX / 2, 4) == nullptr);
    CHECK(errno == ENOMEM);
}

TEST_CASE("debug mode names an overflow by one byte, with the byte it found") {
    Drained drained;
    auto* p = static_cast<char*>(debug().malloc(24));
    require_report("free", p, {"buffer overflow", "of 24 bytes", "byte +24 is 0x41 not 0xfd"}, [&] {
        p[24] = 'A';
        debug().free(p);
    });
    debug().free(p);
}

TEST_CASE("debug mode names an underflow") {
    Drained drained;
    auto* p = static_cast<char*>(debug().malloc(100));
    require_report("free", p, {"buffer underflow", "of 100 bytes", "byte -3 is 0x42"}, [&] {
        p[-3] = 'B';
        debug().free(p);
    });
    debug().free(p);
}

TEST_CASE("debug mode names a double free, with another free between") {
    Drained drained;
    void* p = debug().malloc(24);
    void* q = debug().malloc(24);
    require_report("free", p, {"double free", "of 24 bytes"}, [&] {
        debug().free(p);
        debug().free(q);
        debug().free(p);
    });
    debug().free(p);
    debug().free(q);
}

TEST_CASE("debug mode calls realloc of a freed block a use after free, not a double free") {
    Drained drained;
    void* p = debug().malloc(24);
    require_report("realloc", p, {"use after free"}, [&] {
        debug().free(p);
        debug().realloc(p, 50);
    });
    debug().free(p);
}

TEST_CASE("debug mode names interior, misaligned and foreign pointers") {
    Drained drained;
    auto* p = static_cast<char*>(debug().malloc(64));
    require_report("free", p + 16, {"invalid free", "interior pointer", "of 64 bytes, at +16"},
                   [&] { debug().free(p + 16); });
    require_report("free", p + 1, {"invalid free", "at +1"}, [&] { debug().free(p + 1); });
    static uint64_t foreign[8];
    require_report("free", foreign + 2, {"invalid free", "not a block of this heap"},
                   [&] { debug().free(foreign + 2); });
    debug().free(p);
}

TEST_CASE("debug mode finds a write after free when the block leaves quarantine") {
    Drained drained;
    auto* p = static_cast<char*>(debug().malloc(40));
    // As many blocks as the quarantine holds: freeing them all pushes p out at the last one.
    std::vector<void*> others;
    for (std::size_t i = 0; i < kDebugQuarantineBlocks; ++i) others.push_back(debug().malloc(16));
    require_report("free", others.back(),
                   {"write after free", "of 40 bytes", "byte +5 is 0x43 not 0xdd", "left quarantine"}, [&] {
                       debug().free(p);
                       p[5] = 'C';
                       for (void* b : others) debug().free(b);
                   });
    debug().free(p);
    for (void* b : others) debug().free(b);
}

TEST_CASE("debug mode lists the blocks still live at exit, oldest first") {
    Drained drained;
    ChildOutcome outcome = run_in_child([] {
        const Api& d = debug();
        void* a = d.malloc(11);
        void* b = d.malloc(22);
        d.free(d.malloc(33));
        child_expect(debug_finish(d, 10) >= 2, "fewer than two blocks live");
        d.free(a);
        d.free(b);
    });
    INFO(outcome.describe());
    CHECK(outcome.exited);
    std::string leaks = outcome.stderr_text;
    std::size_t first = leaks.find("leak: block"), of11 = leaks.find("of 11 bytes"), of22 = leaks.find("of 22 bytes");
    CHECK(first != std::string::npos);
    CHECK(of11 != std::string::npos);
    CHECK(of22 != std::string::npos);
    CHECK(of11 < of22);
    CHECK(leaks.find("of 33 bytes") == std::string::npos);
    CHECK(leaks.find("every fence and freed block intact") != std::string::npos);
}

}  // namespace
}  // namespace edu::battery
