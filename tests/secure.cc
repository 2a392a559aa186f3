// tests/secure.cc: proves a stage's secure mode (option "secure": encoded free lists, stages 3
// and 4) through the contract alone, for every stage that has the option (the others skip):
// the mode switches with live blocks and lists and keeps every block; a write after free into
// a freed block's link is caught by the malloc that pops the block, with one line, where plain
// mode hands out the forged address; and a double free is still reported.
#include <doctest/doctest.h>

#include <signal.h>

#include <cstring>
#include <string>
#include <vector>

#include "tests/support.h"

namespace edu::battery {
namespace {

bool has_secure_mode() {
    if (stage().get_option("secure") != nullptr) return true;
    MESSAGE(std::string(stage().name) << " has no secure mode");  // a char* alone prints as an address
    return false;
}

// Sets "secure" for the scope, then restores the old value.
class SecureScope {
public:
    explicit SecureScope(const char* value) : old_(stage().get_option("secure")) {
        REQUIRE(stage().set_option("secure", value));
    }
    ~SecureScope() { stage().set_option("secure", old_.c_str()); }
    SecureScope(const SecureScope&) = delete;
    SecureScope& operator=(const SecureScope&) = delete;

private:
    std::string old_;
};

TEST_CASE("switching secure mode on and off re-encodes every list and keeps every block") {
    if (!has_secure_mode()) return;
    SecureScope restore(stage().get_option("secure"));
    std::vector<void*> blocks;
    for (uint64_t i = 0; i < 6000; ++i) {
        std::size_t n = 16 + i * 13 % 3000;
        void* p = api().malloc(n);
        REQUIRE(p != nullptr);
        fill(p, i, 0, 16);
        blocks.push_back(p);
    }
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
        api().free(blocks[i]);
        blocks[i] = nullptr;
    }
    for (const char* mode : {"on", "off", "on", "off"}) {
        CAPTURE(mode);
        REQUIRE(stage().set_option("secure", mode));
        require_heap_ok(api());
        std::vector<void*> more;
        for (int i = 0; i < 3000; ++i) more.push_back(api().malloc(static_cast<std::size_t>(16 + i % 2000)));
        for (void* p : more) api().free(p);
        require_heap_ok(api());
    }
    for (uint64_t i = 0; i < blocks.size(); ++i) {
        if (!blocks[i]) continue;
        CHECK(first_mismatch(blocks[i], i, 16) == -1);
        api().free(blocks[i]);
    }
    require_heap_ok(api());
}

// Frees two neighbours p and q = p + size (one page, so its free lists hold q -> p), writes a
// plain address over p's link (the first word; the freed mark in the second stays), then
// allocates blocks of that size: q comes back first, and the malloc after it pops p on the
// fast path, which reads p's link. Whatever bin state the test finds, the page's other free
// blocks run out within this many requests.
void write_after_free_then_malloc() {
    constexpr std::size_t kSize = 48;
    auto* p = static_cast<unsigned char*>(api().malloc(kSize));
    auto* q = static_cast<unsigned char*>(api().malloc(kSize));
    for (int i = 0; i < 1000 && q != p + kSize; ++i) {
        p = q;
        q = static_cast<unsigned char*>(api().malloc(kSize));
    }
    child_expect(q == p + kSize, "no two neighbouring blocks");
    api().free(p);
    api().free(q);
    std::memset(p, 0x41, 8);
    for (int i = 0; i < 100000; ++i) {
        if (api().malloc(kSize) == p) {
            api().malloc(kSize);   // plain mode pops 0x4141414141414141 here
            break;
        }
    }
    child_expect(false, "the write after free went unnoticed");
}

TEST_CASE("a write after free into a freed block's link is caught by the next malloc in secure mode") {
    if (!has_secure_mode()) return;
    ChildOutcome out = run_in_child([] {
        stage().set_option("secure", "on");
        write_after_free_then_malloc();
    });
    INFO(out.describe());
    CHECK(out.signaled);
    CHECK(out.signal == SIGABRT);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find(std::string(stage().name) + ": malloc(0x") != std::string::npos);
    CHECK(out.stderr_text.find("free list corrupted") != std::string::npos);
    // The same program in plain mode: the pop that reads the forged link does not decode or
    // check it (secure mode's words are absent) and installs it as the list's head; the next
    // malloc finds that head outside its page's 4 MiB chunk before reading through it (stage
    // 3's [S3.65], shared by stage 4) and stops with one line instead of faulting.
    ChildOutcome plain = run_in_child([] {
        stage().set_option("secure", "off");
        write_after_free_then_malloc();
    });
    INFO(plain.describe());
    CHECK(plain.stderr_text.find("a block's link leaves its page") == std::string::npos);
    CHECK(plain.signaled);
    CHECK(plain.signal == SIGABRT);
    CHECK(plain.stderr_lines() == 1);
    CHECK(plain.stderr_text.find("free list corrupted: the next free block's address leaves its page's segment") !=
          std::string::npos);
}

TEST_CASE("a double free is reported in secure mode too") {
    if (!has_secure_mode()) return;
    ChildOutcome out = run_in_child([] {
        stage().set_option("secure", "on");
        void* p = api().malloc(100);
        api().free(p);
        api().free(p);
    });
    INFO(out.describe());
    CHECK(out.signal == SIGABRT);
    CHECK(out.stderr_lines() == 1);
    CHECK(out.stderr_text.find("double free") != std::string::npos);
}

}  // namespace
}  // namespace edu::battery
