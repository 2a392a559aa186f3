// contract/mapped.h: blocks aligned beyond what a stage's own layout serves (stages 3 and 4:
// above 2 MiB, since a 4 MiB segment starts with its header), each in a mapping of its own
// trimmed to the alignment, as glibc and mimalloc serve such requests. Written once for the
// stages that need it, which count the blocks in their Stats, checker and walk like their own.
// Entry points: mapped_aligned_alloc, mapped_block_size, mapped_resize, mapped_free,
// mapped_totals, mapped_walk.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu {

// Stage::max_alignment of a stage that sends its largest alignments here (stage 1's limit too).
inline constexpr std::size_t kMappedMaxAlignment = std::size_t{64} << 20;

// Every call names the stage that owns the block (Stage::number): stages linked into one
// process (the diff tool, the lockstep test) share the list but never each other's blocks.

// A block of at least `size` bytes at a multiple of `alignment` (a power of two of at least a
// system page), its usable size in *usable. Its record sits in the page in front of it, and a
// table of the live ones' addresses lets the calls below tell them from every other pointer in
// one or two probes, however many live. nullptr with
// errno = ENOMEM when the size overflows or the system has no room.
void* mapped_aligned_alloc(int owner, std::size_t alignment, std::size_t size, std::size_t* usable);

// The usable size of `p` if it is a live block of `owner`, else 0. Cheap for every other
// pointer while no such block exists, or when `p` is not page-aligned.
std::size_t mapped_block_size(int owner, const void* p);

// Resizes `p`, a live block of `owner`, to hold `size` bytes without copying them, as glibc
// resizes its mapped chunks (mremap_chunk): a block whose size in whole pages stays is left as
// it is; a smaller one gives its tail back; a larger one grows where the pages past it are
// free, or its pages move whole to where there is room (mremap with MREMAP_MAYMOVE: the kernel
// moves page table entries, not bytes). A block aligned above a page (aligned_alloc) only
// grows in place, since a move would keep only page alignment. Returns the block, moved or
// not, with its usable size in *usable; the table follows a move. nullptr, with `p` and errno
// untouched, when `p` is no such block or the system refuses: the caller copies instead.
void* mapped_resize(int owner, void* p, std::size_t size, std::size_t* usable);

// Unmaps `p` and returns its usable size if it is a live block of `owner`; otherwise does
// nothing and returns 0 (the stage then says what `p` is not).
std::size_t mapped_free(int owner, void* p);

// What a block holds of the system, for the owner's footprint: its pages and its
// record's page. The owner adds it when mapped_aligned_alloc returns a block and takes it off
// when mapped_free unmaps one, so its peak footprint stays exact.
std::size_t mapped_footprint(std::size_t usable);

// The owner's live blocks, their usable bytes and footprint (its checker and its live counts
// with statistics off), and the system calls made for it so far, indexed by OsCall.
struct MappedTotals {
    uint64_t blocks = 0;
    uint64_t usable_bytes = 0;
    uint64_t footprint = 0;
    uint64_t os_calls[static_cast<unsigned>(OsCall::count)] = {};
};
MappedTotals mapped_totals(int owner);

// The owner's live blocks for its walk, newest first: each mapping (depth 0, meta, "mapping"),
// then inside it the record's page (depth 1, meta, "mapping record") and the block (depth 1,
// used, "block"). False if `visit` stopped the walk. `visit` runs under the list's lock: it
// may not allocate or free an over-aligned block.
bool mapped_walk(int owner, WalkFn visit, void* context);

// fork(2): the list's lock is held across the fork, as the stages' own (contract/preload.cc).
void mapped_prepare_fork();
void mapped_after_fork_parent();
void mapped_after_fork_child();

}  // namespace edu
