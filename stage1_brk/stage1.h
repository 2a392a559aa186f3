// stage1_brk/stage1.h: stage 1's descriptor, the only thing other code needs of this stage.
// `descriptor.single_thread` calls the assembly core directly; `descriptor.thread_safe` wraps
// it in one lock (contract/locked.h). Stage 2 uses `single_thread` as its raw domain.
#pragma once

#include "contract/allocator.h"

namespace edu::stage1 {

extern const Stage descriptor;

}  // namespace edu::stage1
