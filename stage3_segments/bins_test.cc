// stage3_segments/bins_test.cc: proves the size classes and the validity test are what
// types.h says: the bin table in its comment is recomputed from bins.h, every request gets the
// smallest class that fits, the direct slots partition 0..1 KiB, aligned requests find an
// aligned class, and the one-multiply test [S3.6] agrees with % and / on every offset of
// every class's page. Pure arithmetic: no memory is allocated from the stage.
#include <doctest/doctest.h>

#include <cctype>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "stage3_segments/bins.h"
#include "stage3_segments/page.h"

namespace edu::stage3 {
namespace {

TEST_CASE("the bin table in types.h is the one bins.h computes") {
    std::ifstream in("stage3_segments/types.h");
    REQUIRE(in.good());
    std::string line;
    std::vector<std::pair<unsigned, std::size_t>> rows;
    bool in_table = false;
    while (std::getline(in, line)) {
        if (line.find("bin  block") != std::string::npos) {
            in_table = true;
            continue;
        }
        if (!in_table) continue;
        if (line.find("(<s:") != std::string::npos) break;
        // "//      0     16         9    192 ..." with "<s" / "<m" after a class: numbers in pairs.
        for (char& c : line)
            if (!std::isdigit(static_cast<unsigned char>(c))) c = ' ';
        std::istringstream cells(line);
        unsigned bin;
        std::size_t size;
        while (cells >> bin >> size) rows.emplace_back(bin, size);
    }
    REQUIRE(rows.size() == kBinCount);
    for (auto [bin, size] : rows) {
        CAPTURE(bin);
        CHECK(bin_size(bin) == size);
    }
}

TEST_CASE("every request up to 64 KiB gets the smallest class that holds it") {
    for (std::size_t n = 0; n <= kMediumMax; ++n) {
        unsigned bin = bin_of(n);
        INFO("n = " << n << ", bin " << bin);
        REQUIRE(bin < kBinCount);
        REQUIRE(bin_size(bin) >= n);
        if (bin > 0) REQUIRE(bin_size(bin - 1) < n);
    }
}

TEST_CASE("classes are multiples of 16 and waste at most 15 bytes or under a fifth") {
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        CAPTURE(bin);
        CHECK(bin_size(bin) % kAlignment == 0);
        CHECK(bin_of(bin_size(bin)) == bin);
        if (bin == 0) continue;
        CHECK(bin_size(bin) > bin_size(bin - 1));
        std::size_t smallest = bin_size(bin - 1) + 1;   // the worst-fitting request
        std::size_t waste = bin_size(bin) - smallest;
        if (bin_size(bin) <= 128) CHECK(waste <= 15);
        else CHECK(waste * 5 < bin_size(bin));
    }
    CHECK(bin_kind(kSmallBins - 1) == PageKind::small);
    CHECK(bin_kind(kSmallBins) == PageKind::medium);
}

TEST_CASE("the generic path's tables [S3.95] answer as the formulas do") {
    for (std::size_t n = 0; n <= kMediumMax; ++n) {
        CAPTURE(n);
        REQUIRE(bin_of(n) == bin_formula(n));
    }
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        CAPTURE(bin);
        SlotRange table = direct_slots_of(bin), formula = direct_slots_formula(bin);
        if (formula.first <= formula.last) {
            CHECK(table.first == formula.first);
            CHECK(table.last == formula.last);
        } else {
            CHECK(table.first > table.last);   // empty either way
        }
    }
}

TEST_CASE("direct slots partition 0..1024 bytes and each slot's sizes share a bin") {
    std::vector<int> owner(kDirectSlots, -1);
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        SlotRange r = direct_slots_of(bin);
        for (unsigned i = r.first; i <= r.last && r.first <= r.last; ++i) {
            CAPTURE(i);
            REQUIRE(owner[i] == -1);
            owner[i] = static_cast<int>(bin);
        }
    }
    for (unsigned i = 0; i < kDirectSlots; ++i) {
        CAPTURE(i);
        REQUIRE(owner[i] >= 0);
        std::size_t lo = i == 0 ? 0 : 8 * i - 7;
        for (std::size_t n = lo; n <= 8 * i; ++n) CHECK(bin_of(n) == static_cast<unsigned>(owner[i]));
    }
}

TEST_CASE("aligned requests pick the first class that is a multiple of the alignment") {
    for (std::size_t a = 32; a <= kMediumMax; a *= 2) {
        for (std::size_t n : {std::size_t{1}, a - 1, a, a + 1, 3 * a, std::size_t{5000}, kMediumMax}) {
            INFO("alignment " << a << ", size " << n);
            unsigned bin = aligned_bin(a, n);
            if (std::max(a, n) > kMediumMax) {
                CHECK(bin == kBinCount);
                continue;
            }
            REQUIRE(bin < kBinCount);
            CHECK(bin_size(bin) % a == 0);
            CHECK(bin_size(bin) >= n);
            for (unsigned earlier = bin_of(std::max(a, n)); earlier < bin; ++earlier)
                CHECK(bin_size(earlier) % a != 0);
        }
    }
}

// A page record with only the fields the test reads, its blocks from `start`.
Page synthetic_page(uint64_t block_size, uint32_t capacity, uint32_t carved, uintptr_t start) {
    Page page{};
    page.block_size = block_size;
    page.capacity = capacity;
    page.carved = carved;
    page.start = start;
    page.start32 = static_cast<uint32_t>(start);
    page.magic = magic_for(block_size);
    page_set_limit(&page);
    return page;
}

TEST_CASE("the one-multiply validity test agrees with % and / on every offset of every class") {
    const uintptr_t start = (uintptr_t{0x7f12} << 32) | 0x00c02000u;   // any address will do
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        uint64_t size = bin_size(bin);
        std::size_t page_bytes = std::size_t{1} << (bin < kSmallBins ? kSmallPageShift : kMediumPageShift);
        uint32_t capacity = static_cast<uint32_t>(page_bytes / size);
        for (uint32_t carved : {uint32_t{1}, capacity / 2, capacity}) {
            if (carved == 0) continue;
            Page page = synthetic_page(size, capacity, carved, start);
            INFO("bin " << bin << " (" << size << " bytes), carved " << carved);
            // Offsets before the start (as from page 0's metadata) and across the whole page.
            for (int64_t n = -int64_t{kMetaSize}; n < static_cast<int64_t>(page_bytes); ++n) {
                uintptr_t p = start + static_cast<uintptr_t>(n);
                bool expect = n >= 0 && static_cast<uint64_t>(n) % size == 0 &&
                              static_cast<uint64_t>(n) / size < carved;
                if (page_is_block(&page, p) != expect) {
                    CAPTURE(n);
                    FAIL("validity test wrong");
                }
                if (page_owns_block(&page, p) != expect) {
                    CAPTURE(n);
                    FAIL("page_owns_block wrong");
                }
            }
        }
    }
}

TEST_CASE("one-block pages and free pages pass only their block, or nothing") {
    const uintptr_t segment = uintptr_t{0x7f34} << 32;
    Page one = synthetic_page(3 * 1024 * 1024, 1, 1, segment + kMetaSize);
    for (uintptr_t off = 0; off < kSegmentSize; off += 16)
        CHECK(page_is_block(&one, segment + off) == (off == kMetaSize));
    Page free_page{};
    free_page.start32 = static_cast<uint32_t>(segment - 1);
    free_page.magic = 1;
    free_page.limit = 0;
    for (uintptr_t off = 0; off < kSegmentSize; off += 8) CHECK_FALSE(page_is_block(&free_page, segment + off));
}

// A full page keeps its start and its class's magic and takes limit 0 (page.cc), so
// free_generic can check it exactly without a division. Nothing may pass, not even its first
// block (n = 0, a product of 0): the bound is exclusive ([S3.6]). The page of g_foreign, which
// the segment map gives every chunk not ours ([S3.13]), relies on the same: a foreign pointer
// can have any low 32 bits. Every class, every 8th offset of a segment, block 0 included.
TEST_CASE("a page with limit 0 passes no pointer at all, its own first block included") {
    const uintptr_t segment = uintptr_t{0x7f56} << 32;
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        Page full = synthetic_page(bin_size(bin), 8, 8, segment + kMetaSize);
        full.limit = 0;
        INFO("bin " << bin << " (" << bin_size(bin) << " bytes)");
        uint64_t passed = 0;
        for (uintptr_t off = 0; off < kSegmentSize; off += 8) passed += page_is_block(&full, segment + off);
        CHECK(passed == 0);
        CHECK_FALSE(page_is_block(&full, full.start));
    }
    Page foreign{};   // as g_foreign's: all zeros
    for (uintptr_t p : {uintptr_t{0}, uintptr_t{1} << 32, (uintptr_t{0x7f78} << 32) | 16, ~uintptr_t{0}})
        CHECK_FALSE(page_is_block(&foreign, p));
}

}  // namespace
}  // namespace edu::stage3
