// stage4_threads/stage4.h: stage 4's descriptor, the only thing other code needs of it.
// `descriptor.single_thread` and `descriptor.thread_safe` are one table, the fast paths of the
// current mode (option "stats"): any number of threads may call it at once, with no lock.
#pragma once

#include "contract/allocator.h"

namespace edu::stage4 {

extern const Stage descriptor;

// [S4.50] The drop-in library's direct calls (tools/preload.bzl, `direct = True`): malloc and
// free of the mode a user gets (stats off). They are the functions the descriptor's
// table holds in that mode, which is how contract/preload.cc knows it may call them by name.
void* direct_malloc(std::size_t size);
void direct_free(void* ptr);

}  // namespace edu::stage4
