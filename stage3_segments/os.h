// stage3_segments/os.h: what stage 3 asks of the kernel, and the bytes it counts as held:
// aligned mappings, unmapping, decommitting, and the footprint they add up to.
// Entry points: os_map_aligned, os_unmap, os_decommit, os_commit_bytes, os_counters. No policy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu::stage3 {

struct OsCounters {
    uint64_t footprint = 0;        // bytes committed: metadata plus pages in use (see [S3.12])
    uint64_t peak_footprint = 0;
    uint64_t calls[static_cast<unsigned>(OsCall::count)] = {};
};
const OsCounters& os_counters();

// [S3.12] `size` bytes aligned to `alignment` (a power of two, at least the OS page), or
// nullptr. First a plain mmap, which the kernel tends to place right below the previous one
// (so already aligned when sizes are multiples of the alignment); otherwise unmap it, map
// size + alignment and trim both ends. Mapping commits nothing in the footprint: pages of a
// segment count only once a heap uses them (os_commit_bytes), because Linux backs anonymous
// memory on first touch, and memory given back with madvise is uncounted again.
void* os_map_aligned(std::size_t size, std::size_t alignment);
void os_unmap(void* address, std::size_t size);
// Gives the memory back (madvise MADV_DONTNEED: it reads as zero afterwards) and uncounts it.
void os_decommit(void* address, std::size_t size);
// Footprint bookkeeping only: `bytes` start (or stop, when negative) counting as held.
void os_commit_bytes(int64_t bytes);

}  // namespace edu::stage3
