// stage2_pools/raw.h: the raw domain: what pools cannot serve goes to stage 1, and a table of
// the live raw blocks lets free tell them from foreign pointers without asking stage 1.
// Entry points: raw_alloc / raw_resize / raw_release (stage 1), raw_track / raw_find /
// raw_untrack / raw_retrack (the table). Routing and counting: stage2.cc.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu::stage2 {

// [S2.18] One live raw block. Stage 1 would abort on a pointer it does not know, naming
// itself; stage 2 must name itself, so it keeps its own table: open addressing, linear
// probing, keyed by the pointer the program holds. In debug mode that pointer lies inside
// the stage-1 block (after the front fence), hence two addresses.
struct RawEntry {
    uintptr_t user;        // what malloc returned; 0 marks an empty slot
    uintptr_t block;       // the stage-1 block; bit 0 set while the block sits in quarantine
    uint64_t usable;       // bytes usable_size reports for `user`
};
inline constexpr uintptr_t kQuarantined = 1;
// [S2.35] Set in `block` when the entry is a pool of stage 1's, not a block of the program's: its
// `user` and its block are the pool's address, `usable` the pool's bytes.
inline constexpr uintptr_t kPoolEntry = 2;
inline bool raw_is_pool(const RawEntry& entry) { return entry.block & kPoolEntry; }

// Stage 1 through its thread-safe entry (see raw.cc for why).
void* raw_alloc(std::size_t bytes, std::size_t alignment);  // nullptr: errno set by stage 1
void* raw_resize(void* block, std::size_t bytes);           // nullptr: block unchanged
void raw_release(void* block);
std::size_t raw_block_usable(const void* block);            // stage 1's usable size

// The table. raw_track returns false (table unchanged) if the table could not grow.
bool raw_track(uintptr_t user, uintptr_t block, uint64_t usable);
RawEntry* raw_find(uintptr_t user);                 // nullptr: not a live raw block
void raw_untrack(RawEntry* entry);                  // invalidates every RawEntry*
void raw_retrack(RawEntry* entry, uintptr_t user, uintptr_t block, uint64_t usable);

// Stage 1's own checker, statistics and walker (the raw domain's part of ours).
CheckResult raw_check();
Stats raw_stats();
void raw_walk(WalkFn visit, void* context);

// For the checker, walker and stats: slots 0 .. raw_capacity() - 1 (some empty: user == 0).
RawEntry* raw_slot(uint64_t i);
uint64_t raw_capacity();
uint64_t raw_count();
uint64_t raw_table_bytes();             // mapped bytes of the table (0 while it is stage 1's)
uint64_t raw_table_blocks_in_stage1();  // its pieces and directory, while stage 1's ([S2.34])
bool raw_table_holds(const void* block);  // a used block of stage 1's is part of the table

}  // namespace edu::stage2
