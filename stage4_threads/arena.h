// stage4_threads/arena.h: the process-wide arena: one range cut into 4 MiB slots, reserved (or,
// under an address-space limit, mapped as used), an atomic bitmap of claimed slots, the start
// marker of every published segment, the bitmap of abandoned segments. Entry points:
// arena_ready, arena_claim, arena_commit, arena_release, arena_refused, arena_publish,
// arena_blocks_at, abandoned_*, and the bitmap primitives the tests drive directly.
// What lives in a segment is segment.h's business; who owns it is abandon.h's and registry.h's.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.11] Claiming a run of bits. bitmap_claim finds `count` consecutive zero bits among the
// first `bits` and sets them. A run of at most 64 bits lies inside one word: the word is read,
// a run of zeros found with shifts and ANDs, and the bits set with one compare-and-swap; if
// another thread changed the word in between, the CAS fails, hands back the new value, and the
// search of that word starts over. A longer run starts at a word boundary and is claimed word
// by word, in address order; if a later word turns out taken, the words already claimed are
// released and the search moves on. Returns the first bit, or -1 when no run is free.
// `hint` is the word to look at first (the search wraps around).
int64_t bitmap_claim(std::atomic<uint64_t>* words, uint32_t bits, uint32_t count, uint32_t hint);
// Clears bits [first, first + count), which the caller claimed.
void bitmap_release(std::atomic<uint64_t>* words, uint32_t first, uint32_t count);
// True when bits [first, first + count) are all set.
bool bitmap_all_set(const std::atomic<uint64_t>* words, uint32_t first, uint32_t count);

// Reserves the arena on first use (once per process, from whichever thread gets there first,
// before main included); true when it exists. Every other function here needs it to be true.
bool arena_ready();

// The arena's address and size, and the start markers ([S4.12]): read on every remote free,
// so inline. Written once by the reserving thread before arena_ready() first returns true.
namespace arena_internal {
extern std::atomic<uintptr_t> g_base;
extern std::atomic<uint64_t> g_bytes;
extern std::atomic<uint32_t> g_starts[kArenaSlots];
}  // namespace arena_internal

inline uintptr_t arena_base() { return arena_internal::g_base.load(std::memory_order_relaxed); }
inline uint64_t arena_bytes() { return arena_internal::g_bytes.load(std::memory_order_relaxed); }
inline uint32_t arena_slots() { return static_cast<uint32_t>(arena_bytes() >> kSegmentShift); }

// Arena slot of `p`, or kArenaSlots when p lies outside the arena.
inline uint32_t arena_slot_of(const void* p) {
    uintptr_t offset = reinterpret_cast<uintptr_t>(p) - arena_base();
    return offset < arena_bytes() ? static_cast<uint32_t>(offset >> kSegmentShift) : kArenaSlots;
}
inline Segment* arena_segment(uint32_t slot) {
    return reinterpret_cast<Segment*>(arena_base() + (uintptr_t{slot} << kSegmentShift));
}

// Claims `blocks` consecutive slots, starting the search at word *hint (updated to where it
// succeeded): the segment's address, its memory zero and PROT_NONE, or not mapped at all in a
// lazy arena (segment.h commits what it uses, the header first, through arena_commit), or
// nullptr when the arena has no such run.
Segment* arena_claim(uint32_t blocks, uint32_t* hint);
// Makes [address, address + size) of a claimed segment readable and writable: mprotect in a
// reserved arena, a fresh mapping in a lazy one ([S4.67]). False if the system refuses.
bool arena_commit(void* address, std::size_t size);
// [S4.69] The reverse of arena_commit for the tail of a segment's writable prefix, which its
// heap no longer needs: PROT_NONE again in a reservation (no longer writable: a data limit stops
// counting it), unmapped in a lazy arena (an address-space limit stops counting it). False when
// the system refuses ([S4.76]: at the map count limit): the range stays writable.
bool arena_uncommit(void* address, std::size_t size);
// Gives back the slots of a segment that is no longer published: its memory returned (in a
// lazy arena, the first `mapped` bytes unmapped: what its commits mapped), then its bits.
void arena_release(uint32_t slot, uint32_t blocks, std::size_t mapped);
// The slots of a claim whose first commit failed: released, true when instead they stay claimed
// for good because a mapping not ours sits in them (a lazy arena, [S4.67]): claim others.
bool arena_refused(uint32_t slot, uint32_t blocks);
// [S4.67] True when the arena is lazy: chosen under an address-space limit, never reserved, or
// switched to lazy when a limit appeared later ([S4.68]).
bool arena_lazy();
// Whether claimed slots are unheld (no reservation of ours under them, [S4.68]): a segment there
// is mapped as it is used (S3.58).
bool arena_unheld(uint32_t slot);
// [S4.68] Whether an address-space limit is in force now (getrlimit); if so and the arena is
// still reserved, it first gives back every slot no segment holds and goes lazy, once.
bool arena_limited();
// [S4.68] After the switch, the caller's segment at `slot` (`blocks` slots, the first `mapped`
// bytes writable) is trimmed to what it maps, if a reservation still holds it: the rest is
// unmapped and the slots are unheld, as if it had been claimed lazily.
void arena_trim(uint32_t slot, uint32_t blocks, std::size_t mapped);

// [S4.12] Start markers: starts[slot] == number of slots of the segment beginning at `slot`,
// set (release) only once its header is formatted, cleared before its slots are released. A
// thread that frees a pointer it does not own reads the marker (acquire) before it reads the
// header: a marker of 0 means no segment of ours starts in that 4 MiB, whatever the bitmap says
// (a slot claimed a moment ago by another thread is not formatted yet; a slot inside a huge
// segment is no segment start).
void arena_publish(const Segment* segment);
void arena_unpublish(const Segment* segment);
inline uint32_t arena_blocks_at(uint32_t slot) {
    return slot < kArenaSlots ? arena_internal::g_starts[slot].load(std::memory_order_acquire) : 0;
}

// [S4.13] The abandoned bitmap: bit `slot` set while the segment starting there has no owner.
// abandoned_publish sets it (release) after the last write of the thread that leaves it;
// abandoned_take clears it (acquire) and returns true only to the one thread whose fetch_and
// saw the bit set: that thread owns the segment now, and sees everything its last owner wrote.
// abandoned_count is a hint for "is any segment waiting?", read without ordering.
void abandoned_publish(uint32_t slot);
bool abandoned_take(uint32_t slot);
uint64_t abandoned_word(uint32_t word);
uint64_t abandoned_count();

// [S4.44] The last kRecentAbandoned slots published, newest first: abandoned_recent(0) is the
// segment abandoned last (kArenaSlots when there is none yet). Only a hint, written and read
// relaxed: the bit decides, and abandoned_take of a stale slot simply fails. A thread that
// starts right after another exited (larson hands a worker's blocks from thread to thread)
// finds its predecessor's segments here, where the bitmap scan would offer the lowest slots,
// often another worker's: then every block the new thread inherited is a remote free.
inline constexpr unsigned kRecentAbandoned = 8;
uint32_t abandoned_recent(unsigned k);

// Claimed bits, for the checker.
bool arena_claimed(uint32_t slot, uint32_t blocks);

}  // namespace edu::stage4
