// contract/os.h: system calls that stages 3 and 4 make alike, written once: whether an
// address-space limit is in force, a mapping at an exact address, unmapping, decommitting. Each
// stage counts the calls in its own counters (stage 3's plain, stage 4's atomic) through
// `count`, and its footprint itself. Entry points: os_address_space_limited,
// os_map_writable_at, os_unmap, os_decommit.
#pragma once

#include <cstddef>

#include "contract/allocator.h"

namespace edu {

// A stage's counter of system calls: one call of `kind` made.
using OsCount = void (*)(OsCall kind);

// Whether an address-space limit (RLIMIT_AS: `ulimit -v`, containers) is in force now: asked
// of the kernel each time (getrlimit, on cold paths only), so a limit the program sets after
// starting counts too. Stage 3's [S3.58] and stage 4's [S4.66] decide by it.
bool os_address_space_limited();

// Maps `size` bytes of fresh zeroed memory, readable and writable, at exactly `at`; true when
// done. False when the system refuses: errno EEXIST when anything is mapped there already
// (MAP_FIXED_NOREPLACE replaces nothing; a kernel older than Linux 4.17 takes the flag for a
// mere hint, and what it mapped elsewhere is given back), ENOMEM when a limit refuses it.
// Stage 3's lazily mapped segments ([S3.58]) and stage 4's lazy arena ([S4.67]) commit so.
bool os_map_writable_at(void* at, std::size_t size, OsCount count);

// munmap of [address, address + size).
void os_unmap(void* address, std::size_t size, OsCount count);

// Gives the pages of [address, address + size) back, the mapping staying (madvise
// MADV_DONTNEED: they read as zero afterwards).
void os_decommit(void* address, std::size_t size, OsCount count);

}  // namespace edu
