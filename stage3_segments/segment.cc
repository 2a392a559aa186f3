// stage3_segments/segment.cc: the segment map, segment lists, the cache, and pages handed out
// of segments and taken back. Single-threaded: the adapter serialises callers.
#include "stage3_segments/segment.h"

#include <cstring>

#include "stage3_segments/os.h"
#include "stage3_segments/page.h"

namespace edu::stage3 {

namespace {
// The page every slot of g_foreign names: limit 0, so the validity test passes no pointer
// through it ([S3.6]). Never written.
Page g_foreign_page{};

constexpr Segment foreign_segment() {
    Segment s{};
    for (Page*& page : s.page_of) page = &g_foreign_page;
    return s;
}
}  // namespace

constinit Segment g_foreign = foreign_segment();
constinit SegmentMap g_segment_map{};
constinit MapWindow g_map_window = {0, nullptr, 0};

void map_window_follow(const void* p) {   // [S3.60]
    uintptr_t root = (reinterpret_cast<uintptr_t>(p) >> kSegmentShift) >> kLeafBits;
    g_map_window = {root << (kLeafBits + kSegmentShift), g_segment_map.leaf[root], kLeafEntries};
}

uint64_t g_clock = 0;

namespace {

Segment* g_all = nullptr;                    // every mapped segment
Segment* g_open[2] = {nullptr, nullptr};     // small, medium segments with a free page
Segment* g_cache = nullptr;                  // empty segments waiting to be reused, newest first
unsigned g_cache_count = 0;
std::size_t g_cache_bytes = 0;               // sum of the huge ones' sizes (address space)
std::size_t g_cache_committed = 0;           // [S3.87] what the 4 MiB ones keep committed
Segment* g_purge = nullptr;                  // segments with memory to decommit later
uintptr_t g_lazy_top = 0;                    // [S3.59] lazy segments are sought below this
uintptr_t g_lazy_floor = 0;                  // and above this
HugeTotals g_huge;                           // [S3.78] the live huge blocks' reach and commit

uintptr_t addr(const void* p) { return reinterpret_cast<uintptr_t>(p); }
std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) & ~(to - 1); }

// ---- Lists ----------------------------------------------------------------------------------

void all_push(Segment* s) {
    s->prev = nullptr;
    s->next = g_all;
    if (g_all) g_all->prev = s;
    g_all = s;
}

void all_remove(Segment* s) {
    if (s->prev) s->prev->next = s->next;
    else g_all = s->next;
    if (s->next) s->next->prev = s->prev;
}

// The open lists and the cache share the `*_open` links: a segment is on at most one of them.
void link_push(Segment*& head, Segment* s) {
    s->prev_open = nullptr;
    s->next_open = head;
    if (head) head->prev_open = s;
    head = s;
}

void link_remove(Segment*& head, Segment* s) {
    if (s->prev_open) s->prev_open->next_open = s->next_open;
    else head = s->next_open;
    if (s->next_open) s->next_open->prev_open = s->prev_open;
    s->next_open = s->prev_open = nullptr;
}

void purge_push(Segment* s) {
    s->on_purge_list = 1;
    s->prev_purge = nullptr;
    s->next_purge = g_purge;
    if (g_purge) g_purge->prev_purge = s;
    g_purge = s;
}

void purge_remove(Segment* s) {
    if (s->prev_purge) s->prev_purge->next_purge = s->next_purge;
    else g_purge = s->next_purge;
    if (s->next_purge) s->next_purge->prev_purge = s->prev_purge;
    s->next_purge = s->prev_purge = nullptr;
    s->on_purge_list = 0;
}

// Decommits every dirty page of `s`, or for a cached one-block segment what its last block
// reached, and takes it off the purge list. [S3.70] What the kernel refused to give back stays
// dirty, and the segment on the list, due again after the delay: false.
bool purge_segment(Segment* s) {
    purge_remove(s);
    std::size_t before = s->committed;
    bool done = Layout::decommit_unused(s);
    if (s->cached && s->size <= kSegmentSize) g_cache_committed -= before - s->committed;   // [S3.87]
    if (done) return true;
    purge_push(s);
    s->purge_expire = g_clock + kPurgeDelay;
    return false;
}

// ---- Mapping --------------------------------------------------------------------------------

void format_segment(Segment* s, PageKind kind) { Layout::format(s, kind); }

// The map entry of `chunk`, for writing: its leaf is mapped and filled with &g_foreign first
// if it is not yet (nullptr when that fails). A leaf is never unmapped: 128 KiB for every 64 GiB
// the program's segments have touched.
Segment** map_entry(uintptr_t chunk) {
    Segment**& leaf = g_segment_map.leaf[chunk >> kLeafBits];
    if (!leaf) {
        constexpr std::size_t bytes = kLeafEntries * sizeof(Segment*);
        void* memory = os_map_aligned(bytes, kOsPage);
        if (!memory) return nullptr;
        if (!os_make_writable(memory, bytes)) {
            os_unmap(memory, bytes);
            return nullptr;
        }
        leaf = static_cast<Segment**>(memory);
        for (std::size_t i = 0; i < kLeafEntries; ++i) leaf[i] = &g_foreign;
        if (g_map_window.chunks == 0)   // [S3.60]
            g_map_window = {(chunk >> kLeafBits) << (kLeafBits + kSegmentShift), leaf, kLeafEntries};
    }
    return &leaf[chunk & (kLeafEntries - 1)];
}

// A fresh segment reserved whole ([S3.12]) at a 4 MiB boundary, its header and first `reach`
// bytes writable ([S3.48]), and its map entry in *entry; nullptr if anything is refused.
void* map_reserved(std::size_t size, PageKind kind, std::size_t reach, uint64_t* writable, Segment*** entry) {
    void* memory = os_map_aligned(size, kSegmentSize);
    if (!memory) return nullptr;
    uintptr_t chunk = addr(memory) >> kSegmentShift;
    *entry = chunk < kMapEntries ? map_entry(chunk) : nullptr;
    // Above the 47-bit space the map covers (never ours), or no memory for a leaf or the header.
    if (!*entry || !Layout::open_fresh(memory, size, kind, reach, false, writable)) {
        os_unmap(memory, size);
        return nullptr;
    }
    return memory;
}

// [S3.59] Where lazy segments go: a window of `size` bytes at a 4 MiB boundary, found walking
// down from g_lazy_top, which starts halfway between address zero and where the kernel maps a
// page now (tens of terabytes below it). The kernel hands out address space from the top down
// (in the legacy layout, upward from a base above that point), and a process that holds no more
// than its limit does not come near, so the windows there are free; an executable and its brk
// heap lie above (a PIE) or far below. A window where a segment of ours starts is stepped over
// by its map entry, without a system call; one where the kernel refuses (EEXIST: the inner chunk
// of a huge segment of ours, whose start is mapped, or a mapping not ours) is stepped over too.
// The next search starts right below the segment found, or at the top of one given back if that
// is higher, so windows are reused. nullptr when the limit refuses even the header (ENOMEM), or
// there is no such space (then the segment is reserved whole, [S3.12]).
// [S3.79] A lazy segment's mapping whose munmap was refused (at the map count's limit, when it
// lies between two other mappings) stays behind, its pages given back (contract/os.h). The
// window is remembered (up to kLeftoverMax of them; past that one is lost): a fresh segment
// that reaches it unmaps the leftover first, exactly that range, and takes the window, where
// the leftover would answer EEXIST, taken for a mapping not ours, for good.
struct Leftover {
    uintptr_t at;       // a mapping of ours that outlived its segment
    std::size_t bytes;
};
constexpr unsigned kLeftoverMax = 16;
Leftover g_leftovers[kLeftoverMax];
unsigned g_leftover_count = 0;

void unmap_lazy(void* at, std::size_t bytes) {
    if (os_unmap(at, bytes) || g_leftover_count == kLeftoverMax) return;
    g_leftovers[g_leftover_count++] = Leftover{addr(at), bytes};
}

// Whether no leftover of ours lies in [at, at + size) any more: each one there is unmapped now,
// or refused again (false: the window is passed over this time).
bool window_cleared(uintptr_t at, std::size_t size) {
    bool cleared = true;
    for (unsigned i = 0; i < g_leftover_count;) {
        Leftover& l = g_leftovers[i];
        if (l.at - at >= size) {
            ++i;
        } else if (os_unmap(reinterpret_cast<void*>(l.at), l.bytes)) {
            l = g_leftovers[--g_leftover_count];
        } else {
            cleared = false;
            ++i;
        }
    }
    return cleared;
}

void* map_lazily(std::size_t size, PageKind kind, std::size_t reach, uint64_t* writable, Segment*** entry) {
    if (g_lazy_top == 0) {
        uintptr_t half = addr(os_where_mappings_go()) / 2 & ~kSegmentMask;
        g_lazy_top = half;
        g_lazy_floor = half / 2;
    }
    for (uintptr_t top = g_lazy_top; top - g_lazy_floor > size; top -= kSegmentSize) {
        uintptr_t at = top - size, chunk = at >> kSegmentShift;
        if (chunk >= kMapEntries || segment_owned(reinterpret_cast<void*>(at))) continue;
        if (g_leftover_count && !window_cleared(at, size)) continue;
        if (!(*entry = map_entry(chunk))) return nullptr;
        if (Layout::open_fresh(reinterpret_cast<void*>(at), size, kind, reach, true, writable)) {
            g_lazy_top = at;
            return reinterpret_cast<void*>(at);
        }
        if (errno != EEXIST) return nullptr;
    }
    return nullptr;
}

// A fresh segment of `size` bytes (a multiple of 4 MiB) for `kind`, its header and the first
// `reach` bytes writable ([S3.48]). [S3.58] Under an address-space limit (asked of the kernel
// here, so a limit set after start counts) it is mapped lazily: a reservation counts against
// the limit whole, PROT_NONE or not, so nothing of its window is mapped but what it makes
// writable, and the limit is charged what segments use, as a data limit is ([S3.38]). [S3.77]
// Under a data limit too: it does not count a reservation, but it counts what a reserved
// segment makes writable ahead of its blocks (a small page's 64 KiB at once), where a lazy one
// maps what its pages carve (the smallest data limits either way are the chapter's).
Segment* map_segment(std::size_t size, PageKind kind, std::size_t reach) {
    uint64_t writable = 0;
    Segment** entry = nullptr;
    bool lazy = os_address_space_limited() || os_data_limited();
    void* memory = lazy ? map_lazily(size, kind, reach, &writable, &entry) : nullptr;
    if (!memory) {
        if (lazy && g_lazy_top - g_lazy_floor > size) return nullptr;   // the limit said no
        lazy = false;
        memory = map_reserved(size, kind, reach, &writable, &entry);
        if (!memory) return nullptr;
    }
    os_commit_bytes(static_cast<int64_t>(kMetaSize));
    auto* s = static_cast<Segment*>(memory);
    std::memset(static_cast<void*>(s), 0, sizeof(Segment));
    s->size = size;
    s->writable = writable;
    s->lazy = lazy;
    format_segment(s, kind);
    *entry = s;  // a huge segment registers its first chunk only ([S3.7])
    all_push(s);
    return s;
}

void unmap_segment(Segment* s) {
    if (s->on_purge_list) purge_remove(s);   // unmapping gives everything back anyway
    all_remove(s);
    // The map forgets the segment before the munmap: a stale pointer into it then finds
    // g_foreign and is refused as foreign, never followed into a header that is gone (death_test).
    *map_entry(addr(s) >> kSegmentShift) = &g_foreign;   // its leaf exists: mapping the segment made it
    os_commit_bytes(-static_cast<int64_t>(kMetaSize + s->committed));
    if (!s->lazy) {
        os_unmap(s, s->size);
        return;
    }
    if (addr(s) + s->size > g_lazy_top) g_lazy_top = addr(s) + s->size;   // [S3.59] free again
    Layout::unmap_leftovers(s);             // [S3.71] pages whose munmap was refused
    unmap_lazy(s, Layout::mapped_bytes(s));   // [S3.58] what it mapped, no more ([S3.79])
}

// [S3.87] The cache's two sorts: huge segments count their address space against kCacheBytes,
// 4 MiB ones what they keep committed against kCacheCommitted. g_cache_committed is exact: a
// segment adds its commit when cached and takes it away when it leaves, and the purge, the one
// thing that changes a cached segment's commit, takes away what it gave back (purge_segment).
bool cache_huge(const Segment* s) { return s->size > kSegmentSize; }

void cache_remove(Segment* s) {
    link_remove(g_cache, s);
    --g_cache_count;
    if (cache_huge(s)) g_cache_bytes -= s->size;
    else g_cache_committed -= s->committed;
    s->cached = 0;
}

// The cache's oldest segment of a sort (huge or not); nullptr if none.
Segment* cache_oldest(bool huge) {
    Segment* oldest = nullptr;
    for (Segment* s = g_cache; s; s = s->next_open)
        if (cache_huge(s) == huge) oldest = s;
    return oldest;
}

void cache_drop(Segment* s) {
    cache_remove(s);
    unmap_segment(s);
}

// A one-block segment's page area committed up to `need` bytes past the metadata.
bool commit_up_to(Segment* s, std::size_t need) { return Layout::commit_up_to(s, need); }

// [S3.49] An empty 4 MiB segment for `kind`: the most recently cached one, or a new mapping
// whose first `reach` bytes are made writable with its header. A cached segment may hold
// committed memory: dirty pages, or a large block's. Serving its old kind again it keeps it (a
// large block reuses what the last one had; dirty pages stay dirty, to be taken first and
// purged only after the delay), so a segment that empties and refills costs no system call
// and no page fault. Another kind counts pages from zero: the memory goes back first.
Segment* take_segment(PageKind kind, std::size_t reach) {
    Segment* s = g_cache;
    while (s && s->size != kSegmentSize) s = s->next_open;
    if (!s) return map_segment(kSegmentSize, kind, reach);
    cache_remove(s);
    Layout::unmap_leftovers(s);   // [S3.71] before its page records are formatted anew
    if (s->on_purge_list) {
        if (s->kind == static_cast<uint8_t>(kind)) {
            if (kind == PageKind::large) purge_remove(s);   // its memory is the new block's
        } else if (!purge_segment(s)) {   // [S3.70] what it keeps is counted for the old kind's pages
            unmap_segment(s);
            return map_segment(kSegmentSize, kind, reach);
        }
    }
    format_segment(s, kind);
    return s;
}

// [S3.35] An empty huge segment of at least `size` bytes: the smallest cached one, or a new
// mapping. Memory the last block committed beyond twice `reach` (bytes past the metadata) goes
// back ([S3.53]), unless the live huge blocks in all stay within that bound with it ([S3.78]).
Segment* take_huge_segment(std::size_t size, std::size_t reach) {
    Segment* best = nullptr;
    for (Segment* s = g_cache; s; s = s->next_open)
        if (s->size >= size && s->size > kSegmentSize && (!best || s->size < best->size)) best = s;
    if (!best) return map_segment(size, PageKind::huge, kMetaSize + reach);
    cache_remove(best);
    if (best->on_purge_list) purge_remove(best);
    Layout::trim_for(best, reach, g_huge);
    format_segment(best, PageKind::huge);
    return best;
}

void cache_or_unmap(Segment* s) {
    if (s->size > kHugeCacheMax) {
        unmap_segment(s);
        return;
    }
    // Full: the oldest of its sort makes room ([S3.87]: bytes for a huge one, what is still
    // committed for a 4 MiB one, and a count for both).
    bool huge = cache_huge(s);
    if (g_cache_count == kCacheSegments) {
        Segment* oldest = cache_oldest(huge);
        cache_drop(oldest ? oldest : cache_oldest(!huge));
    }
    if (huge) {
        while (g_cache_bytes + s->size > kCacheBytes) cache_drop(cache_oldest(true));
    } else {
        while (g_cache_committed + s->committed > kCacheCommitted) {
            Segment* oldest = cache_oldest(false);
            if (!oldest) break;
            cache_drop(oldest);
        }
    }
    s->cached = 1;
    s->cache_expire = g_clock + kCacheDelay;
    if (s->page_count == 1 && s->committed) {  // a large or huge block's memory
        purge_push(s);
        s->purge_expire = g_clock + kPurgeDelay;
    }
    link_push(g_cache, s);
    ++g_cache_count;
    if (huge) g_cache_bytes += s->size;
    else g_cache_committed += s->committed;
}

// [S3.69] A segment whose first page the system refuses (a data limit grants a fresh segment
// its header alone, [S3.48], then not the page's slots) goes back at once: left on the open list
// with no page in use, it broke the checker's rule (EDU_ALLOC_CHECK=1 aborted a program whose
// malloc had only said ENOMEM) and kept its header from the relief that follows ([S3.52]).
Page* try_page_alloc(PageKind kind) {
    unsigned k = kind == PageKind::small ? 0 : 1;
    Segment* s = g_open[k];
    if (!s) {
        s = take_segment(kind, std::size_t{1} << (kind == PageKind::small ? kSmallPageShift : kMediumPageShift));
        if (!s) return nullptr;
        link_push(g_open[k], s);
        s->on_open_list = 1;
    }
    Page* page = Layout::take_page(
        s,
        [k](Segment* full) {
            link_remove(g_open[k], full);
            full->on_open_list = 0;
        },
        [](Segment* clean) { purge_remove(clean); });
    if (!page && s->used_pages == 0) {   // only a segment just taken is open with no page in use
        if (s->on_open_list) link_remove(g_open[k], s);
        s->on_open_list = 0;
        unmap_segment(s);
    }
    return page;
}

Page* try_one_block_page_alloc(std::size_t block_bytes, std::size_t alignment) {
    if (alignment < kOsPage) alignment = kOsPage;
    std::size_t offset = round_up(kMetaSize, alignment);
    std::size_t usable = one_block_usable(block_bytes);   // [S3.67] whole OS pages with its tail guard
    std::size_t bytes = usable + kGuardBytes;
    Segment* s;
    PageKind kind;
    if (offset + bytes <= kSegmentSize) {
        kind = PageKind::large;
        s = take_segment(kind, offset + bytes);
    } else {  // over 4 MiB, so the registered first chunk is all ours; whole chunks ([S3.35])
        kind = PageKind::huge;
        s = take_huge_segment(round_up(offset + bytes, kSegmentSize), offset + bytes - kMetaSize);
    }
    if (!s) return nullptr;
    bytes = Layout::large_reach(s, offset, bytes);   // [S3.80] a reused one's commit, within 4x
    usable = bytes - kGuardBytes;
    // Commit what the block reaches; a reused large segment may already hold more.
    if (!commit_up_to(s, offset + bytes - kMetaSize)) {
        unmap_segment(s);
        return nullptr;
    }
    s->free_pages = 0;
    s->used_pages = 1;
    Page* page = &s->pages()[0];
    page_format_one_block(page, addr(s) + offset, usable);
    Layout::guards_write(page);
    if (kind == PageKind::huge) Layout::huge_add(g_huge, s);   // [S3.78]
    return page;
}

// [S3.52] Under pressure. Cached segments hold address space and writable slots, which an
// address-space or a data limit counts. When the system refuses a mapping or a commit while
// the cache holds segments, they go back (munmap returns both) and the request is tried once
// more: a program under a limit that freed its large blocks gets a big one again, as it would
// from glibc, which unmaps such blocks on free.
template <class Get>
Page* relieved(Get get) {
    return under_pressure(get, segment_relieve);
}

}  // namespace

Span page_area(const Segment* segment, const Page* page) { return Layout::page_area(segment, page); }

// [S3.15] Pages out of segments. A small or medium page is the lowest free page of the first
// open segment of its kind; its whole area counts in the footprint from now on (Linux will
// back it on first touch). Released, it stays dirty until the purge ([S3.34]).
Page* page_alloc(PageKind kind) {
    return relieved([kind] { return try_page_alloc(kind); });
}

Page* one_block_page_alloc(std::size_t block_bytes, std::size_t alignment) {
    return relieved([=] { return try_one_block_page_alloc(block_bytes, alignment); });
}

bool one_block_resize(Page* page, std::size_t bytes) { return Layout::one_block_resize(page, bytes); }

void page_release(Page* page) {
    Segment* s = segment_of(page);
    auto kind = static_cast<PageKind>(s->kind);
    if (Layout::live_huge(s)) Layout::huge_remove(g_huge, s);   // [S3.78]
    uint32_t in_use = Layout::release_page(s, page, g_clock + kPurgeDelay, [](Segment* dirty) { purge_push(dirty); });
    if (kind == PageKind::small || kind == PageKind::medium) {
        unsigned k = kind == PageKind::small ? 0 : 1;
        if (in_use == 0) {
            if (s->on_open_list) link_remove(g_open[k], s);
            s->on_open_list = 0;
            cache_or_unmap(s);
        } else if (!s->on_open_list && Layout::takeable(s)) {   // [S3.73] not for blocked pages alone
            link_push(g_open[k], s);
            s->on_open_list = 1;
        }
        return;
    }
    cache_or_unmap(s);
}

bool segment_relieve() {
    if (g_cache_count == 0) return false;
    segment_cache_collect(true);
    return true;
}

void segment_cache_collect(bool force) {
    Segment* s = g_cache;
    while (s) {
        Segment* next = s->next_open;
        if (force || s->cache_expire <= g_clock) {
            cache_remove(s);
            unmap_segment(s);
        }
        s = next;
    }
}

void segment_purge(bool force) {
    for (Segment* s = g_purge; s;) {
        Segment* next = s->next_purge;
        if (force || s->purge_expire <= g_clock) purge_segment(s);
        s = next;
    }
}

bool purge_pending() { return g_purge != nullptr; }
Segment* first_purge_segment() { return g_purge; }

unsigned segment_cache_count() { return g_cache_count; }
std::size_t segment_cache_committed() { return g_cache_committed; }
const HugeTotals& huge_totals() { return g_huge; }
Segment* first_segment() { return g_all; }
Segment* first_open_segment(PageKind kind) { return g_open[kind == PageKind::small ? 0 : 1]; }
Segment* first_cached_segment() { return g_cache; }

}  // namespace edu::stage3
