// stage4_threads/drop_in.h: malloc and free of the drop-in library's usual mode (statistics and
// secure mode off), inline, so that contract/preload.cc's exported malloc and free are the fast
// paths themselves, as mimalloc's are, rather than a jump to them. Entry point: DropIn.
#pragma once

#include <cstddef>

#include "stage4_threads/alloc.h"

namespace edu::stage4 {

// [S4.64] Stage 3's S3.57 for this stage's fast paths, which need no lock: the table of
// Mode<false> (stage4.cc) holds these two functions, so contract/preload.cc can tell that the
// entry it chose is this one and compile them into its exported malloc and free.
struct DropIn {
    static void* malloc(std::size_t size) { return heap_alloc<Mode<false>>(t_heap, size, size); }
    static void free(void* p) { heap_free<Mode<false>>(p); }
};

}  // namespace edu::stage4
