// contract/report.h: a stage's statistics as a few readable lines, without allocating.
// Used by the preload shim (EDU_ALLOC_STATS=1 prints at exit) and by the demo.
#pragma once

#include "contract/allocator.h"

namespace edu {

// Writes the statistics of `stage` (through its thread-safe entry) to stderr.
void print_stats(const Stage& stage, const Stats& stats);

}  // namespace edu
