// stage3_segments/free.cc: the cold side of free: telling a bad pointer from a good one,
// the double-free confirmation, the one-line diagnostics, and the free that follows.
// Entry points: validate_block (free.h), free_generic, die_corrupted_list.
#include "stage3_segments/free.h"

#include "contract/diagnostics.h"
#include "stage3_segments/alloc.h"
#include "stage3_segments/page.h"
#include "stage3_segments/segment.h"
#include "stage3_segments/stats.h"

namespace edu::stage3 {

// [S3.27] What the fast path's three checks cost and what they buy. The segment map and the
// validity test are exact: a foreign, interior, misaligned or never-handed-out pointer is
// always caught. The freed mark is a filter: a double free always carries it, but a live
// block may hold that word by chance (the program wrote it), so a match is confirmed by
// searching the page's two lists, at most `capacity` steps, off the fast path. A page that
// was freed in between has the free sentinel and fails the validity test. What no check here
// catches: a block freed and handed out again before the second free (it is live again).
namespace {

// [S3.66] The segment map holds a huge segment by its first 4 MiB only ([S3.7]), so a pointer
// further into a huge block finds no segment, as a foreign one does. Before it is called
// foreign, the cold path walks the list of segments for one that holds it, so that the line
// says what the pointer is (the words are segment_layout.h's, shared with stage 4).
[[noreturn]] void die_not_ours(const void* p, const char* call) {
    auto a = reinterpret_cast<uintptr_t>(p);
    Segment* holder = first_segment();
    while (holder && a - reinterpret_cast<uintptr_t>(holder) >= holder->size) holder = holder->next;
    Layout::die_not_ours(holder, p, call);
}

}  // namespace

Page* validate_block(const void* p, const char* call) {
    auto a = reinterpret_cast<uintptr_t>(p);
    if (!segment_owned(p)) die_not_ours(p, call);
    Page* page = page_of(p);
    if (!page->in_use)   // its last block was freed, or it never had one at p
        Layout::die_in_free_page(p, call);
    // Exact, from start, magic and carved: a full page's fast constants fail on purpose.
    if (!page_has_block(page, a))
        die(kStageName, call, p, "not the start of a block (interior, misaligned or never allocated)");
    auto* b = static_cast<const Block*>(p);
    if (b->mark == freed_mark(page)) {
        int in_free = list_find(page, page->free, b);
        int in_local = list_find(page, page->local_free, b);
        if (in_free < 0 || in_local < 0)
            die(kStageName, call, p, "free list corrupted (a link leaves its page)");
        if (in_free || in_local) die(kStageName, call, p, "double free (block is already free)");
    }
    return page;
}

void free_generic(void* p) {
    if (p == nullptr) return;
    if (!segment_owned(p)) {
        if (free_mapped(p)) return;   // [S3.39]
    } else if (!segment_in_window(p)) {
        map_window_follow(p);         // [S3.60]: the next frees in p's 64 GiB are fast again
    }
    Page* page = validate_block(p, "free");
    auto* b = static_cast<Block*>(p);
    b->mark = freed_mark(page);
    b->link = encode(page, reinterpret_cast<uintptr_t>(page->local_free));
    page->local_free = b;
    if (g_counting) count_free(page->block_size);
    if (--page->used == 0 || page->queue == kFullQueue) page_event(page);
}

void die_corrupted_list(const Block* b) { die_corrupted_link(kStageName, "malloc", b); }

}  // namespace edu::stage3
