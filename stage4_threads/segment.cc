// stage4_threads/segment.cc: pages out of a heap's segments and back, the heap's segment
// lists, cache and purge, and arena slots claimed and given back. Owner thread only.
#include "stage4_threads/segment.h"

#include "stage4_threads/arena.h"
#include "stage4_threads/free.h"
#include "stage4_threads/heap.h"
#include "stage4_threads/os.h"
#include "stage4_threads/page.h"

namespace edu::stage4 {
namespace {

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }
std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) & ~(to - 1); }

// A segment sits on up to three lists of its heap, each threaded through its own pair of
// links; one pair of functions serves them all through pointers to members.
struct Links {
    Segment* Segment::*next;
    Segment* Segment::*prev;
};
constexpr Links kAll{&Segment::next, &Segment::prev};
constexpr Links kOpen{&Segment::next_open, &Segment::prev_open};    // open lists, the cache
constexpr Links kPurge{&Segment::next_purge, &Segment::prev_purge};

void push(Segment*& head, Segment* s, Links l) {
    s->*l.prev = nullptr;
    s->*l.next = head;
    if (head) head->*l.prev = s;
    head = s;
}

void unlink(Segment*& head, Segment* s, Links l) {
    Segment* before = s->*l.prev;
    Segment* after = s->*l.next;
    (before ? before->*l.next : head) = after;
    if (after) after->*l.prev = before;
    s->*l.next = s->*l.prev = nullptr;
}

bool has_pages(PageKind kind) { return kind == PageKind::small || kind == PageKind::medium; }
Segment*& open_list(Heap* heap, PageKind kind) { return heap->open[kind == PageKind::small ? 0 : 1]; }

void open_push(Heap* heap, Segment* s) {
    push(open_list(heap, static_cast<PageKind>(s->kind)), s, kOpen);
    s->on_open_list = 1;
}

void open_remove(Heap* heap, Segment* s) {
    unlink(open_list(heap, static_cast<PageKind>(s->kind)), s, kOpen);
    s->on_open_list = 0;
}

void purge_push(Heap* heap, Segment* s) {
    push(heap->purge, s, kPurge);
    s->on_purge_list = 1;
}

void purge_remove(Heap* heap, Segment* s) {
    unlink(heap->purge, s, kPurge);
    s->on_purge_list = 0;
}


// S3.70: what the kernel refused to give back stays dirty, and the segment on the list, due
// again after the delay: false.
bool purge_segment(Heap* heap, Segment* s) {
    purge_remove(heap, s);
    std::size_t before = s->committed;
    bool done = Layout::decommit_unused(s);
    if (s->cached && s->blocks == 1) heap->cache_committed -= before - s->committed;   // [S4.89]
    if (done) return true;
    purge_push(heap, s);
    s->purge_expire = heap->clock + kPurgeDelay;
    return false;
}

void format_segment(Segment* s, PageKind kind) { Layout::format(s, kind); }

// Claimed slots whose header and first `reach` bytes are writable (S3.48), `*writable` their
// mask. Slots that hold a mapping not ours (a lazy arena, [S4.67]) stay claimed; others are tried.
Segment* claim_open(Heap* heap, PageKind kind, uint32_t blocks, std::size_t reach, uint64_t* writable) {
    for (;;) {
        Segment* s = arena_claim(blocks, &heap->arena_hint);
        if (!s) return nullptr;
        if (Layout::open_fresh(s, std::size_t{blocks} << kSegmentShift, kind, reach, arena_unheld(arena_slot_of(s)), writable)) return s;
        if (!arena_refused(arena_slot_of(s), blocks)) return nullptr;
    }
}

// Fresh arena slots for a segment of `kind`, opened, formatted, attached to `heap`, then published.
Segment* claim_segment(Heap* heap, PageKind kind, uint32_t blocks, std::size_t reach) {
    uint64_t writable = 0;
    Segment* s = claim_open(heap, kind, blocks, reach, &writable);
    if (!s) return nullptr;
    std::size_t size = std::size_t{blocks} << kSegmentShift;
    s->slot = arena_slot_of(s);
    s->blocks = static_cast<uint16_t>(blocks);   // at most kArenaSlots
    s->size = size;
    s->committed = 0;
    s->dirty_pages = 0;
    s->writable = writable;   // the rest of the slots come PROT_NONE (or unmapped) from the arena
    s->cached = s->on_open_list = s->on_purge_list = 0;
    s->lazy = arena_unheld(s->slot);   // S3.58: mapped as it is used (a lazy arena, [S4.67])
    s->next_open = s->prev_open = s->next_purge = s->prev_purge = nullptr;
    format_segment(s, kind);
    os_commit_bytes(static_cast<int64_t>(kMetaSize));
    segment_attach(heap, s);
    arena_publish(s);
    return s;
}

// The bytes of the cache's bound ([S4.87]: huge segments only).
std::size_t cache_weight(const Segment* s) { return s->blocks > 1 ? s->size : 0; }

// [S4.89] Heap::cache_committed is exact: a one-slot segment adds what it has committed when it
// is cached and takes it away when it leaves, and the purge, the one thing that changes a
// cached segment's commit, takes away what it gave back (purge_segment). It replaced a walk
// of the cache inside S4.87's eviction loop (up to 64 segments a step); the checker still walks.
void cache_remove(Heap* heap, Segment* s) {
    unlink(heap->cache, s, kOpen);
    --heap->cache_count;
    heap->cache_bytes -= cache_weight(s);
    if (s->blocks == 1) heap->cache_committed -= s->committed;
    s->cached = 0;
}

// The cache's oldest huge segment (`huge`) or oldest one-slot segment; nullptr if none.
Segment* cache_oldest(const Heap* heap, bool huge) {
    Segment* oldest = nullptr;
    for (Segment* s = heap->cache; s; s = s->next_open)
        if ((s->blocks > 1) == huge) oldest = s;
    return oldest;
}

void drop(Heap* heap, Segment* s) {
    segment_detach(heap, s);
    segment_give_back(s);
}

// An empty 4 MiB segment for `kind`: the heap's most recently cached one, or fresh slots whose
// first `reach` bytes are made writable with the header. As stage 3's (S3.49): a cached
// segment serving its old kind keeps what it has committed (dirty pages, or the last large
// block's memory); another kind counts pages from zero, so its memory goes back first.
Segment* take_segment(Heap* heap, PageKind kind, std::size_t reach) {
    Segment* s = heap->cache;
    while (s && s->blocks != 1) s = s->next_open;
    if (!s) return claim_segment(heap, kind, 1, reach);
    cache_remove(heap, s);
    Layout::unmap_leftovers(s);   // S3.71: before its page records are formatted anew
    if (s->on_purge_list) {
        if (s->kind == static_cast<uint8_t>(kind)) {
            if (kind == PageKind::large) purge_remove(heap, s);   // its memory is the new block's
        } else if (!purge_segment(heap, s)) {   // [S4.77] what it keeps is counted for the old kind's pages
            drop(heap, s);
            return claim_segment(heap, kind, 1, reach);
        }
    }
    format_segment(s, kind);
    return s;
}

// A one-block segment's page area committed up to `need` bytes past the metadata.
bool commit_up_to(Segment* s, std::size_t need) { return Layout::commit_up_to(s, need); }

// [S4.45] An empty huge segment of at least `blocks` slots: the smallest the heap has cached,
// or fresh slots. Memory the last block committed beyond twice `reach` (past the metadata) goes
// back (S3.53).
Segment* take_huge_segment(Heap* heap, uint32_t blocks, std::size_t reach) {
    Segment* best = nullptr;
    for (Segment* s = heap->cache; s; s = s->next_open)
        if (s->blocks >= blocks && s->blocks > 1 && (!best || s->blocks < best->blocks)) best = s;
    if (!best) return claim_segment(heap, PageKind::huge, blocks, kMetaSize + reach);
    cache_remove(heap, best);
    if (best->on_purge_list) purge_remove(heap, best);
    Layout::trim_for(best, reach, heap->huge);   // [S4.85] unless its live huge blocks keep within S3.47's bound
    format_segment(best, PageKind::huge);
    return best;
}

void cache_or_drop(Heap* heap, Segment* s) {
    if (s->size > kHugeCacheMax) {   // too big to keep: straight back to the arena
        drop(heap, s);
        return;
    }
    // Full: the oldest of its sort makes room ([S4.87]: bytes for a huge one, what is still
    // committed for a one-slot one, and a count for both).
    bool huge = s->blocks > 1;
    if (heap->cache_count == kCacheSegments) {
        Segment* oldest = cache_oldest(heap, huge);
        drop(heap, oldest ? oldest : cache_oldest(heap, !huge));
    }
    if (huge) {
        while (heap->cache_bytes + s->size > kCacheBytes) drop(heap, cache_oldest(heap, true));
    } else {
        while (heap->cache_count != 0 && heap->cache_committed + s->committed > kCacheCommitted) {
            Segment* oldest = cache_oldest(heap, false);
            if (!oldest) break;
            drop(heap, oldest);
        }
    }
    s->cached = 1;
    s->cache_expire = heap->clock + kCacheDelay;
    if (!has_pages(static_cast<PageKind>(s->kind)) && s->committed && !s->on_purge_list) {
        purge_push(heap, s);
        s->purge_expire = heap->clock + kPurgeDelay;
    }
    push(heap->cache, s, kOpen);
    ++heap->cache_count;
    heap->cache_bytes += cache_weight(s);
    if (!huge) heap->cache_committed += s->committed;
}

}  // namespace

Span page_area(const Segment* segment, const Page* page) { return Layout::page_area(segment, page); }

void segment_attach(Heap* heap, Segment* s) {
    heap->owned[s->slot] = 1;
    if (Layout::live_huge(s)) Layout::huge_add(heap->huge, s);   // [S4.85] a reclaimed one's block
    push(heap->segments, s, kAll);
    ++heap->segment_count;
    if (heap->trimmed) arena_trim(s->slot, s->blocks, Layout::mapped_bytes(s));   // [S4.68] a reclaimed one
}

void segment_detach(Heap* heap, Segment* s) {
    if (Layout::live_huge(s)) Layout::huge_remove(heap->huge, s);   // [S4.85] an abandoned one's block
    if (s->on_purge_list) purge_remove(heap, s);
    if (s->on_open_list) open_remove(heap, s);
    if (s->cached) cache_remove(heap, s);
    unlink(heap->segments, s, kAll);
    --heap->segment_count;
    heap->owned[s->slot] = 0;
}

void segment_settle(Heap* heap, Segment* s) {
    if (s->dirty_pages && !s->on_purge_list) {
        purge_push(heap, s);
        s->purge_expire = heap->clock + kPurgeDelay;
    }
    if (s->used_pages == 0) cache_or_drop(heap, s);
    else if (has_pages(static_cast<PageKind>(s->kind)) && Layout::takeable(s) && !s->on_open_list) open_push(heap, s);
}

void segment_give_back(Segment* s) {
    arena_unpublish(s);
    os_commit_bytes(-static_cast<int64_t>(kMetaSize + s->committed));
    Layout::unmap_leftovers(s);   // [S4.78] pages whose munmap was refused (S3.71)
    arena_release(s->slot, s->blocks, Layout::mapped_bytes(s));
}

namespace {

// [S4.75] A segment whose first page the system refuses goes back at once (stage 3's S3.69):
// left on the open list with no page in use, it failed the checker at exit.
Page* try_page_alloc(Heap* heap, PageKind kind) {
    Segment* s = open_list(heap, kind);
    if (!s) {
        s = take_segment(heap, kind, std::size_t{1} << (kind == PageKind::small ? kSmallPageShift : kMediumPageShift));
        if (!s) return nullptr;
        open_push(heap, s);
    }
    Page* page = Layout::take_page(
        s, [heap](Segment* full) { open_remove(heap, full); }, [heap](Segment* clean) { purge_remove(heap, clean); });
    if (!page && s->used_pages == 0) drop(heap, s);   // only a segment just taken is open with none in use
    return page;
}

Page* try_one_block_page_alloc(Heap* heap, std::size_t block_bytes, std::size_t alignment) {
    if (alignment < kOsPage) alignment = kOsPage;
    std::size_t offset = round_up(kMetaSize, alignment);
    if (block_bytes > arena_bytes()) return nullptr;
    std::size_t usable = stage3::one_block_usable(block_bytes);   // S3.67: with its tail guard
    std::size_t bytes = usable + stage3::kGuardBytes;
    uint64_t blocks = (offset + bytes + kSegmentSize - 1) >> kSegmentShift;
    Segment* s = blocks == 1 ? take_segment(heap, PageKind::large, offset + bytes)
                             : take_huge_segment(heap, static_cast<uint32_t>(blocks), offset + bytes - kMetaSize);
    if (!s) return nullptr;
    // [S4.88] A reused large segment whose commit reaches past the block, within four times its
    // bytes: the block takes all of it, so its tail guard (S3.67) lands where the last block's
    // did, on a page touched already, not on one that faults (mstress-like: 95% of the faults
    // in this function were that store). A longer usable block; no byte more committed. The
    // rule is stage 3's too (S3.80, segment_layout.h); a huge segment keeps its block's size.
    bytes = Layout::large_reach(s, offset, bytes);
    usable = bytes - stage3::kGuardBytes;
    if (!commit_up_to(s, offset + bytes - kMetaSize)) {   // what the block reaches
        drop(heap, s);
        return nullptr;
    }
    s->free_pages = 0;
    s->used_pages = 1;
    Page* page = &s->pages()[0];
    page_format_one_block(page, heap, addr(s) + offset, usable);
    Layout::guards_write(page);
    if (blocks > 1) Layout::huge_add(heap->huge, s);   // [S4.85]
    return page;
}

// [S4.60] [S4.69] Under pressure, as stage 3 (S3.52): when a claim or a commit fails, the heap
// gives back what no live block needs (heap_relieve) and the request is tried once more.
template <class Get>
Page* relieved(Heap* heap, Get get) {
    return stage3::under_pressure(get, [heap] { return heap_relieve(heap); });
}

}  // namespace

// S3.15 as in stage 3, with the heap's own lists: the lowest free page of the first open
// segment of the kind, dirty pages first (no fault, no system call).
Page* page_alloc(Heap* heap, PageKind kind) {
    return relieved(heap, [=] { return try_page_alloc(heap, kind); });
}

Page* one_block_page_alloc(Heap* heap, std::size_t block_bytes, std::size_t alignment) {
    return relieved(heap, [=] { return try_one_block_page_alloc(heap, block_bytes, alignment); });
}

bool one_block_resize(Page* page, std::size_t bytes) { return Layout::one_block_resize(page, bytes); }

void page_release(Heap* heap, Page* page) {
    page_verify_empty(page);   // [S4.43]
    Segment* s = segment_of(page);
    if (Layout::live_huge(s)) Layout::huge_remove(heap->huge, s);   // [S4.85]
    uint64_t was_dirty = s->dirty_pages;
    uint32_t in_use = Layout::release_page(s, page, heap->clock + kPurgeDelay, [heap](Segment* dirty) { purge_push(heap, dirty); });
    if (s->dirty_pages != was_dirty) heap->released_bytes += std::size_t{1} << s->page_shift;   // [S4.105]
    if (in_use == 0) {
        if (s->on_open_list) open_remove(heap, s);
        cache_or_drop(heap, s);
    } else if (has_pages(static_cast<PageKind>(s->kind)) && !s->on_open_list && Layout::takeable(s)) {   // [S4.80] not for S3.73's blocked pages alone
        open_push(heap, s);
    }
}

void segment_purge(Heap* heap, bool force) {
    for (Segment* s = heap->purge; s;) {
        Segment* next = s->next_purge;
        if (force || s->purge_expire <= heap->clock) purge_segment(heap, s);
        s = next;
    }
}

void segment_cache_collect(Heap* heap, bool force) {
    for (Segment* s = heap->cache; s;) {
        Segment* next = s->next_open;
        if (force || s->cache_expire <= heap->clock) drop(heap, s);
        s = next;
    }
}

bool purge_pending(const Heap* heap) { return heap->purge != nullptr; }

bool segment_shrink(Heap* heap) {
    bool any = false;
    for (Segment* s = heap->segments; s; s = s->next) {
        if (s->writable == 0 || s->dirty_pages != 0) continue;   // its header alone; or not purged
        std::size_t keep = kMetaSize;   // bytes from the segment's start that live blocks need
        if (s->page_count == 1) {
            keep += s->committed;   // at least what its block reaches
        } else {
            for (uint64_t used = ~s->free_pages & Layout::slot_bits(0, s->page_count); used != 0; used &= used - 1) {
                Span area = page_area(s, &s->pages()[__builtin_ctzll(used)]);
                if (area.hi - addr(s) > keep) keep = area.hi - addr(s);
            }
        }
        std::size_t slot = Layout::slot_bytes(s), mapped = Layout::mapped_bytes(s);
        auto slots = static_cast<unsigned>((keep + slot - 1) / slot);
        if (slots * slot >= mapped) continue;
        // [S4.76] Refused (the map count's limit), the slots stay writable, and nothing went back.
        if (!arena_uncommit(reinterpret_cast<char*>(s) + slots * slot, mapped - slots * slot)) continue;
        s->writable = Layout::slot_bits(0, slots);
        any = true;
    }
    return any;
}

void segment_trim_held(Heap* heap) {
    heap->trimmed = true;
    for (Segment* s = heap->segments; s; s = s->next) arena_trim(s->slot, s->blocks, Layout::mapped_bytes(s));
}

}  // namespace edu::stage4
