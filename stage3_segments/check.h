// stage3_segments/check.h: the heap checker and the heap walker.
// Entry points: check_heap (every invariant of types.h, first violation in words),
// walk_heap (segments at depth 0, pages at 1, blocks at 2). Neither changes the heap (the
// checker stamps the pages it meets in queues, in a field kept for it).
#pragma once

#include "contract/allocator.h"

namespace edu::stage3 {

CheckResult check_heap();
void walk_heap(WalkFn visit, void* context);

}  // namespace edu::stage3
