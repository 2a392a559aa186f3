// stage4_threads/free.cc: the cold side of free: telling a bad pointer from a good one, local
// or remote, the one-line diagnostics, the free that follows, and the late double-free checks.
#include "stage4_threads/free.h"

#include <cstring>
#include <initializer_list>

#include "contract/diagnostics.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/page.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/segment.h"
#include "stage4_threads/stats.h"

namespace edu::stage4 {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// The owner's confirmation of a suspected double free (S3.27, with two more lists).
void confirm_local(const Heap* heap, const Page* page, const Block* b, const char* call) {
    const Block* remote = block_of(page->xthread_free.load(std::memory_order_acquire));
    int found = 0;
    for (const Block* head : std::initializer_list<const Block*>{page->free, page->local_free, remote}) {
        int in = list_find(page, head, b);
        if (in < 0) die(kStageName, call, b, "free list corrupted (a link leaves its page)");
        found |= in;
    }
    if (found || chain_find(heap->delayed_free.load(std::memory_order_acquire), b) != 0) die(kStageName, call, b, "double free (block is already free)");
}

// The owner's test: a carved block. Out of line on purpose: inline, the compiler may load
// `carved` on the remote path too (a field of a struct that path reads anyway) and keep
// whichever result the condition picks; for a page another thread is extending, that load races.
[[gnu::noinline]] bool owner_holds(const Page* page, uintptr_t p) { return page_holds(page, p, page->carved); }

// [S4.72] A pointer whose slot no segment starts in is in no segment, or in a huge one past its
// first slot (S4.12: a huge segment publishes its first slot only). Stage 3's line (S3.66,
// segment_layout.h) names the second for what it is; here the holder is the nearest start below
// the slot, when it spans the slot (segments never overlap, so no lower one can).
[[noreturn, gnu::cold, gnu::noinline]] void die_not_ours(const void* p, uint32_t slot, const char* call) {
    Segment* holder = nullptr;
    for (uint32_t s = slot; slot != kArenaSlots && s-- > 0;) {
        if (uint32_t blocks = arena_blocks_at(s)) {
            if (s + blocks > slot) holder = arena_segment(s);
            break;
        }
    }
    Layout::die_not_ours(holder, p, call);
}

}  // namespace

Found find_block(const void* p, const char* call) {
    uint32_t slot = arena_slot_of(p);
    if (slot == kArenaSlots || arena_blocks_at(slot) == 0) die_not_ours(p, slot, call);
    Heap* heap = t_heap;
    Page* page = page_of(p);
    bool local = heap->owned[slot] != 0;
    if (!page->in_use)   // its last block was freed, or it never had one at p
        Layout::die_in_free_page(p, call);
    auto a = reinterpret_cast<uintptr_t>(p);
    if (!(local ? owner_holds(page, a) : page_holds(page, a, page->capacity)))
        die(kStageName, call, p, "not the start of a block (interior, misaligned or never allocated)");
    auto* b = static_cast<const Block*>(p);
    if (b->mark == freed_mark(b) || b->mark == suspect_mark(b)) {
        if (local) confirm_local(heap, page, b, call);
        else if (std::strcmp(call, "free") != 0) die(kStageName, call, p, "block already freed (it carries the freed mark)");
        // else a remote free: the owner confirms (S4.46)
    }
    return Found{page, local};
}

void freed_twice(const Block* b) {
    die(kStageName, "malloc", b, "double free (this block is on its free list twice: it was freed twice)");
}

namespace {

// The walk that names what page_verify_empty found wrong: each list followed, each block
// checked against the page and against the blocks seen before it.
[[noreturn, gnu::cold, gnu::noinline]] void report_not_empty(const Page* page, const Block* live) {
    Seen seen;
    for (const Block* head : {page->free, page->local_free}) {
        for (const Block* b = head; b != nullptr; b = next_of(page, b)) {
            if (!owner_holds(page, addr(b))) die(kStageName, "free", b, "free list corrupted (a link leaves its page)");
            if (seen.mark(index_of(page, b)))
                die(kStageName, "free", b, "double free (found twice on its page's free lists when the page was given back)");
        }
    }
    die(kStageName, "free", live, "page given back with this block in use (a double free made its count wrong)");
}

}  // namespace

void page_verify_empty(const Page* page) {
    // [S4.71] A one-block page's block was freed (by its owner, or collected from another
    // thread): its guards first (S3.67), the only check a page of one block needs.
    if (page->bin == kOneBlockBin) return Layout::guards_check(page, "free");
    if (page->carved == 0) return;
    if (const Block* remote = block_of(page->xthread_free.load(std::memory_order_acquire)))
        die(kStageName, "free", remote, "double free (freed by another thread into a page with no block in use)");
    // Every carved block is free, so each carries its freed mark (free and local_free hold only
    // such blocks, S4.48), and a block in use never does. One pass in address order, no lists.
    std::size_t size = page->block_size;
    for (uintptr_t a = page->start, end = a + page->carved * size; a < end; a += size) {
        auto* b = reinterpret_cast<const Block*>(a);
        if (b->mark != freed_mark(b)) [[unlikely]]
            report_not_empty(page, b);
    }
}

namespace {

// [S4.73] A free by a thread past its exit hook, with no heap: whatever record the free needs
// is borrowed (no key) and orphaned before it returns ([S4.92]'s with_borrowed_heap, [S4.97]).
// A thread that orphaned a record takes it back first, so a block of its own borrowed calls is
// freed locally, and the page it empties is given back when the record is orphaned again: with
// no heap, the free pushed it on its page's remote list, which no thread collects while the
// record stays orphaned, and every page those calls used stayed committed.
[[gnu::noinline, gnu::cold]] void free_after_exit(void* p) {
    with_borrowed_heap([p] {
        if (t_orphan != nullptr) heap_for_caller(t_heap);
        free_generic(p);
    });
}

}  // namespace

void free_generic(void* p) {
    if (p == nullptr) return;
    // Most calls that reach here free another thread's block, whose line sits modified in the
    // other thread's cache: ask for it with intent to write, so the read of the mark and the
    // writes that follow cost one transfer of the line, not a read and then an upgrade. Only
    // where the target has PRFCHW, though: gcc's default x86-64 has not, and emits `prefetcht0`,
    // a read (an explicit `prefetchw` made no difference we could measure on xmalloc, and not
    // every x86-64 processor has it).
    __builtin_prefetch(p, 1);
    // [S4.41] The remote free's own short path: every check of find_block a remote free makes,
    // inline, in the order that makes each read safe. Anything it does not like (a bad pointer,
    // or a block of the caller's own full page) takes the long path, which says what is wrong.
    uint32_t slot = arena_slot_of(p);
    Heap* heap = t_heap;
    if (past_exit_hook(heap)) [[unlikely]]
        return free_after_exit(p);
    if (slot != kArenaSlots && !heap->owned[slot] && arena_blocks_at(slot) != 0) {
        Page* page = stage4::page_of(p);
        auto* block = static_cast<Block*>(p);
        if (page->in_use && page_holds(page, reinterpret_cast<uintptr_t>(p), page->capacity)) {
            if (counting()) {
                heap = heap_for_caller(heap);
                count_free_by(heap, page->block_size);   // [S4.116] with no record too
            }
            if (free_remote(page, block)) reclaim_on_free(heap, p);
            return;
        }
    }
    // [S4.59] The caller's own block that the fast path sent here because its page is full (the
    // validity sentinel, S4.24): find_block's checks of a local block, minus the one that its
    // `owned` byte already answers (a segment of the caller's starts at that slot). A block that
    // carries the freed or the suspect mark, or fails a check, still takes the long path.
    if (slot < kArenaSlots && heap->owned[slot]) {
        Page* page = stage4::page_of(p);
        auto* block = static_cast<Block*>(p);
        if (page->in_use && owner_holds(page, reinterpret_cast<uintptr_t>(p)) && (block->mark ^ freed_mark(block)) > 1) {
            if (counting()) count_free(heap, page->block_size);
            page_push_local(heap, page, block);
            return;
        }
    }
    // [S4.51] Outside the arena, or in a slot where no segment starts ([S4.68]: a switched
    // arena gave its range back, and the kernel places new mappings there).
    if ((slot == kArenaSlots || arena_blocks_at(slot) == 0) && free_mapped(p)) return;
    Found found = find_block(p, "free");
    auto* b = static_cast<Block*>(p);
    if (counting()) {   // a thread's first call may be a free: it needs counters, so a heap
        heap = heap_for_caller(heap);
        count_free_by(heap, found.page->block_size);
    }
    if (found.local) page_push_local(t_heap, found.page, b);
    else if (free_remote(found.page, b)) reclaim_on_free(t_heap, p);
}

}  // namespace edu::stage4
