// stage2_pools/radix.cc: filling the radix tree of radix.h; nodes come from os_map.
#include "stage2_pools/radix.h"

#include "stage2_pools/os.h"

namespace edu::stage2 {

constinit RadixRoot g_radix = {};

namespace {
uint64_t g_node_bytes = 0;
}  // namespace

bool radix_set(uintptr_t arena_address, uint32_t value) {
    uintptr_t key = arena_address >> g_heap.arena_shift;
    uintptr_t top = key >> (kMidBits + kLeafBits);
    if (top >= (uintptr_t{1} << kRootBits)) return false;
    RadixMid*& mid = g_radix.mid[top];
    if (!mid) {
        if (value == 0) return true;
        mid = static_cast<RadixMid*>(os_map(sizeof(RadixMid)));
        if (!mid) return false;
        g_node_bytes += sizeof(RadixMid);
    }
    RadixLeaf*& leaf = mid->leaf[(key >> kLeafBits) & ((1u << kMidBits) - 1)];
    if (!leaf) {
        if (value == 0) return true;
        leaf = static_cast<RadixLeaf*>(os_map(sizeof(RadixLeaf)));
        if (!leaf) return false;
        g_node_bytes += sizeof(RadixLeaf);
    }
    leaf->arena[key & ((1u << kLeafBits) - 1)] = value;
    return true;
}

uint64_t radix_bytes() { return g_node_bytes; }

}  // namespace edu::stage2
