// stage1_brk/core.h: the C view of the assembly core (heap.asm, freelist.asm, block.asm,
// malloc.asm, check.asm) and of its C++ twin (twin.h), which implement the same algorithm.
// Sizes here are block sizes (the whole block, tags included) unless a name says "usable".
// Not thread-safe: the adapter (stage1.cc) serialises callers. Layout: see types.inc.
#pragma once

#include <cstddef>
#include <cstdint>

#define S1_HIDDEN __attribute__((visibility("hidden")))

extern "C" {

// ---- Layout constants (must equal types.inc: stage1_test's "core.h and the twin use the
// layout constants that types.inc assembles with" compares them, [S1.50]) ----
inline constexpr uint64_t kS1Alloc = 1;             // header flag: the block is allocated
inline constexpr uint64_t kS1Flags = 15;            // low bits of a tag that are not size
inline constexpr uint64_t kS1Align = 16;            // payload alignment
inline constexpr uint64_t kS1Overhead = 8;          // a used block's header (no footer)
inline constexpr uint64_t kS1PrevFree = 2;          // header flag: the block before is free
inline constexpr uint64_t kS1MinBlock = 32;         // header, next, prev, footer
inline constexpr uint64_t kS1MaxRequest = 1ull << 46;  // larger requests fail with ENOMEM
inline constexpr uint64_t kS1RegionHeader = 8;      // the region's end; its link is in the epilogue
inline constexpr uint64_t kS1Poison = 0xdeadbeefdeadbee0ull;      // header of an absorbed block
inline constexpr uint64_t kS1MaxAlignment = 1ull << 26;            // 64 MiB: Stage::max_alignment
inline constexpr uint64_t kS1Page = 4096;           // trimming and releasing granule
inline constexpr uint64_t kS1TrimFollowMin = 1ull << 20;   // [S1.43] the smallest freed block the trim follows
inline constexpr uint64_t kS1TrimFollowMax = 32ull << 20;  // [S1.43] the largest
inline constexpr uint64_t kS1Next = 8, kS1Prev = 16;       // a free block's list links, from its header
inline constexpr uint64_t kS1RegionEnd = 0;         // the region's end word, from its start

// ---- Status codes: s1_free's result and s1_status after a failed call ----
enum S1Status : uint32_t {
    S1_OK = 0,
    S1_ENOMEM = 1,          // request too large, or sbrk failed; heap unchanged
    S1_FOREIGN = 2,         // pointer not inside any region of this heap
    S1_MISALIGNED = 3,      // not 16-byte aligned, so never a payload of ours
    S1_NOT_A_BLOCK = 4,     // inside the heap but no valid block starts there (interior pointer)
    S1_DOUBLE_FREE = 5,     // the block is already free
    S1_HEAP_DAMAGED = 6,    // a region's end word or link was overwritten: the heap cannot tell
};

// ---- Fit policies (s1_fit_policy) ----
enum S1Fit : uint64_t { S1_FIT_FIRST = 0, S1_FIT_NEXT = 1, S1_FIT_BEST = 2, S1_FIT_SEG = 3 };
inline constexpr uint64_t kS1Classes = 64;    // size classes of the segregated fit
inline constexpr uint64_t kS1SegScan = 16;    // blocks it compares within a class
inline constexpr uint64_t kS1SplitBack = 128; // seg fit: blocks this large go at a free block's back
inline constexpr uint64_t kS1SliverShift = 4; // seg fit, a hole: a rest under asize >> 4 stays in the block [S1.44]
inline constexpr uint64_t kS1GrowShift = 8;   // growth margin = footprint >> 8, bounded
inline constexpr uint64_t kS1SmallGrowShift = 5;  // seg fit, a small block's growth: >> 5 [S1.42]
// s1_heap_grow's rsi: the margin (a 256th), none [S1.38], or a 32nd [S1.42]
enum S1Grow : uint64_t { S1_GROW_MARGIN = 0, S1_GROW_EXACT = 1, S1_GROW_WIDE = 2 };

// ---- Walk kinds, passed to the visitor ----
enum S1Kind : uint64_t { S1_KIND_REGION = 0, S1_KIND_FENCE = 1, S1_KIND_USED = 2, S1_KIND_FREE = 3 };

// ---- Heap check codes (s1_check's result) ----
enum S1Check : uint64_t {
    S1_CHECK_OK = 0,
    S1_CHECK_REGION_END = 1,      // a region's end word misaligned, too small or above the top [S1.39]
    S1_CHECK_REGION_ORDER = 2,    // regions not ascending / overlapping / above the top
                                  // (3 was the prologue's check, gone with it [S1.37])
    S1_CHECK_BLOCK_SIZE = 4,      // block size below the minimum
    S1_CHECK_PAST_END = 5,        // block runs past its region's epilogue
    S1_CHECK_FOOTER = 6,          // footer differs from header
    S1_CHECK_FLAGS = 7,           // unknown flag bits in a header
    S1_CHECK_ADJACENT_FREE = 8,   // two free blocks side by side (a missed coalesce)
    S1_CHECK_EPILOGUE = 9,        // epilogue fence damaged
    S1_CHECK_LIST_FOREIGN = 10,   // a free-list node outside the heap or not a free block
    S1_CHECK_LIST_LINK = 11,      // a node's prev link does not point back
    S1_CHECK_LIST_COUNT = 12,     // free-list length differs from free blocks in the heap (or a cycle)
    S1_CHECK_LIST_CLASS = 13,     // a free block on another class's list, or the class map is wrong
};

// Filled by s1_check.
struct S1Report {
    uint64_t code;          // S1Check
    uint64_t address;       // the offending header (or region) address, 0 if none
    uint64_t used_blocks;
    uint64_t used_bytes;    // usable bytes of used blocks
    uint64_t free_blocks;
    uint64_t free_bytes;    // block bytes of free blocks
    uint64_t regions;
    uint64_t heap_bytes;    // bytes covered by regions
};

// Visitor for s1_walk: kind, address of the header (region start for regions), block size.
// Return 0 to stop the walk.
typedef int (*S1VisitFn)(void* context, uint64_t kind, uint64_t address, uint64_t size);

// sbrk-compatible function: returns the old break, or (void*)-1 on failure.
typedef void* (*S1SbrkFn)(intptr_t increment);

// ---- Procedures (NASM) ----
void* s1_malloc(size_t size) S1_HIDDEN;                    // nullptr: S1_ENOMEM
uint32_t s1_free(void* ptr) S1_HIDDEN;                     // S1Status; heap unchanged unless S1_OK
void* s1_realloc(void* ptr, size_t size) S1_HIDDEN;        // nullptr: see s1_status; old block intact
void* s1_memalign(size_t alignment, size_t size) S1_HIDDEN;  // power-of-two alignment <= kS1MaxAlignment
size_t s1_usable_size(const void* ptr) S1_HIDDEN;          // 0 and s1_status set for a bad pointer
uint32_t s1_validate(const void* ptr) S1_HIDDEN;           // S1Status of a pointer about to be freed
uint64_t s1_check(S1Report* report) S1_HIDDEN;             // S1Check
void s1_walk(S1VisitFn visit, void* context) S1_HIDDEN;
void s1_reset(void) S1_HIDDEN;                             // forget the heap (tests with a hook)
void s1_set_fit(uint64_t policy) S1_HIDDEN;                // S1Fit; refiles free blocks if needed
uint64_t s1_size_class(uint64_t size) S1_HIDDEN;           // the list a free block belongs on

// ---- Provided by the adapter (stage1.cc), called by the core ----
// A free block's list neighbours do not point back at it (a write after free reached its
// links): one diagnostic line naming the block, then abort. Never returns.
[[noreturn]] void s1_list_corrupted(uint64_t header) S1_HIDDEN;

// ---- State and tunables (NASM data) ----
extern uint32_t s1_status S1_HIDDEN;            // why the last failing call failed
extern uint64_t s1_fit_policy S1_HIDDEN;        // S1Fit (change it with s1_set_fit)
extern uint64_t s1_grow_margin S1_HIDDEN;       // largest margin per heap growth (default 1 MiB)
extern uint64_t s1_trim_threshold S1_HIDDEN;    // trailing free bytes that trigger a trim (128 KiB)
extern uint64_t s1_trim_fixed S1_HIDDEN;        // 1: the trim option fixed the threshold [S1.43]
extern uint64_t s1_trim_followed S1_HIDDEN;     // twice the largest large block freed, <= 64 MiB [S1.43]
extern S1SbrkFn s1_sbrk_hook S1_HIDDEN;         // nullptr: libc sbrk
extern uint64_t s1_brk_calls S1_HIDDEN;         // sbrk calls that moved the break
extern uint64_t s1_footprint S1_HIDDEN;         // bytes obtained with sbrk and not given back
extern uint64_t s1_peak_footprint S1_HIDDEN;
extern uint64_t s1_madvise_calls S1_HIDDEN;     // madvise(MADV_DONTNEED) calls: pages given back
extern uint64_t s1_purge_floor S1_HIDDEN;       // dirty bytes a heap may always keep (4 MiB)
extern uint64_t s1_dirty_bytes S1_HIDDEN;       // estimate: free bytes in large runs, still resident
extern uint64_t s1_free_bytes S1_HIDDEN;        // bytes of the blocks on the free lists

}  // extern "C"

// Usable bytes of a block the caller knows is valid (just returned by the core, or just
// validated): read straight from its header, without s1_usable_size's validation.
inline size_t s1_block_usable(const void* payload) {
    uint64_t tag = *reinterpret_cast<const uint64_t*>(static_cast<const char*>(payload) - kS1Overhead);
    return (tag & ~uint64_t{15}) - kS1Overhead;
}
