// stage4_threads/remote.h: frees that cross threads: the push on a page's xthread_free, the
// Delay states, the owner heap's delayed-free list, and the owner collecting both.
// Entry points: free_remote (any thread), page_set_delay, page_collect_remote,
// heap_delayed_free (owner only). What a local free does is heap.h's; checking the pointer
// before any of this is free.h's.
#pragma once

#include <cstdint>

#include "stage4_threads/secure.h"
#include "stage4_threads/types.h"

namespace edu::stage4 {

inline Delay delay_of(uintptr_t word) { return static_cast<Delay>(word & kDelayMask); }
inline Block* block_of(uintptr_t word) { return reinterpret_cast<Block*>(word & ~kDelayMask); }

// [S4.9] A free from a thread that does not own the page (any thread, any time). The block is
// marked free (suspect, if it carried the mark already: S4.46), then one CAS on page->xthread_free pushes it there (Delay to_page or never).
// When the owner asked for it (to_heap), free_delayed takes over: a CAS moves the state to
// pushing without pushing the block; the block goes on the owner heap's delayed_free list with
// a second CAS, and a third moves the state back to to_page: later remote frees go to the page.
//
//    remote thread                           page->xthread_free          heap->delayed_free
//    1. b->mark = freed, b->link = old head   [b2 -> b1 | to_page]
//    2. CAS head: old -> b                    [b -> b2 -> b1 | to_page]      (usual case, done)
//    -- or, when the page is full --
//    2'. CAS state: to_heap -> pushing        [0 | pushing]
//    3'. b->link = old list; CAS list -> b                                   [b -> ...]
//    4'. CAS state: pushing -> to_page        [0 | to_page]
//
// The block's bytes belong to the freeing thread until its CAS publishes them; after that it
// touches nothing of the block's page again (except steps 3' and 4', during which the owner
// cannot free the page or leave the heap: it waits while the state is `pushing`).
[[gnu::noinline]] void free_delayed(Page* page, Block* block);

// Returns true when the page had no owner (Delay never): its segment is abandoned, and the
// caller may reclaim it (S4.47).
inline bool free_remote(Page* page, Block* b) {
    b->mark = b->mark == freed_mark(b) ? suspect_mark(b) : freed_mark(b);
    uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
    do {
        if (delay_of(word) == Delay::to_heap) return free_delayed(page, b), false;
        b->link = encode(page, word & ~kDelayMask);   // the page's keys: fixed while it is in use
        // release: b's link and mark reach the owner, whose collecting CAS is an acquire.
    } while (!page->xthread_free.compare_exchange_weak(word, reinterpret_cast<uintptr_t>(b) | (word & kDelayMask),
                                                       std::memory_order_release, std::memory_order_relaxed));
    return delay_of(word) == Delay::never;
}

// The owner changes a page's Delay state: waits while a remote thread is `pushing`, leaves
// `never` alone unless `override_never`. Returns the xthread_free word it left behind.
uintptr_t page_set_delay(Page* page, Delay state, bool override_never);

// [S4.46] Confirming a remote double free. A remote free that finds the mark already there
// cannot look for the block on the owner's lists, and the mark alone is not proof: it pushes
// the block as usual, with the suspect mark. The owner, which reads its lists, settles it when
// the block reaches it (collected from xthread_free, or taken from its delayed list): the
// block is searched on its page's free and local_free, on the rest of the list it came on,
// on `pending` (a delayed-list batch in the owner's hands) and on the heap's delayed list.
// Found: "double free", one line, abort. Not found: the block gets the plain mark and goes on.
// A list that loops (a block pushed twice) is a double free too: the searches notice loops.
// With the keyed mark (S4.48) a correct program never gets here; a double free always does.
void confirm_remote_free(const Page* page, const Block* b, const Block* rest, const Block* pending);

// Searches a list of blocks of any pages: 1 `target` is on it, 0 not, -1 the list loops.
int chain_find(const Block* head, const Block* target);

// [S4.21] The owner takes the whole xthread_free list with one CAS (keeping the Delay bits),
// checks every block is a carved block of the page (a remote free checks only the geometry
// that cannot change while the page is in use, so a pointer into the uncarved part is caught
// here), confirms every suspect (S4.46; `pending` as there), puts the list in front of `free`
// and lowers `used`. Returns the number of blocks taken.
uint32_t page_collect_remote(Page* page, const Block* pending = nullptr);

// [S4.61] A long remote list is a pointer chase through lines another core wrote, often long
// ago: one miss at a time, each waiting for the last (on the xmalloc-like benchmark at two
// threads, lists of about 300 blocks through a heap of hundreds of pages, and the producer
// spent half its time here). Once a walk has passed kPrefetchAfter blocks, it asks for the
// line of every carved block of the page at once, so the misses overlap; a short list, the
// usual case elsewhere, costs nothing more. A prefetch is no access: it cannot fault or race.
inline constexpr uint32_t kPrefetchAfter = 16;
inline void page_prefetch_blocks(const Page* page) {
    uintptr_t step = page->block_size < 64 ? 64 : page->block_size;
    for (uintptr_t a = page->start, end = a + uintptr_t{page->carved} * page->block_size; a < end; a += step)
        __builtin_prefetch(reinterpret_cast<const void*>(a));
}

// True when other threads have pushed blocks on the page since the owner last collected.
inline bool page_has_remote(const Page* page) {
    return (page->xthread_free.load(std::memory_order_relaxed) & ~kDelayMask) != 0;
}

// [S4.22] The owner's side of delayed free: takes heap->delayed_free with one exchange and
// frees each block locally (heap.h's page_push_local), which moves its page out of the full
// queue (or gives a one-block page's segment back). Before that it collects the page's
// xthread_free, as mimalloc does: the blocks that other threads freed after the delayed one
// come home with it, so the page rejoins its bin with them on its free list and an exact
// count, and a page whose blocks have all come back is retired at once. Without the collect,
// the page would rejoin its bin looking nearly full, and where producers keep running ahead of
// consumers (the xmalloc-like benchmark) pages would go to the full queue and back tens of
// thousands of times a second (the chapter's figures, under [S4.22]).
// Called at the start of every generic malloc when the list is non-empty, and when the heap is
// abandoned.
void heap_delayed_free(Heap* heap);

}  // namespace edu::stage4
