// stage4_threads/os.h: what stage 4 asks of the kernel and the bytes it counts as held, safe
// for every thread at once: the arena reservation, heap records, decommit, and the footprint.
// Entry points: os_reserve, os_commit_range, os_release_range, os_map, os_map_writable_at,
// os_unmap, os_decommit, os_commit_bytes, raise_peak, os_counters (os_address_space_limited is
// contract/os.h's). Stage 3's os.cc does the same for one thread with plain counters; these are
// atomic.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"
#include "contract/os.h"

namespace edu::stage4 {

// [S4.14] The footprint is committed bytes, as in stage 3 (S3.12): segment metadata, pages in
// use or dirty, what one-block pages reach, and heap records. Any thread that commits or
// decommits adds to it with a relaxed fetch_add, on slow paths only; the peak is raised with a
// CAS loop. Relaxed is enough: nothing else is published through these numbers, and a reader
// that runs while others work gets some recent value, which is all Stats promises.
struct OsCounters {
    std::atomic<uint64_t> footprint{0};
    std::atomic<uint64_t> peak_footprint{0};
    std::atomic<uint64_t> changes{0};     // commits and decommits so far (the checker's witness)
    std::atomic<uint64_t> calls[static_cast<unsigned>(OsCall::count)] = {};
};
const OsCounters& os_counters();

// [S4.39] Address space without commitment: PROT_NONE (the arena; [S4.74]: without
// MAP_NORESERVE, so that a commit is charged to the system's and judged by its overcommit
// policy, as glibc's mmap is). Touching it
// faults until a range is committed: mprotect makes it readable and writable (the pages are
// fresh zeros, backed on first touch); releasing maps it back to PROT_NONE with mmap(MAP_FIXED),
// which also gives the pages back. A segment is committed piece by piece, as stage 3's
// (S3.38): its metadata when claimed, pages when first used in growing steps (S3.47), a
// one-block page up to what its block reaches, so a data limit (RLIMIT_DATA counts writable
// private memory, and counts it at mprotect) is charged at most twice what the heap uses, not
// 4 MiB a segment. Counted as mprotect and
// mmap calls. nullptr / false if the system refuses.
void* os_reserve(std::size_t size);
bool os_commit_range(void* address, std::size_t size);
// [S4.76] Releasing can be refused too: the mmap needs a mapping more while it works (it splits
// the reservation where the range ends inside it), which a process at its map count limit
// (vm.max_map_count) does not get, and the range is left as it was, writable, its pages resident
// with the old blocks' bytes. Then its pages go back with madvise (MADV_DONTNEED, which needs no
// mapping: they read as zero afterwards) and the range stays writable: false. Either way the
// memory is given back, as the footprint, uncounted by the caller, says.
bool os_release_range(void* address, std::size_t size);
// [S4.66] Whether an address-space limit (RLIMIT_AS: `ulimit -v`, containers) is in force now
// is contract/os.h's os_address_space_limited, stage 3's too (S3.58): asked of the kernel
// each time (a cold path that is about to claim a segment), so a limit the program sets after
// starting counts too.
// Ordinary anonymous memory (heap records), zeroed; nullptr if refused.
void* os_map(std::size_t size);
// [S4.67] `size` bytes of fresh zeroed memory, readable and writable, at exactly `address` (a
// lazy arena's slots, arena.h): contract/os.h's os_map_writable_at, as stage 3's (S3.58),
// counted here. False if the system refuses, with errno EEXIST when something is mapped there
// already, which stays untouched.
bool os_map_writable_at(void* address, std::size_t size);
// False when the system refuses (contract/os.h).
bool os_unmap(void* address, std::size_t size);
// Gives committed memory back (madvise MADV_DONTNEED: it reads as zero afterwards) and uncounts it;
// false, nothing uncounted, when the kernel refuses (S3.70: a locked page).
bool os_decommit(void* address, std::size_t size);
// calloc's zeroing of a block (contract/os.h's zero_fill, its madvise counted).
void os_zero(void* block, std::size_t size);
void os_commit_bytes(int64_t bytes);
// Raises `peak` to at least `value` (a CAS loop; relaxed).
void raise_peak(std::atomic<uint64_t>& peak, uint64_t value);

}  // namespace edu::stage4
