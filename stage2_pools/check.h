// stage2_pools/check.h: the heap checker (every invariant written in types.h, arena.h and
// pool.h, then stage 1's) and the walker (arenas, pools, blocks, then stage 1's regions).
// Entry points: check_heap, walk_heap. Both only read; neither allocates.
#pragma once

#include "contract/allocator.h"

namespace edu::stage2 {

CheckResult check_heap();
void walk_heap(WalkFn visit, void* context);

}  // namespace edu::stage2
