// stage3_segments/bins.h: size classes: the bin of a request, the block size of a bin, the
// direct-cache slots a bin covers, and the bin an aligned request can use.
// Entry points: bin_of, bin_size, bin_kind, direct_slots_of, bin_keeps_alignment, aligned_bin.
// All constexpr.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/types.h"

namespace edu::stage3 {

// [S3.9] The bin function. Up to 128 bytes: (n + 15) / 16 - 1 (0 shares bin 0 with 1..16).
// Above: with w = n - 1 and b = floor(log2 w), the group is b - 7 and the two bits of w just
// below its top bit pick one of four classes, so bins 8 + 4 (b - 7) .. + 3 cover (2^b, 2^(b+1)].
//    n = 200: w = 199 = 0b1100'0111, b = 7, next two bits 10 -> bin 8 + 0 + 2 = 10 (224 bytes)
// bin_of below answers from a table up to 1 KiB ([S3.95]); this is the formula it is made of.
constexpr unsigned bin_formula(std::size_t n) {
    if (n <= 128) return n == 0 ? 0 : static_cast<unsigned>((n + 15) / 16 - 1);
    std::size_t w = n - 1;
    unsigned b = 63 - static_cast<unsigned>(__builtin_clzll(w));
    return 8 + 4 * (b - 7) + static_cast<unsigned>((w >> (b - 2)) & 3);
}

// Block bytes of bin `bin` (< kBinCount): the largest request bin_of sends there.
constexpr std::size_t bin_size(unsigned bin) {
    if (bin < 8) return 16 * (std::size_t{bin} + 1);
    unsigned group = (bin - 8) / 4, step = (bin - 8) % 4;
    return (std::size_t{128} << group) + (std::size_t{step} + 1) * (std::size_t{32} << group);
}

constexpr PageKind bin_kind(unsigned bin) {
    return bin < kSmallBins ? PageKind::small : PageKind::medium;
}

static_assert(bin_size(kSmallBins - 1) == kSmallMax);
static_assert(bin_size(kBinCount - 1) == kMediumMax);
static_assert(bin_formula(kMediumMax) == kBinCount - 1);
static_assert(bin_formula(kDirectMax) == 19 && bin_size(19) == kDirectMax);

// The direct-cache slots [first, last] that lead to `bin` (empty when first > last): slot i
// serves requests of 8 i - 7 .. 8 i bytes, which all share one bin because bin boundaries are
// multiples of 16.
struct SlotRange {
    unsigned first;
    unsigned last;
};
constexpr SlotRange direct_slots_formula(unsigned bin) {
    unsigned first = bin == 0 ? 0 : static_cast<unsigned>(bin_size(bin - 1) / 8 + 1);
    unsigned last = static_cast<unsigned>(bin_size(bin) / 8);
    if (last > kDirectSlots - 1) last = kDirectSlots - 1;
    return {first, last};
}

// [S3.95] Both answers the generic path asks on every call, by table, computed at compile time
// from the formulas above: the bin of a request up to kDirectMax is its direct slot's (slot
// (n + 7) / 8, whose sizes share one bin), one load where the formula's branch, bit scan and
// shifts took a dozen instructions; direct_slots_of, which update_direct asks each time a
// bin's first page changes, one load of two bytes where it took about twenty (bin_size twice).
// On `ring` through the drop-in library (callgrind, chapter 3's "Measured") malloc_generic
// runs 0.049 times a step and update_direct 0.023 times. Stage 4 shares both.
struct SlotRange8 {
    uint8_t first;
    uint8_t last;
};
inline constexpr struct DirectTables {
    uint8_t bin_of_slot[kDirectSlots];
    SlotRange8 slots_of_bin[kBinCount];
} kDirectTables = [] {
    DirectTables t{};
    for (unsigned i = 0; i < kDirectSlots; ++i) t.bin_of_slot[i] = static_cast<uint8_t>(bin_formula(std::size_t{i} * 8));
    for (unsigned bin = 0; bin < kBinCount; ++bin) {
        SlotRange r = direct_slots_formula(bin);   // the bins above 1 KiB have none: {1, 0}
        t.slots_of_bin[bin] = r.first <= r.last ? SlotRange8{static_cast<uint8_t>(r.first), static_cast<uint8_t>(r.last)}
                                                : SlotRange8{1, 0};
    }
    return t;
}();

constexpr unsigned bin_of(std::size_t n) {
    if (n <= kDirectMax) [[likely]] return kDirectTables.bin_of_slot[(n + 7) / 8];
    return bin_formula(n);
}
// `bin` < kBinCount. An empty range is {1, 0}.
constexpr SlotRange direct_slots_of(unsigned bin) {
    SlotRange8 r = kDirectTables.slots_of_bin[bin];
    return {r.first, r.last};
}

// Whether every block of `bin` starts at a multiple of `alignment` (a power of two): exactly
// when its size is one, because pages start on the block size's lowest set bit (carve_area,
// segment_layout.h). The one rule for aligned requests: their bin ([S3.33]) and a larger bin
// that serves them when theirs cannot ([S3.97], heap.cc).
constexpr bool bin_keeps_alignment(unsigned bin, std::size_t alignment) { return bin_size(bin) % alignment == 0; }

// [S3.33] Aligned requests without interior pointers: for alignment a (16 < a <= 64 KiB) and
// size n, the first bin at or above max(n, a) whose block size is a multiple of a. It exists
// within four bins (the power of two at or above max(n, a) is one), and every block of it is
// a-aligned (bin_keeps_alignment). Returns kBinCount when the request must go to a large page.
constexpr unsigned aligned_bin(std::size_t alignment, std::size_t n) {
    std::size_t need = n > alignment ? n : alignment;
    if (need > kMediumMax) return kBinCount;
    for (unsigned bin = bin_of(need); bin < kBinCount; ++bin)
        if (bin_keeps_alignment(bin, alignment)) return bin;
    return kBinCount;
}

}  // namespace edu::stage3
