// stage2_pools/os.h: stage 2's only door to the kernel: anonymous mappings, counted.
// Entry points: os_map, os_map_aligned, os_unmap, os_zero (calloc's). Every mapping stage 2
// makes (arenas, the arena table, radix nodes, the raw table) goes through here, and every
// madvise of calloc's zeroing, so Counters stay exact.
#pragma once

#include <cstddef>

namespace edu::stage2 {

// Bytes in an OS page: the tables stage 2 maps for itself (the arena table, the raw table's
// pieces) grow in whole pages.
inline constexpr std::size_t kPage = 4096;

// Zeroed, readable and writable pages; nullptr if the kernel refuses. `bytes` is rounded up
// to the page size by the kernel; pass the same `bytes` to os_unmap.
void* os_map(std::size_t bytes);

// As os_map, but the start is a multiple of `alignment` (a power of two >= the page size).
// Tries `hint` first (a guess where an aligned range is free), then over-maps and trims.
void* os_map_aligned(std::size_t bytes, std::size_t alignment, void* hint);

// False if the kernel refused (at the map count's limit, an munmap that splits a mapping
// needs one more): the range stays mapped, its pages given back (they read zero again), and
// errno is as it was (contract/os.h). Counters count it unmapped only when it was.
bool os_unmap(void* address, std::size_t bytes);

// calloc's zeroing of a block of `bytes` (contract/os.h's zero_fill, its madvise counted).
void os_zero(void* block, std::size_t bytes);

}  // namespace edu::stage2
