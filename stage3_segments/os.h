// stage3_segments/os.h: what stage 3 asks of the kernel, and the bytes it counts as held:
// aligned mappings, mappings at an exact address, unmapping, decommitting, and the footprint
// they add up to. Entry points: os_map_aligned, os_map_writable_at, os_commit,
// os_make_writable, os_where_mappings_go, os_unmap, os_decommit, os_commit_bytes, os_counters.
// No policy.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"
#include "contract/os.h"

namespace edu::stage3 {

struct OsCounters {
    uint64_t footprint = 0;        // bytes committed: metadata plus pages in use (see [S3.12])
    uint64_t peak_footprint = 0;
    uint64_t calls[static_cast<unsigned>(OsCall::count)] = {};
};
const OsCounters& os_counters();

// [S3.12] `size` bytes of address space aligned to `alignment` (a power of two, at least the
// OS page), inaccessible (PROT_NONE), or nullptr. First a plain mmap, which the kernel tends to
// place right below the previous one (so already aligned when sizes are multiples of the
// alignment); otherwise unmap it, map size + alignment and trim both ends. Nothing of it is
// usable or counted until os_commit makes it so: a mapping that is not writable is no "data"
// to the kernel (RLIMIT_DATA counts writable private memory), so a segment costs a data limit
// only the pages a heap uses, as glibc's heaps do. Nor is it charged to the system's commit
// until os_commit makes part of it writable, when the overcommit policy judges that part
// ([S3.68]: mapped without MAP_NORESERVE, which would exempt it).
void* os_map_aligned(std::size_t size, std::size_t alignment);
// [S3.38] Makes [address, address + size) readable and writable (mprotect) and counts it in
// the footprint; false, with nothing changed, when the kernel refuses (a data limit). Linux
// still backs the pages on first touch. Idempotent on memory already writable.
bool os_commit(void* address, std::size_t size);
// The same without counting: the segment map's own leaves, a fresh segment's header and first
// page ([S3.48]: segment.cc counts the header), and pages, which [S3.47] makes writable ahead of
// use and counts when taken.
bool os_make_writable(void* address, std::size_t size);
// False when the system refuses (contract/os.h: the range stays mapped, its pages given back).
bool os_unmap(void* address, std::size_t size);
// [S3.58] Under an address-space limit: whether one is in force now (os_address_space_limited)
// and a mapping at an exact address are contract/os.h's, written once for stages 3 and 4. This
// one maps `size` bytes readable and writable at exactly `at` (a lazily mapped segment's
// commit), counted in stage 3's calls: false with errno EEXIST when anything is mapped there
// already (nothing is ever replaced), ENOMEM when a limit refuses it. Not counted in the
// footprint, as os_make_writable.
bool os_map_writable_at(void* at, std::size_t size);
// [S3.59] Where a page the kernel would map now lies (nullptr if it maps none): the top of the
// space it hands out from, in the usual layout.
void* os_where_mappings_go();
// Gives the memory back (madvise MADV_DONTNEED: it reads as zero afterwards) and uncounts it;
// false, nothing uncounted, when the kernel refuses ([S3.70]: a locked page).
bool os_decommit(void* address, std::size_t size);
// calloc's zeroing of a block (contract/os.h's zero_fill, its madvise counted).
void os_zero(void* block, std::size_t size);
// Footprint bookkeeping only: `bytes` start (or stop, when negative) counting as held.
void os_commit_bytes(int64_t bytes);

}  // namespace edu::stage3
