// stage1_brk/reserved_break.h: a program break of our own, in a private reservation.
// A large PROT_READ|PROT_WRITE, MAP_NORESERVE mapping stands in for the data segment; `sbrk`
// moves a cursor in it and fails past a settable limit; `bump` plays "someone else moved the
// break". Used by the `break=reserved` option (valgrind caps the real brk segment at 8 MiB) and
// by the core's tests, where the core and its twin run on identical, resettable address spaces.
#pragma once

#include <sys/mman.h>

#include <cstdint>

namespace edu::stage1 {

class ReservedBreak {
public:
    static constexpr uint64_t kReserve = 1ull << 32;  // 4 GiB of address space, touched lazily

    ReservedBreak() {
        void* p = mmap(nullptr, kReserve, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED) base_ = static_cast<char*>(p);
        reset();
    }
    ~ReservedBreak() {
        if (base_) munmap(base_, kReserve);
    }
    bool ok() const { return base_ != nullptr; }  // false: the reservation was refused
    ReservedBreak(const ReservedBreak&) = delete;
    ReservedBreak& operator=(const ReservedBreak&) = delete;

    // Start over with an empty data segment whose first byte is `offset` past the base.
    void reset(uint64_t offset = 0) {
        brk_ = base_ + offset;
        limit_ = kReserve;
    }
    // sbrk's contract: the old break, or (void*)-1 when the new break would pass the limit.
    void* sbrk(intptr_t increment) {
        if (!base_) return reinterpret_cast<void*>(-1);
        char* old = brk_;
        uint64_t next = static_cast<uint64_t>(brk_ - base_) + static_cast<uint64_t>(increment);
        if (next > limit_) return reinterpret_cast<void*>(-1);
        brk_ = base_ + next;
        return old;
    }
    // Another sbrk user in the process takes `bytes`.
    void bump(uint64_t bytes) { brk_ += bytes; }
    // The break continues elsewhere, possibly below the heap (another break source).
    void move_to(uint64_t offset) { brk_ = base_ + offset; }
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
