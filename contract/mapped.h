// contract/mapped.h: blocks aligned beyond what a stage's own layout serves (stages 3 and 4:
// above 2 MiB, since a 4 MiB segment starts with its header), each in a mapping of its own
// trimmed to the alignment, as glibc and mimalloc serve such requests. Written once for the
// stages that need it. Entry points: mapped_aligned_alloc, mapped_block_size, mapped_free.
#pragma once

#include <cstddef>

namespace edu {

// Stage::max_alignment of a stage that sends its largest alignments here (stage 1's limit too).
inline constexpr std::size_t kMappedMaxAlignment = std::size_t{64} << 20;

// A block of at least `size` bytes at a multiple of `alignment` (a power of two of at least a
// system page). Its record sits in the page in front of it, and a list of the live ones lets
// the calls below tell them from every other pointer. nullptr with errno = ENOMEM when the
// size overflows or the system has no room.
void* mapped_aligned_alloc(std::size_t alignment, std::size_t size);

// The usable size of `p` if it is a live block of mapped_aligned_alloc, else 0. Cheap for
// every other pointer while no such block exists, or when `p` is not page-aligned.
std::size_t mapped_block_size(const void* p);

// Unmaps `p` and returns true if it is a live block of mapped_aligned_alloc; otherwise does
// nothing and returns false (the stage then says what `p` is not).
bool mapped_free(void* p);

// fork(2): the list's lock is held across the fork, as the stages' own (contract/preload.cc).
void mapped_prepare_fork();
void mapped_after_fork_parent();
void mapped_after_fork_child();

}  // namespace edu
