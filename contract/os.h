// contract/os.h: system calls that stages make alike, written once: whether an address-space
// or data limit is in force, a mapping at an exact address, unmapping, decommitting (stages 3 and 4),
// and calloc's zeroing (every stage). Each stage counts the calls in its own counters through
// `count`, and its footprint itself. Entry points: os_address_space_limited, os_data_limited,
// os_map_writable_at, os_unmap, os_decommit, zero_fill (zero_fill_large).
#pragma once

#include <cstddef>
#include <cstring>

#include "contract/allocator.h"

namespace edu {

// A stage's counter of system calls: one call of `kind` made.
using OsCount = void (*)(OsCall kind);

// Whether an address-space limit (RLIMIT_AS: `ulimit -v`, containers) is in force now: asked
// of the kernel each time (getrlimit, on cold paths only), so a limit the program sets after
// starting counts too. Stage 3's [S3.58] and stage 4's [S4.66] decide by it.
bool os_address_space_limited();

// Whether a data limit (RLIMIT_DATA: `ulimit -d`, `prlimit --data`) is in force now: it charges
// every private writable mapping, not the address space reserved PROT_NONE, so a large block
// that a segment would hold in 64 KiB slots gets a mapping of its own under it too ([S3.76],
// stage 4's [S4.83]). Asked as os_address_space_limited is.
bool os_data_limited();

// Maps `size` bytes of fresh zeroed memory, readable and writable, at exactly `at`; true when
// done. False when the system refuses: errno EEXIST when anything is mapped there already
// (MAP_FIXED_NOREPLACE replaces nothing; a kernel older than Linux 4.17 takes the flag for a
// mere hint, and what it mapped elsewhere is given back), ENOMEM when a limit refuses it.
// Stage 3's lazily mapped segments ([S3.58]) and stage 4's lazy arena ([S4.67]) commit so.
bool os_map_writable_at(void* at, std::size_t size, OsCount count);

// munmap of [address, address + size). False when the system refuses: at the map count's limit
// (vm.max_map_count) a munmap that would cut a hole in a mapping, adding one, fails with ENOMEM.
// The range then stays mapped, and its pages are given back as os_decommit does (they read as
// zero afterwards, unless locked); errno is left as it was.
bool os_unmap(void* address, std::size_t size, OsCount count);

// Gives the pages of [address, address + size) back, the mapping staying (madvise
// MADV_DONTNEED: they read as zero afterwards). False when the kernel refuses (EINVAL where a
// page is locked, by mlock or mlockall): then the pages from the first locked one on stay as
// they were, errno too.
bool os_decommit(void* address, std::size_t size, OsCount count);

// calloc's zeroing: [p, p + n) reads as zero afterwards. A big block is mostly fresh from the
// kernel, zero already, and writing it made every page resident: calloc of 1 GiB that the program
// touched at one byte held 1 GiB resident in all four stages (glibc 1.4 MiB: it skips the memset
// of memory it just mapped), and a sparse table larger than the machine's memory was killed. So
// from kZeroByDiscard bytes on, the pages that hold data are written, in order, up to the first
// whole page that reads as zero, where the fresh part begins (stage 1's block at the top of the
// heap is a small freed tail followed by new break): from there the whole pages are discarded
// (madvise MADV_DONTNEED, counted by `count`; a stage's blocks lie in private anonymous memory,
// whose discarded pages read as zero), and the partial page at the end is written. Discarding
// every block, dirty ones too, cost the program a page fault for every page it touched afterwards:
// a calloc, fill and free of 1 MiB in a loop ran 9 times slower. Reading a fresh page maps only
// the kernel's zero page. Pages the kernel refuses to discard (locked by mlockall) are written.
inline constexpr std::size_t kZeroByDiscard = std::size_t{1} << 20;
void zero_fill_large(void* p, std::size_t n, OsCount count);
inline void zero_fill(void* p, std::size_t n, OsCount count) {
    if (n < kZeroByDiscard) [[likely]] std::memset(p, 0, n);   // calloc's small blocks, as before
    else zero_fill_large(p, n, count);
}

}  // namespace edu
