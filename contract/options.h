// contract/options.h: stage options from the environment, for every stage at once.
// EDU_OPTIONS="stage1_brk.fit=best stage1_brk.break=reserved stage2_pools.geometry=modern"
// sets each named option of each named stage (separated by spaces or commas). The preload
// shim, the battery and the tools call this once; it never allocates.
#pragma once

#include "contract/allocator.h"

namespace edu {

// Applies every EDU_OPTIONS entry addressed to `stage`. Returns false (after one line on
// stderr per entry) when an entry names an unknown option or value of this stage.
bool apply_environment_options(const Stage& stage);

}  // namespace edu
