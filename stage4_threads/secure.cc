// stage4_threads/secure.cc: per-page keys from each heap's own stream, and the switch that
// re-keys the caller's heap (S4.56).
#include "stage4_threads/secure.h"

#include <atomic>

#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"

namespace edu::stage4 {
namespace {

// Read by every owner when it formats a page; written only by secure_switch, while no other
// heap is in use. Relaxed: a page's keys are published with the page itself.
std::atomic<bool> g_secure{false};

bool another_heap_in_use() {
    for (Heap* h = first_record(); h != nullptr; h = h->next_record)
        if (h != t_heap && h->state.load(std::memory_order_acquire) == HeapState::in_use) return true;
    return false;
}

}  // namespace

bool secure_mode() { return g_secure.load(std::memory_order_relaxed); }

void new_keys(Page* page, Heap* heap) {
    bool on = secure_mode();
    page->keys[0] = on ? heap->keys.next() : 0;
    page->keys[1] = on ? heap->keys.next() : 0;
}

bool secure_switch(bool on) {
    if (another_heap_in_use()) return false;
    orphans_abandon();   // [S4.97] their pages become abandoned ones, re-keyed below
    Heap* heap = t_heap;
    if (heap == &g_empty_heap && abandoned_count() == 0) {   // nothing is keyed but by a heap
        g_secure.store(on, std::memory_order_relaxed);
        return true;
    }
    heap = heap_for_caller(heap);
    if (!heap) return false;
    heap_delayed_free(heap);                       // no link of the old keys stays there
    while (heap_reclaim(heap, kArenaSlots)) {     // abandoned pages become ours to re-key
    }
    g_secure.store(on, std::memory_order_relaxed);
    for (Segment* s = heap->segments; s; s = s->next) {
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &s->pages()[i];
            if (!page->in_use || page->bin == kOneBlockBin) continue;   // one-block pages: no lists
            if (page->queue != kFullQueue) page_collect_remote(page);
            uint64_t old[2] = {page->keys[0], page->keys[1]};
            new_keys(page, heap);
            Lists::reencode(page, old, page->free);
            Lists::reencode(page, old, page->local_free);
        }
    }
    return true;
}

}  // namespace edu::stage4
