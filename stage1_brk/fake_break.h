// stage1_brk/fake_break.h: a simulated program break for the core's own tests.
// A large PROT_READ|PROT_WRITE reservation stands in for the data segment; `sbrk` moves a
// cursor in it, fails past a settable limit, and `bump` plays "someone else moved the break".
// Test-only: with it, the core and its twin run on identical, resettable address spaces.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace edu::stage1 {

class FakeBreak {
public:
    static constexpr uint64_t kReserve = 1ull << 30;  // 1 GiB of address space, never touched

    FakeBreak() {
        void* p = mmap(nullptr, kReserve, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) std::abort();
        base_ = static_cast<char*>(p);
        reset();
    }
    ~FakeBreak() { munmap(base_, kReserve); }
    FakeBreak(const FakeBreak&) = delete;
    FakeBreak& operator=(const FakeBreak&) = delete;

    // Start over with an empty data segment whose first byte is `offset` past the base.
    void reset(uint64_t offset = 0) {
        brk_ = base_ + offset;
        limit_ = kReserve;
    }
    // sbrk's contract: the old break, or (void*)-1 when the new break would pass the limit.
    void* sbrk(intptr_t increment) {
        char* old = brk_;
        uint64_t next = static_cast<uint64_t>(brk_ - base_) + static_cast<uint64_t>(increment);
        if (next > limit_) return reinterpret_cast<void*>(-1);
        brk_ = base_ + next;
        return old;
    }
    // Another sbrk user in the process takes `bytes`.
    void bump(uint64_t bytes) { brk_ += bytes; }
    // Growth past `bytes` from the base fails from now on.
    void set_limit(uint64_t bytes) { limit_ = bytes; }
    uint64_t used() const { return static_cast<uint64_t>(brk_ - base_); }
    uint64_t offset_of(const void* p) const {
        return static_cast<uint64_t>(static_cast<const char*>(p) - base_);
    }
    char* base() const { return base_; }

private:
    char* base_ = nullptr;
    char* brk_ = nullptr;
    uint64_t limit_ = kReserve;
};

}  // namespace edu::stage1
