// stage2_pools/arena.h: arenas: mapping them, handing out their pools, keeping the usable
// ones ordered, giving empty ones back to the OS. Entry points: arena_take_pool,
// arena_take_back_pool, arena_set_geometry. What happens inside a pool: pool.h.
#pragma once

#include "stage2_pools/types.h"

namespace edu::stage2 {

// An empty pool from the fullest usable arena (mapping a new arena if none is usable), with
// `arena_index` set. A never-used pool has next_offset == 0; a reused one keeps its old
// class and free list, so pool.h can skip re-initialising it. When no arena can be mapped, a
// pool of stage 1's ([S2.35]: arena_index == kNoArena, next_offset == 0). nullptr when out of
// memory.
Pool* arena_take_pool();

// `pool` has just become empty: back to its arena, which moves in the usable list or, if
// entirely free, is unmapped (unless it is the last usable arena, kept against thrashing).
// A pool of stage 1's goes back to stage 1.
void arena_take_back_pool(Pool* pool);

// [S2.35] The pool of stage 1's that holds `address`, found by the raw table's entry at its
// pool address; nullptr if none does. Reads no memory at `address`.
Pool* stage1_pool_of(uintptr_t address);

// Switches geometry, unmapping every arena. False, changing nothing, if any pool is in use
// (a pool of stage 1's is always in use).
bool arena_set_geometry(const Geometry& geometry);

// Bytes of the arena table (the stats table reports them).
uint64_t arena_table_bytes();

}  // namespace edu::stage2
