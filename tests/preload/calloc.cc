// tests/preload/calloc.cc: proves calloc gives zeroed memory without making it resident, as the
// C library's does. A 256 MiB calloc that the program touches at one byte must not grow the
// resident set by more than 32 MiB (every stage wrote all 256 MiB before contract/os.h's
// zero_fill); recycled blocks of sizes around zero_fill's threshold, at every offset a page
// can start, must still read as zero, and so must they with every page locked (mlockall, where
// the kernel refuses to discard pages). Prints one line per part, the same under any malloc.
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "tests/preload/resident.h"

namespace {

// A sparse table: one byte written in the middle of 256 MiB.
bool sparse_stays_unbacked() {
    constexpr std::size_t kBytes = std::size_t{256} << 20;
    long before = resident_kib();
    auto* table = static_cast<volatile char*>(std::calloc(1, kBytes));
    if (table == nullptr) return std::printf("calloc of 256 MiB failed\n"), false;
    table[kBytes / 2] = 1;
    long grown = resident_kib() - before;
    std::free(const_cast<char*>(table));
    if (grown > 32 << 10) return std::printf("calloc of 256 MiB grew the resident set by %ld KiB\n", grown), false;
    return true;
}

// Blocks first filled with 0xab and freed, then asked for again with calloc: every byte zero.
// Sizes straddle 1 MiB (zero_fill's threshold) and stop short of, at or past a page boundary.
// Every other round leaves the first 8 KiB zero: zero_fill then takes the block for a fresh one
// and discards its pages rather than write them.
void make_dirty(void* p, std::size_t size, int round) {
    std::memset(p, 0xab, size);
    if (round % 2 == 1) std::memset(p, 0, 8192);
}

bool recycled_reads_zero() {
    for (std::size_t base : {std::size_t{1} << 20, std::size_t{3} << 20}) {
        for (long delta : {-4097L, -1L, 0L, 1L, 4095L, 4097L, 65537L}) {
            std::size_t size = base + delta;
            for (int round = 0; round < 4; ++round) {
                void* dirty = std::malloc(size);
                if (dirty == nullptr) return std::printf("malloc(%zu) failed\n", size), false;
                make_dirty(dirty, size, round);
                std::free(dirty);
                auto* p = static_cast<unsigned char*>(std::calloc(size, 1));
                if (p == nullptr) return std::printf("calloc(%zu) failed\n", size), false;
                for (std::size_t i = 0; i < size; ++i)
                    if (p[i] != 0) return std::printf("calloc(%zu): byte %zu is %#x\n", size, i, p[i]), false;
                make_dirty(p, size, round + 1);   // for the next round
                std::free(p);
            }
        }
    }
    return true;
}

}  // namespace

int main() {
    if (!sparse_stays_unbacked()) return 1;
    std::printf("a sparse 256 MiB table stays unbacked\n");
    if (!recycled_reads_zero()) return 1;
    std::printf("recycled blocks read as zero\n");
    // Locked pages cannot be discarded: calloc must write them. Without the privilege to lock,
    // this repeats the part above.
    bool locked = mlockall(MCL_CURRENT | MCL_FUTURE) == 0;
    if (!recycled_reads_zero()) return 1;
    if (locked) munlockall();
    std::printf("recycled blocks read as zero with every page locked\n");
    return 0;
}
