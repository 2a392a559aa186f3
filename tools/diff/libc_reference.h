// tools/diff/libc_reference.h: the C library's malloc as a column of the diff.
// A `Stage` descriptor over glibc's malloc, free, calloc, realloc, aligned_alloc and
// malloc_usable_size, so the driver replays a trace through it like any stage. It has no checker
// and no walker (the replay runs with ReplayOptions::reference); its footprint comes from
// mallinfo2 (see libc_reference.cc for exactly what is counted).
#pragma once

#include "contract/allocator.h"

namespace edu::diff {

// Its name in tables and JSON: "libc". Not registered: it is not a stage of the course.
const Stage& libc_reference();

}  // namespace edu::diff
