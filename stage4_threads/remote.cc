// stage4_threads/remote.cc: the cross-thread free, the Delay protocol and delayed free, and the
// table of every memory ordering the stage uses.
#include "stage4_threads/remote.h"

#include <sched.h>

#include <algorithm>   // std::min, std::max: for a lab part's code, which cannot add an include
#include <initializer_list>

#include "contract/diagnostics.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/secure.h"

namespace edu::stage4 {

// [S4.10] Every atomic of stage 4, its orderings, and why they suffice. "A happens before B"
// is what makes B see what A wrote; a release store (or RMW) read by an acquire load (or RMW)
// creates it, and a chain of RMWs on one word passes it along (a release sequence).
//
//  word                        operation (who)                 order    why it is enough
//  page->xthread_free          push block (remote, CAS)        release  the block's link and
//                                                                       mark reach the owner
//                              to_heap -> pushing (remote)     acq_rel  acquire: sees page->heap
//                                                                       set before to_heap
//                              take list (owner, CAS)          acquire  pairs with every push:
//                                                                       each push CAS continues
//                                                                       the release sequence
//                              set Delay (owner, CAS)          acq_rel  release publishes heap
//                                                                       before to_heap; acquire
//                                                                       sees a finished pusher's
//                                                                       writes to the heap list
//                              pushing -> to_page (remote)     release  "I no longer touch the
//                                                                       heap": the owner's
//                                                                       acquire waits for it
//  page->heap                  load (remote, after to_heap)    relaxed  the acquire CAS that read
//                                                                       to_heap already ordered
//                                                                       the owner's store before
//  heap->delayed_free          push (remote, CAS)              release  the block's link reaches
//                                                                       the owner
//                              take all (owner, exchange)      acquire  pairs with the pushes
//  arena claimed bits          claim (CAS)                     acquire  the slots' last user's
//                                                                       writes come before ours
//                              release (fetch_and)             release  ... and ours before the
//                                                                       next claimer's
//  arena start markers         publish (store)                 release  the header is formatted
//                              read (load, remote free)        acquire  before a remote reads it
//  abandoned bits              abandon (fetch_or)              release  everything the last
//                              reclaim (fetch_and)             acquire  owner wrote is seen by
//                                                                       the next
//  heap record state           take (CAS free->in_use)         acquire  likewise for a record's
//                              give back (store in_use->free)  release  fields
//  registry list head          push record (CAS)               release  a record is complete
//                              walk (load)                     acquire  before it is listed
//  counters, footprint, peak   load / store / fetch_add        relaxed  single numbers: nothing
//                                                                       is published with them
//  abandoned count, arena hint                                 relaxed  hints; the bits decide
//  arena base and size         store (once) / load             release  pthread_once orders
//                                                                       them too
// No ordering is seq_cst: no decision here depends on the order of two different words.

namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// A pusher holds `pushing` for a few instructions, unless it was preempted; spin a little,
// then let it run.
void wait_a_little(unsigned& spins) {
    if (++spins < 64) __builtin_ia32_pause();
    else sched_yield();
}

// The next block of the owner's delayed list, checked before the owner follows it: a block of
// one of its own pages (a link overwritten after the push decodes to something else, S4.56).
// Called only from lab part S4.delayed_free: [[maybe_unused]] keeps a part written without it
// building under -Werror (tools/lab check).
[[maybe_unused]] Block* delayed_next(const Heap* heap, const Block* b) {
    Block* next = chain_next(b);
    if (next == nullptr) return nullptr;
    uint32_t slot = arena_slot_of(next);
    // page_of reads the segment's map: only once the segment is known to be one of the heap's.
    const Page* page = slot != kArenaSlots && heap->owned[slot] ? stage4::page_of(next) : nullptr;
    if (page == nullptr || !page_holds(page, addr(next), page->carved))
        stage3::die_corrupted_link(kStageName, "malloc", b);
    return next;
}

}  // namespace

void free_delayed(Page* page, Block* b) {
    uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
    uintptr_t next;
    bool to_heap;
    do {
        to_heap = delay_of(word) == Delay::to_heap;
        if (to_heap) {
            next = (word & ~kDelayMask) | static_cast<uintptr_t>(Delay::pushing);
        } else {   // the owner changed its mind meanwhile: an ordinary push
            b->link = encode(page, word & ~kDelayMask);
            next = addr(b) | (word & kDelayMask);
        }
    } while (!page->xthread_free.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                                       std::memory_order_relaxed));
    if (!to_heap) return;
    // The owner is alive and waits for us before it frees this page or leaves its heap.
    Heap* heap = page->heap.load(std::memory_order_relaxed);
    Block* head = heap->delayed_free.load(std::memory_order_relaxed);
    do {
        b->link = encode(page, addr(head));   // a chain of several pages: b's own page's keys
    } while (!heap->delayed_free.compare_exchange_weak(head, b, std::memory_order_release,
                                                       std::memory_order_relaxed));
    word = page->xthread_free.load(std::memory_order_relaxed);
    while (!page->xthread_free.compare_exchange_weak(
        word, (word & ~kDelayMask) | static_cast<uintptr_t>(Delay::to_page),
        std::memory_order_release, std::memory_order_relaxed)) {
    }
}

uintptr_t page_set_delay(Page* page, Delay state, bool override_never) {
    unsigned spins = 0;
    uintptr_t word = page->xthread_free.load(std::memory_order_acquire);
    for (;;) {
        Delay now = delay_of(word);
        if (now == Delay::pushing) {
            wait_a_little(spins);
            word = page->xthread_free.load(std::memory_order_acquire);
            continue;
        }
        if (now == state || (now == Delay::never && !override_never)) return word;
        uintptr_t next = (word & ~kDelayMask) | static_cast<uintptr_t>(state);
        if (page->xthread_free.compare_exchange_weak(word, next, std::memory_order_acq_rel,
                                                     std::memory_order_acquire))
            return next;
    }
}

int chain_find(const Block* head, const Block* target) {
    auto next = [](const Block* b) -> const Block* { return chain_next(b); };
    const Block* slow = head;
    for (const Block* fast = head; fast != nullptr;) {   // Floyd: fast takes two steps, slow one
        if (fast == target) return 1;
        if ((fast = next(fast)) == nullptr) return 0;
        if (fast == target) return 1;
        fast = next(fast);
        slow = next(slow);
        if (fast == slow) return -1;
    }
    return 0;
}

void confirm_remote_free(const Page* page, const Block* b, const Block* rest, const Block* pending) {
    const char* twice = "double free (freed by another thread while already free)";
    for (const Block* head : {page->free, page->local_free}) {
        int in = list_find(page, head, b);
        if (in < 0) die(kStageName, "free", b, "free list corrupted (a link leaves its page)");
        if (in > 0) die(kStageName, "free", b, twice);
    }
    const Heap* heap = page->heap.load(std::memory_order_relaxed);
    const Block* delayed = heap ? heap->delayed_free.load(std::memory_order_acquire) : nullptr;
    for (const Block* head : {rest, pending, delayed})
        if (chain_find(head, b) != 0) die(kStageName, "free", b, twice);
}

uint32_t page_collect_remote(Page* page, const Block* pending) {
    // [lab S4.collect_remote begin]
    uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
    if ((word & ~kDelayMask) == 0) return 0;
    while (!page->xthread_free.compare_exchange_weak(word, word & kDelayMask, std::memory_order_acquire,
                                                     std::memory_order_relaxed)) {
    }
    Block* head = block_of(word);
    Block* tail = nullptr;
    uint32_t n = 0;
    for (Block* b = head; b != nullptr; b = next_of(page, b)) {
        if (tail && !page_holds(page, addr(b), page->capacity))   // no block at all: a link was damaged
            stage3::die_corrupted_link(kStageName, "malloc", tail);
        if (!page_holds(page, addr(b), page->carved))
            die(kStageName, "free", b, "not the start of a block (never allocated; freed by another thread)");
        if (b->mark == suspect_mark(b)) {
            confirm_remote_free(page, b, next_of(page, b), pending);
            b->mark = freed_mark(b);
        }
        if (++n > page->used) die(kStageName, "free", b, "more blocks freed by other threads than the page has in use (double free?)");
        if (n == kPrefetchAfter) page_prefetch_blocks(page);
        tail = b;
    }
    tail->link = encode(page, addr(page->free));
    page->free = head;
    page->used -= n;
    return n;
    // [lab S4.collect_remote end]
}

void heap_delayed_free(Heap* heap) {
    // [lab S4.delayed_free begin]
    Block* b = heap->delayed_free.exchange(nullptr, std::memory_order_acquire);
    while (b != nullptr) {
        Block* next = delayed_next(heap, b);
        Page* page = stage4::page_of(b);
        page_set_delay(page, Delay::to_page, false);   // waits until its pusher is done
        page_collect_remote(page, b);                  // b and the rest of the batch: pending
        if (b->mark == suspect_mark(b)) confirm_remote_free(page, b, next, nullptr);
        page_push_local(heap, page, b);
        b = next;
    }
    // [lab S4.delayed_free end]
}

}  // namespace edu::stage4
