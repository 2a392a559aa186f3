// stage4_threads/stage4.h: stage 4's descriptor, the only thing other code needs of it.
// `descriptor.single_thread` and `descriptor.thread_safe` are one table, the fast paths of the
// current mode (option "stats"): any number of threads may call it at once, with no lock.
#pragma once

#include "contract/allocator.h"

namespace edu::stage4 {

extern const Stage descriptor;

}  // namespace edu::stage4
