// stage4_threads/abandon.h: segments without an owner: a heap abandons the segments that still
// hold live blocks when its thread exits, and another heap reclaims them when it needs pages.
// Entry points: heap_abandon, heap_reclaim, and borrow / give back (for the checker).
#pragma once

#include <cstdint>

#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.26] Abandoning a heap, at thread exit (registry.h), in four steps and no system call:
//   1. every page in use stops taking delayed frees: Delay never (waiting out any pusher);
//   2. the delayed frees that arrived before are freed locally; then every page's remote frees
//      are collected, and pages left empty (retired ones too) go back to their segments;
//   3. every segment is detached from the heap (owned[] byte, lists) and abandoned: its pages
//      forget their heap (page->heap = nullptr) and its abandoned bit is set, with release,
//      after the last write. Empty segments (the heap's cache, or emptied in step 2) are
//      abandoned too, with their dirty pages: the next thread to reclaim them gets memory that
//      needs no system call, which matters when threads come and go (larson), unless the pool
//      is large already or the cache holds committed memory ([S4.93], heap_shed_empty);
//   4. the heap record is reset for the next thread (its counters stay: they are history).
// Live blocks in abandoned segments stay where they are and valid; a free of one from any
// thread finds no owner, sees Delay never, and pushes on the page's xthread_free.
void heap_abandon(Heap* heap);

// [S4.93] The remote frees collected, then every retired page, the purge and the cache at once
// (heap_collect, as [S4.69] does under pressure): every segment the heap holds that no live
// block needs goes back to the arena, so that what heap_abandon abandons next holds live blocks
// only. Abandoned empty segments are kept for the next thread, but a heap reclaims one at a
// time and only what it lacks ([S4.42]), and nobody purges an abandoned segment, so
// heap_give_back (registry.cc) calls this when keeping them would cost: when the abandoned pool
// holds kCacheSegments (64) segments or more (threads that ran sixteen at a time, each leaving
// a 100 KiB and a 300 KiB block for the main thread to free, abandoned empty segments faster
// than any heap took them back: 4000 of them left 1750, a footprint of 129 to 171 MiB), and
// when the heap's cache holds committed memory, a huge segment or a one-block one (threads that
// each freed a 30 MiB buffer before they exit, four at a time: 646 MiB resident after 80 of
// them, glibc 123 MiB; a count of segments never saw it). orphans_abandon calls it for every
// orphaned record ([S4.97]). A small pool of small segments still goes to the next thread.
void heap_shed_empty(Heap* heap);

// [S4.27] Reclaiming: takes up to `max` abandoned segments (abandoned_take: one fetch_and each,
// so two reclaimers never get the same one) and adopts them into `heap`: owned[] byte, lists,
// and for each page in use: its heap, its Delay state (to_page, or to_heap when full or a
// single block), its remote frees collected, and its queue. Pages found empty are freed, dirty
// pages join the heap's purge list, and a segment with no page in use goes to the heap's cache
// (or back to the arena). Returns true if any segment was taken.
bool heap_reclaim(Heap* heap, unsigned max);

// [S4.47] Reclaiming on free. A thread that frees a block into an abandoned segment (free_remote
// saw Delay never) takes the segment, if nobody else has, and adopts it as heap_reclaim does:
// the block it just pushed, and every other remote free waiting there, are collected, pages
// left empty go back, and a segment left empty goes to the heap's cache (or the arena). Without
// this, a segment abandoned with live blocks waited for a thread that needed a page of just
// that kind; when the blocks were all freed by others, nobody ever came: 10,000 short threads
// that each left 8 blocks for the main thread to free kept 4.8 GiB of footprint. Taking it on
// free is mimalloc's answer too (its option abandoned_reclaim_on_free). `heap` may be the
// empty heap: the caller gets a real one first; with no memory for it, nothing is taken.
// It reads nothing of the segment before it has taken it: by then another thread may have
// reclaimed, emptied and released it, so the slot comes from the block's address alone.
void reclaim_on_free(Heap* heap, const void* block);

// [S4.69] Under pressure without a heap (a new thread's record refused, registry.cc): every
// abandoned segment with no page in use is taken (abandoned_take, as [S4.27]) and given back
// to the arena, unmapped in a lazy arena; the others are abandoned again. True if any went back.
bool abandoned_release_empty();

// For the checker and walker: takes an abandoned segment for a moment without adopting it
// (true if it was abandoned and is now the caller's to read), and abandons it again.
bool segment_borrow(uint32_t slot);
void segment_unborrow(uint32_t slot);

}  // namespace edu::stage4
