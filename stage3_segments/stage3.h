// stage3_segments/stage3.h: stage 3's descriptor, the only thing most code needs of it.
// `descriptor.single_thread` is the fast path of the current mode (options "secure" and
// "stats"); `descriptor.thread_safe` wraps it in one lock (contract/locked.h). First-class
// heaps, which the contract has no words for, are in heaps.h.
#pragma once

#include "contract/allocator.h"

namespace edu::stage3 {

extern const Stage descriptor;

}  // namespace edu::stage3
