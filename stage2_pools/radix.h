// stage2_pools/radix.h: "is this address inside one of our arenas?", answered for any
// address without touching the memory it points to. Entry points: radix_lookup (inline, on
// every free), radix_set (when an arena is mapped or unmapped). Arenas themselves: arena.h.
#pragma once

#include <cstdint>

#include "stage2_pools/types.h"

namespace edu::stage2 {

// [S2.7] A three-level radix tree over `address >> arena_shift`, which names one
// arena-sized, arena-aligned chunk of the 48-bit address space. A leaf entry holds the arena's
// table index + 1 (0: not ours). Interior nodes are mapped on first use and kept.
//
//    address:  | root (<= 10 bits) | mid (10 bits) | leaf (10 bits) | offset (arena_shift) |
//                      |                 |                |
//              g_radix.mid[] ---> RadixMid.leaf[] ---> RadixLeaf.arena[] = index + 1
//
// CPython (3.10+) walks the same kind of tree; its arenas are not aligned, so each leaf also
// records where an arena starts and ends inside the chunk. Aligning arenas makes a leaf one word.
inline constexpr unsigned kAddressBits = 48;   // x86-64 user addresses lie below 2^47
inline constexpr unsigned kLeafBits = 10;
inline constexpr unsigned kMidBits = 10;
inline constexpr unsigned kRootBits = kAddressBits - kMinArenaShift - kMidBits - kLeafBits;

struct RadixLeaf {
    uint32_t arena[1u << kLeafBits];       // arena table index + 1, or 0
};
struct RadixMid {
    RadixLeaf* leaf[1u << kMidBits];
};
struct RadixRoot {
    RadixMid* mid[1u << kRootBits];
};
extern RadixRoot g_radix;

// Table index + 1 of the arena holding `address`, or 0 when no arena of ours does.
inline uint32_t radix_lookup(uintptr_t address) {
    uintptr_t key = address >> g_heap.arena_shift;
    uintptr_t top = key >> (kMidBits + kLeafBits);
    if (top >= (uintptr_t{1} << kRootBits)) return 0;
    RadixMid* mid = g_radix.mid[top];
    if (!mid) return 0;
    RadixLeaf* leaf = mid->leaf[(key >> kLeafBits) & ((1u << kMidBits) - 1)];
    if (!leaf) return 0;
    return leaf->arena[key & ((1u << kLeafBits) - 1)];
}

// Records `value` (index + 1, or 0 to forget) for the arena starting at `arena_address`.
// Returns false, changing nothing, if a node could not be mapped or the address is too high.
bool radix_set(uintptr_t arena_address, uint32_t value);

// Bytes of radix nodes mapped (the checker and the stats table report them).
uint64_t radix_bytes();

}  // namespace edu::stage2
