// contract/memcheck.h: valgrind's memcheck told about every stage's blocks, written once.
// memcheck_entry(inner) wraps a stage's entry with client requests: each block announced
// allocated (VALGRIND_MALLOCLIKE_BLOCK) and freed (FREELIKE_BLOCK), its slack and freed memory
// made inaccessible, the stage's own work on its heap exempt from reports.
#pragma once

#include "contract/allocator.h"

namespace edu {

// True when the process runs under valgrind's memcheck (a few instructions, no system call).
// Other tools (callgrind, cachegrind, massif) get the stage as it is, so that their counts
// profile the allocator a user runs and not this layer (whose realloc always moves).
bool running_on_memcheck();

// The annotating layer over `inner`. One per process: the drop-in library's entry. Under
// it realloc always moves (as valgrind's own realloc does), so a stale pointer is seen.
const Api& memcheck_entry(const Api& inner);

}  // namespace edu
