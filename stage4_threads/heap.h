// stage4_threads/heap.h: a thread's heap at work: the generic malloc path, page queues and the
// direct cache, full pages and delayed free, retirement. Entry points: malloc_generic (and
// malloc_generic_aligned), malloc_one_block, page_event, page_push_local, heap_collect, the
// queue moves. The fast paths are alloc.h; where the heap comes from (and goes at thread exit)
// is registry.h / abandon.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.23] The generic path, out of line as in stage 3, for the calling thread's heap. First it
// turns the empty heap into a real one (registry.h), then takes the delayed frees other threads
// left (remote.h), ticks the heap's clock (every 64 ticks: purge and cache, as in stage 3),
// and finds a page: in the bin's queue (collecting local and remote frees, extending, moving
// full pages aside), else in reclaimed segments, else fresh.
// nullptr with errno = ENOMEM when memory cannot be had.
[[gnu::noinline]] void* malloc_generic(std::size_t size, std::size_t requested, Heap* heap);
// [S4.115] Stage 3's S3.97: the same for an aligned request whose bin keeps `alignment`; a larger
// bin serves it only if its blocks keep the alignment too.
[[gnu::noinline]] void* malloc_generic_aligned(std::size_t size, std::size_t requested, Heap* heap,
                                               std::size_t alignment);

// Above 64 KiB, or aligned above 64 KiB: a one-block page (segment.h) in the large queue.
// `size` is at most kMaxRequest: both callers (malloc_generic, aligned_alloc) refuse a larger one.
[[gnu::noinline]] void* malloc_one_block(Heap* heap, std::size_t size, std::size_t alignment,
                                         std::size_t requested);

// The caller's heap, created if the thread has none yet; nullptr when that fails.
Heap* heap_for_caller(Heap* heap);

// [S4.24] After a local free emptied a page, or freed into a full one: a full page goes back to
// its bin (its Delay state to_page again, its fast checks restored); an empty page retires as
// in stage 3 (queues.h: the rule and its constants, kRetireTicks among them, are stage 3's).
// One-block pages give their segment back at once.
[[gnu::noinline]] void page_event(Heap* heap, Page* page);

// Pushes a block the caller checked (or that arrived on the delayed list) on local_free,
// lowers used, and runs page_event when that emptied or un-filled the page.
void page_push_local(Heap* heap, Page* page, Block* block);

// Queue moves; each keeps heap->direct in step, as in stage 3.
void queue_push_front(Heap* heap, unsigned queue, Page* page);
void queue_push_back(Heap* heap, unsigned queue, Page* page);
void queue_remove(Heap* heap, Page* page);
// For the checker: a page with retire_expire set is where collection looks for it (S3.54).
bool page_retired_in_place(const Heap* heap, const Page* page);

// [S4.25] Moving a page to the full queue has a race stage 3 did not: a remote free may land
// after the last collection and before the page stops taking direct pushes. So the state goes
// to_heap first, and if that CAS finds blocks already on xthread_free, the page is not full
// after all: the state goes back, the blocks are collected, and the page stays. Returns true
// when the page moved.
bool page_to_full(Heap* heap, Page* page);

// Takes a page out of its queue and gives it back to its segment (segment.h).
void page_free(Heap* heap, Page* page);

// Frees retired pages (all of them when `force`), then purges and trims the cache likewise.
void heap_collect(Heap* heap, bool force);

// [S4.69] Under pressure (a mapping, a claim or a commit refused): the abandoned segments taken,
// the empty ones back to the arena with the heap's cache, retired pages and dirty pages, and
// what its segments keep writable past their pages in use. True if anything went back, so that
// the caller tries once more.
bool heap_relieve(Heap* heap);

// How many abandoned segments a heap takes, one by one, before it formats a fresh page ([S4.42]).
inline constexpr unsigned kReclaimBatch = 4;

}  // namespace edu::stage4
