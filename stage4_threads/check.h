// stage4_threads/check.h: the heap checker, the walker, and the live totals stats() needs when
// counting is off. Entry points: check_heap, walk_heap, count_live. All three read only what
// the calling thread may read while other threads run (see [S4.34]); none changes the heap.
#pragma once

#include <cstdint>

#include "contract/allocator.h"

namespace edu::stage4 {

CheckResult check_heap();
void walk_heap(WalkFn visit, void* context);

struct LiveTotals {
    uint64_t blocks = 0;
    uint64_t bytes = 0;
};
// Live blocks and usable bytes in the segments the caller can read.
LiveTotals count_live();

}  // namespace edu::stage4
