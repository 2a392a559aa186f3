// stage2_pools/stage2.h: stage 2's descriptor, the only thing other code needs of this stage,
// plus its per-class statistics table. `descriptor.single_thread` runs the pools directly;
// `descriptor.thread_safe` wraps them in one lock (contract/locked.h).
#pragma once

#include "contract/allocator.h"

namespace edu::stage2 {

extern const Stage descriptor;

// Per-class pools / blocks in use / available blocks, arenas and pool states, on stderr
// (like CPython's sys._debugmallocstats()). Takes the stage's lock; allocates nothing.
void print_pool_statistics();

}  // namespace edu::stage2
