// stage3_segments/heap.h: heaps: the default heap behind malloc, first-class heaps, their
// page queues and direct cache, the generic malloc path, and what happens after a free
// empties or un-fills a page. Entry points: malloc_generic (and malloc_generic_aligned),
// malloc_one_block, page_event, heap_new, heap_delete, heap_collect, the queue moves. The fast
// paths are in alloc.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "stage3_segments/types.h"

namespace edu::stage3 {

// The page every empty direct slot points at: free == nullptr, so popping from it fails.
extern Page g_empty_page;
// The heap behind the contract's malloc, usable before any constructor has run.
extern Heap g_default_heap;
// All heaps, the default heap first.
Heap* first_heap();

// [S3.20] The generic path, out of line so the fast path keeps no stack frame: ticks the clock
// (and every 64 ticks runs the purge and the cache), then finds a page with room in the bin's
// queue (collecting local_free, extending, moving full pages aside) or takes a fresh one,
// counting retired pages down first (see [S3.19]). Requests
// above kMediumMax get a one-block page. `requested` is what the program asked for (stats).
// nullptr with errno = ENOMEM when memory cannot be had. The heap comes last so that `size`
// stays in the register it arrived in: the fast path's jump here needs no move for it.
[[gnu::noinline]] void* malloc_generic(std::size_t size, std::size_t requested, Heap* heap);
// [S3.97] The same for an aligned request whose bin keeps `alignment` ([S3.33]): when that bin
// cannot serve, a larger bin serves only if its blocks keep the alignment too.
[[gnu::noinline]] void* malloc_generic_aligned(std::size_t size, std::size_t requested, Heap* heap,
                                               std::size_t alignment);

// [S3.23] Above 64 KiB every block gets a page (a segment) of its own: a large page from the
// segment cache when it fits in 4 MiB, else a huge segment. Also aligned_alloc's way for
// alignments above 64 KiB: the block simply starts at an aligned offset of its segment.
// `size` is at most kMaxRequest: both callers, malloc_generic ([S3.55]: malloc, calloc and
// realloc come through it) and aligned_alloc, refuse a larger one first.
[[gnu::noinline]] void* malloc_one_block(Heap* heap, std::size_t size, std::size_t alignment,
                                         std::size_t requested);

// Pops the first block of page->free (non-empty) in the generic paths: checks the mark
// (S3.40) and the decoded link, clears the mark, counts.
void* page_pop_checked(Page* page, std::size_t requested, const char* call);

// [S3.40] "malloc(<b>): free list corrupted: a free block lost its freed mark ...", then abort:
// b was about to be handed out without the mark every listed block carries.
[[gnu::cold, noreturn]] void die_mark_gone(const Block* b);

// [S3.19] Called by free when a page empties (fast path) or was full (generic path): a full
// page goes back to the end of its bin's queue; an empty one retires: the only page of its bin
// stays in case the program allocates again, and is freed once the heap has needed
// kRetireTicks fresh pages meanwhile (as mimalloc counts: a retired page is only worth giving
// back when memory is wanted); so do up to kRetireKeep small pages of a bin that has others in
// use ([S3.54]); other empty pages go back to their segment now. Both constants, and the rule
// ([S3.41]), are in queues.h, shared with stage 4.
[[gnu::noinline]] void page_event(Page* page);

// Queue moves, stage 3's instances of queues.h's (S3.18): each keeps heap->direct in step.
void queue_push_front(Heap* heap, unsigned queue, Page* page);
void queue_push_back(Heap* heap, unsigned queue, Page* page);
void queue_remove(Heap* heap, Page* page);
void queue_move_to_full(Heap* heap, Page* page);
// For the checker: a page with retire_expire set is where collection looks for it (S3.54).
bool page_retired_in_place(const Heap* heap, const Page* page);

// [S3.22] First-class heaps: a Heap record in its own mapping; deleting one returns every page
// it owns to its segment at once, whatever blocks they hold.
Heap* heap_new();
void heap_delete(Heap* heap);
// Frees retired pages now (force) or when due, then the segment cache likewise.
void heap_collect(Heap* heap, bool force);

}  // namespace edu::stage3
