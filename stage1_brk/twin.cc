// stage1_brk/twin.cc: the reference model's procedures, in the order of the .asm files
// (heap.asm, freelist.asm, block.asm, malloc.asm, check.asm). Each mirrors its assembly
// namesake's decisions exactly, down to which list operation happens first.
#include "stage1_brk/twin.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstring>

namespace edu::stage1 {
namespace {
// The layout is core.h's (the constants types.inc defines, [S1.50]), under shorter names.
constexpr uint64_t kAlloc = kS1Alloc, kPrevFree = kS1PrevFree, kFlags = kS1Flags, kPage = kS1Page;
constexpr uint64_t kNext = kS1Next, kPrev = kS1Prev;
constexpr uint64_t kRegionEnd = kS1RegionEnd;  // the next region is the epilogue's link [S1.39]
constexpr uint64_t kFirstBlock = kS1RegionHeader, kEpilogueTag = kAlloc;  // no prologue [S1.37]
constexpr uint64_t kFailed = UINT64_MAX;
constexpr uint64_t kTrimFollowMin = kS1TrimFollowMin, kTrimFollowMax = kS1TrimFollowMax;   // [S1.43]
constexpr uint64_t kTooShort = 1;  // fresh_range: the range holds no region (never a header: 8 mod 16)

uint64_t adjust(uint64_t size) {
    uint64_t asize = (size + kS1Overhead + kS1Align - 1) & ~(kS1Align - 1);
    return asize < kS1MinBlock ? kS1MinBlock : asize;
}
}  // namespace

uint64_t Twin::load(uint64_t address) {
    uint64_t v;
    std::memcpy(&v, reinterpret_cast<const void*>(address), 8);
    return v;
}

void Twin::store(uint64_t address, uint64_t value) {
    std::memcpy(reinterpret_cast<void*>(address), &value, 8);
}

// A region's successor: the link in its epilogue's size bits [S1.39].
uint64_t Twin::next_region(uint64_t region) { return load(load(region + kRegionEnd) - 8) & ~kFlags; }

// A free block's tags; a used block has its header only (store), its PREV_FREE kept in step
// with the block before it.
void Twin::set_tags(uint64_t header, uint64_t tag) {
    store(header, tag);
    store(header + (tag & ~kFlags) - 8, tag);
}

// ---- heap.asm ----

uint64_t Twin::sbrk(int64_t increment) {
    void* r = sbrk_(increment);
    if (r == reinterpret_cast<void*>(-1)) return kFailed;
    if (increment != 0) {
        ++brk_calls;
        footprint += static_cast<uint64_t>(increment);
        if (footprint > peak_footprint) peak_footprint = footprint;
    }
    return reinterpret_cast<uint64_t>(r);
}

uint64_t Twin::region_of(uint64_t address, bool* damaged) const {
    if (damaged) *damaged = false;
    for (uint64_t r = first_region_; r;) {
        if (address < r) return 0;
        uint64_t end = load(r + kRegionEnd);
        // [S1.40] an end word or a link that cannot be right is reported, not followed; the top
        // region's end, equal to the top, needs no test
        if (end != heap_top_ && ((end & 15) || end > heap_top_ || end < r || end - r < kFirstBlock + kS1MinBlock + 8))
            break;
        if (address < end) return r;
        uint64_t next = next_region(r);
        if (!next) return 0;
        if (next < end || next >= heap_top_) break;
        r = next;
    }
    if (damaged) *damaged = true;
    return 0;
}

uint64_t Twin::margin(uint64_t shift) const {
    uint64_t m = footprint >> shift;
    return (m > grow_margin ? grow_margin : m) & ~uint64_t{15};
}

uint64_t Twin::heap_grow(uint64_t asize, uint64_t mode) {
    for (;;) {
        uint64_t block = heap_grow_once(asize, mode);
        if (block == kTooShort) continue;  // a range that holds no region: left as it is
        if (!block || load(block) >= asize) return block;
        // The break moved between the query and the sbrk: the region is valid but short.
    }
}

uint64_t Twin::heap_grow_once(uint64_t asize, uint64_t mode) {
    // [S1.38] a block for the back needs no margin; a small block under seg a 32nd [S1.42]
    uint64_t extra = mode == S1_GROW_EXACT ? 0 : margin(mode == S1_GROW_WIDE ? kS1SmallGrowShift : kS1GrowShift);
    uint64_t cur = sbrk(0);
    if (cur == kFailed) return status = S1_ENOMEM, 0;
    uint64_t last = last_region_;
    if (last && cur == load(last + kRegionEnd)) {
        uint64_t have = (load(cur - 8) & kPrevFree) ? load(cur - 16) : 0;
        int64_t need = static_cast<int64_t>(asize - have);
        if (need < static_cast<int64_t>(kS1MinBlock)) need = kS1MinBlock;
        uint64_t increment = static_cast<uint64_t>(need) + extra;
        uint64_t r = sbrk(static_cast<int64_t>(increment));
        if (r == kFailed) return status = S1_ENOMEM, 0;
        if (r != cur) return fresh_range(r, increment);
        uint64_t header = cur - 8, old_epilogue = load(header);
        store(header, increment | (old_epilogue & kPrevFree));
        store(last + kRegionEnd, cur + increment);
        if (cur + increment > heap_top_) heap_top_ = cur + increment;
        store(cur + increment - 8, (old_epilogue & ~kFlags) | kEpilogueTag);  // the link moves along
        return coalesce(header);
    }
    uint64_t length = asize + kFirstBlock + 8 + extra;
    length += (0 - cur) & 15;
    uint64_t r = sbrk(static_cast<int64_t>(length));
    if (r == kFailed) return status = S1_ENOMEM, 0;
    return fresh_range(r, length);
}

uint64_t Twin::fresh_range(uint64_t base, uint64_t length) {
    uint64_t region = (base + 15) & ~uint64_t{15};
    uint64_t end = (base + length) & ~uint64_t{15};
    if (region + kFirstBlock + kS1MinBlock + 8 > end) return kTooShort;  // no room for a region
    store(region + kRegionEnd, end);
    if (end > heap_top_) heap_top_ = end;
    uint64_t block = region + kFirstBlock;
    set_tags(block, end - 8 - block);
    uint64_t before = 0, after = first_region_;
    while (after && after <= region) before = after, after = next_region(after);
    store(end - 8, after | kEpilogueTag | kPrevFree);
    if (before) {
        uint64_t link = load(before + kRegionEnd) - 8;  // the epilogue of the region below
        store(link, (load(link) & kFlags) | region);
    } else {
        first_region_ = region;
    }
    last_region_ = region;
    list_push(block);
    return block;
}

void Twin::heap_trim(uint64_t header) {
    uint64_t last = last_region_;
    if (!last) return;
    uint64_t size = load(header);
    if (header + size != load(last + kRegionEnd) - 8) return;
    if (size < std::max(trim_threshold, std::min(trim_followed, footprint - free_bytes))) return;   // [S1.43]
    uint64_t keep = margin(kS1GrowShift);
    if (keep < kS1MinBlock) keep = kS1MinBlock;
    if (size <= keep) return;
    uint64_t give = (size - keep) & ~(kPage - 1);
    if (!give) return;
    uint64_t epilogue = load(header + size);  // read now: its page may be given back
    if (sbrk(0) != load(last + kRegionEnd)) return;
    uint64_t old = sbrk(-static_cast<int64_t>(give));
    if (old == kFailed) return;
    if (old != load(last + kRegionEnd)) {  // someone moved the break: give their pages back
        sbrk(static_cast<int64_t>(give));
        return;
    }
    list_remove(header);
    set_tags(header, size - give);
    list_push(header);
    uint64_t end = load(last + kRegionEnd) - give;
    if (end + give == heap_top_) heap_top_ = end;
    store(last + kRegionEnd, end);
    store(end - 8, epilogue);
}

void Twin::release(uint64_t header, uint64_t freed) {
    uint64_t size = load(header);
    if (size < trim_threshold) return;
    if (header + size + 8 == load(last_region_ + kRegionEnd)) return;
    dirty_bytes += size - freed < trim_threshold ? size : freed;
    uint64_t live = footprint - free_bytes;
    if (dirty_bytes > std::max(live, purge_floor)) purge();
}

void Twin::purge() {
    dirty_bytes = 0;
    for (uint64_t c = size_class(trim_threshold); c < kS1Classes; ++c)
        for (uint64_t b = free_heads_[c]; b; b = load(b + kNext)) release_pages(b);
}

void Twin::release_pages(uint64_t header) {
    uint64_t size = load(header);
    if (size < trim_threshold) return;
    if (header + size + 8 == load(last_region_ + kRegionEnd)) return;
    uint64_t start = (header + 24 + kPage - 1) & ~(kPage - 1), end = (header + size - 8) & ~(kPage - 1);
    if (end <= start) return;
    ::madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED);
    ++madvise_calls;
}

// ---- freelist.asm ----

uint64_t Twin::size_class(uint64_t size) const {
    if (fit_policy != S1_FIT_SEG) return 0;
    if (size < 512) return size / 16 - 2;
    uint64_t e = 63 - __builtin_clzll(size);
    uint64_t c = 4 * (e - 2) + ((size >> (e - 2)) & 3) + 2;
    return c < kS1Classes - 1 ? c : kS1Classes - 1;
}

void Twin::list_push(uint64_t header) {
    free_bytes += load(header);
    uint64_t c = size_class(load(header));
    class_map_ |= uint64_t{1} << c;
    store(header + kNext, free_heads_[c]);
    store(header + kPrev, 0);
    if (free_heads_[c]) store(free_heads_[c] + kPrev, header);
    free_heads_[c] = header;
}

void Twin::list_remove(uint64_t header) {
    free_bytes -= load(header);
    uint64_t c = size_class(load(header));
    uint64_t next = load(header + kNext), prev = load(header + kPrev);
    auto in_heap = [&](uint64_t link) {
        uint64_t region = (link & 15) == 8 ? region_of(link) : 0;
        return region && link + kPrev + 8 <= load(region + kRegionEnd);
    };
    if (next && (!in_heap(next) || load(next + kPrev) != header)) s1_list_corrupted(header);
    if (prev ? !in_heap(prev) || load(prev + kNext) != header : free_heads_[c] != header)
        s1_list_corrupted(header);
    if (header == rover_) rover_ = next;
    if (prev) {
        store(prev + kNext, next);
    } else {
        free_heads_[c] = next;
        if (!next) class_map_ &= ~(uint64_t{1} << c);
    }
    if (next) store(next + kPrev, prev);
}

uint64_t Twin::seg_best(uint64_t node, uint64_t asize, uint64_t limit, uint64_t skip) const {
    // [lab S1.find_fit copy begin]
    uint64_t best = 0, best_size = UINT64_MAX;
    for (; node && limit; --limit) {
        uint64_t size = load(node);
        if (node != skip && size >= asize && size < best_size) {
            best = node;
            best_size = size;
            if (size == asize) break;
        }
        uint64_t next = load(node + kNext);
        if (next & 7) s1_list_corrupted(node);  // never a header's address
        node = next;
    }
    return best;
    // [lab S1.find_fit copy end]
}

uint64_t Twin::find_fit(uint64_t asize) {
    // [lab S1.find_fit copy begin]
    uint64_t head = free_heads_[0];
    if (fit_policy == S1_FIT_NEXT) {
        uint64_t start = rover_ ? rover_ : head;
        if (!start) return 0;
        uint64_t b = start;
        do {
            if (load(b) >= asize) {
                rover_ = load(b + kNext);
                return b;
            }
            b = load(b + kNext);
            if (!b) b = head;
        } while (b != start);
        return 0;
    }
    if (fit_policy == S1_FIT_BEST) return seg_best(head, asize, UINT64_MAX, 0);
    if (fit_policy == S1_FIT_SEG) {
        uint64_t c = size_class(asize);
        uint64_t wild = wilderness();
        uint64_t found = seg_best(free_heads_[c], asize, c == kS1Classes - 1 ? UINT64_MAX : kS1SegScan, wild);
        while (!found && ++c < kS1Classes) {
            uint64_t above = class_map_ >> c << c;
            if (!above) break;
            c = __builtin_ctzll(above);
            found = seg_best(free_heads_[c], asize, kS1SegScan, wild);
        }
        if (!found && wild && load(wild) >= asize) found = wild;
        return found;
    }
    for (uint64_t b = head; b; b = load(b + kNext))
        if (load(b) >= asize) return b;
    return 0;
    // [lab S1.find_fit copy end]
}

uint64_t Twin::wilderness() const {
    if (!last_region_) return 0;
    uint64_t end = load(last_region_ + kRegionEnd);
    return (load(end - 8) & kPrevFree) ? end - 8 - load(end - 16) : 0;
}

uint64_t Twin::find_aligned(uint64_t asize, uint64_t alignment, uint64_t* payload) const {
    uint64_t mask = alignment - 1, wild = wilderness();
    auto fits = [&](uint64_t header) -> uint64_t {
        uint64_t q = header + 8;
        if (q & mask) q = (header + 8 + kS1MinBlock + mask) & ~mask;
        return q + asize - 8 - header <= load(header) ? q : 0;
    };
    for (uint64_t c = size_class(asize); c < kS1Classes; ++c) {
        uint64_t above = class_map_ >> c << c;
        if (!above) break;
        c = __builtin_ctzll(above);
        uint64_t limit = kS1SegScan;
        for (uint64_t b = free_heads_[c]; b && limit; b = load(b + kNext), --limit) {
            if (b == wild) continue;
            if ((*payload = fits(b))) return b;
        }
    }
    if (wild && (*payload = fits(wild))) return wild;
    return 0;
}

void Twin::set_fit(uint64_t policy) {
    bool was_seg = fit_policy == S1_FIT_SEG;
    fit_policy = policy;
    if (was_seg == (policy == S1_FIT_SEG)) return;
    for (uint64_t& head : free_heads_) head = 0;
    class_map_ = rover_ = free_bytes = 0;
    for (uint64_t region = first_region_; region; region = next_region(region)) {
        uint64_t end = load(region + kRegionEnd) - 8;
        for (uint64_t b = region + kFirstBlock; b < end; b += load(b) & ~kFlags)
            if (!(load(b) & kAlloc)) list_push(b);
    }
}

// ---- block.asm ----

uint64_t Twin::place(uint64_t header, uint64_t asize) {
    list_remove(header);
    uint64_t size = load(header);
    if (size >= trim_threshold) dirty_bytes -= std::min(dirty_bytes, asize);  // [S1.36]
    uint64_t rest = size - asize;
    if (rest < kS1MinBlock) {
        store(header, size | kAlloc);
        store(header + size, load(header + size) & ~kPrevFree);
        return header;
    }
    // [S1.32] used part at the back, except in a wilderness that would keep less than asize
    bool at_back = fit_policy == S1_FIT_SEG && asize >= kS1SplitBack && (rest >= asize || header != wilderness());
    if (at_back && rest < asize && (rest << kS1SliverShift) < asize) {  // [S1.44] a sliver of a hole
        store(header, size | kAlloc);
        store(header + size, load(header + size) & ~kPrevFree);
        return header;
    }
    if (at_back) {
        set_tags(header, rest);
        store(header + rest, asize | kAlloc | kPrevFree);
        store(header + size, load(header + size) & ~kPrevFree);
        list_push(header);
        return header + rest;
    }
    store(header, asize | kAlloc);
    set_tags(header + asize, rest);
    list_push(header + asize);
    return header;
}

uint64_t Twin::coalesce(uint64_t header) {
    // [lab S1.coalesce copy begin]
    uint64_t tag = load(header), size = tag & ~kFlags;
    uint64_t prev = (tag & kPrevFree) ? header - load(header - 8) : 0;
    uint64_t next = header + size;
    if (!(load(next) & kAlloc)) {
        list_remove(next);
        size += load(next);
        store(next, kS1Poison);
    }
    if (prev) {
        list_remove(prev);
        size += load(prev);
        store(header, kS1Poison);
        header = prev;
    }
    set_tags(header, size);
    store(header + size, load(header + size) | kPrevFree);
    list_push(header);
    return header;
    // [lab S1.coalesce copy end]
}

void Twin::split_tail(uint64_t header, uint64_t asize) {
    uint64_t rest = (load(header) & ~kFlags) - asize;
    if (rest < kS1MinBlock) return;
    store(header, asize | (load(header) & kFlags));
    set_tags(header + asize, rest);
    heap_trim(coalesce(header + asize));
}

// ---- malloc.asm ----

void* Twin::malloc(uint64_t size) {
    if (size > kS1MaxRequest) return status = S1_ENOMEM, nullptr;
    uint64_t asize = adjust(size);
    uint64_t block = find_fit(asize);
    if (!block) {
        // [S1.38] a block for the back: exact; a small one: the margin, a 32nd under seg [S1.42]
        uint64_t mode = asize >= kS1SplitBack ? S1_GROW_EXACT : fit_policy == S1_FIT_SEG ? S1_GROW_WIDE : S1_GROW_MARGIN;
        block = heap_grow(asize, mode);
    }
    if (!block) return nullptr;
    return reinterpret_cast<void*>(place(block, asize) + 8);
}

uint32_t Twin::validate(const void* ptr) const {
    uint64_t p = reinterpret_cast<uint64_t>(ptr);
    if (p & 15) return S1_MISALIGNED;
    bool damaged;
    uint64_t region = region_of(p, &damaged);
    if (damaged) return S1_HEAP_DAMAGED;
    if (!region) return S1_FOREIGN;
    if (p < region + kFirstBlock + 8) return S1_NOT_A_BLOCK;
    uint64_t end = load(region + kRegionEnd);
    uint64_t header = load(p - 8);
    if (header == kS1Poison) return S1_DOUBLE_FREE;
    uint64_t size = header & ~kFlags;
    if (size < kS1MinBlock || size > end - p) return S1_NOT_A_BLOCK;
    uint64_t flags = header & kFlags;
    if (flags == 0) return load(p + size - 16) == header ? S1_DOUBLE_FREE : S1_NOT_A_BLOCK;
    if ((flags & ~kPrevFree) != kAlloc) return S1_NOT_A_BLOCK;
    uint64_t next = p - 8 + size, tag = load(next), epilogue = end - 8;
    if (next == epilogue) return (tag & kFlags) == kEpilogueTag ? S1_OK : S1_NOT_A_BLOCK;
    if (tag & kFlags & ~kAlloc) return S1_NOT_A_BLOCK;
    uint64_t next_size = tag & ~kFlags;
    return next_size >= kS1MinBlock && next_size <= epilogue - next ? S1_OK : S1_NOT_A_BLOCK;
}

uint32_t Twin::free(void* ptr) {
    if (!ptr) return S1_OK;
    uint32_t s = validate(ptr);
    if (s != S1_OK) return s;
    free_block(reinterpret_cast<uint64_t>(ptr) - 8);
    return S1_OK;
}

void Twin::free_block(uint64_t header) {
    uint64_t size = load(header) & ~kFlags;
    store(header, load(header) & ~kAlloc);
    if (!trim_fixed && size >= kTrimFollowMin && size <= kTrimFollowMax)   // [S1.43]
        trim_followed = std::max(trim_followed, 2 * size);
    uint64_t run = coalesce(header);
    release(run, size);
    heap_trim(run);
}

uint64_t Twin::usable_size(const void* ptr) {
    if (!ptr) return 0;
    uint32_t s = validate(ptr);
    if (s != S1_OK) return status = s, 0;
    return (load(reinterpret_cast<uint64_t>(ptr) - 8) & ~kFlags) - kS1Overhead;
}

void* Twin::realloc(void* ptr, uint64_t size) {
    // [lab S1.realloc copy begin]
    if (!ptr) return malloc(size);
    uint32_t s = validate(ptr);
    if (s != S1_OK) return status = s, nullptr;
    if (size > kS1MaxRequest) return status = S1_ENOMEM, nullptr;
    uint64_t asize = adjust(size);
    uint64_t header = reinterpret_cast<uint64_t>(ptr) - 8;
    uint64_t current = load(header) & ~kFlags;
    if (asize <= current) {
        split_tail(header, asize);
        return ptr;
    }
    uint64_t next = header + current, tag = load(next);
    uint64_t end = 0;  // the epilogue this block could grow against
    bool forward = false;
    if (tag & kAlloc) {
        end = next;  // used, or the epilogue: compared with the break's epilogue below
    } else if (current + tag >= asize) {
        forward = true;
    } else {
        end = next + tag;
    }
    if (end && end == load(last_region_ + kRegionEnd) - 8 && heap_grow(asize - current, S1_GROW_MARGIN)) forward = true;
    if (forward) {
        tag = load(next);
        if (!(tag & kAlloc) && current + tag >= asize) {
            list_remove(next);
            store(next, kS1Poison);
            return fit(header, current + tag, asize);
        }
    }
    if (load(header) & kPrevFree) {
        uint64_t prev_footer = load(header - 8);
        uint64_t run = prev_footer + current;
        if (!(load(next) & kAlloc)) run += load(next);
        if (run >= asize) {
            uint64_t prev = header - prev_footer;
            list_remove(prev);
            if (!(load(next) & kAlloc)) {
                list_remove(next);
                store(next, kS1Poison);
            }
            std::memmove(reinterpret_cast<void*>(prev + 8), ptr, current - kS1Overhead);
            return fit(prev, run, asize);
        }
    }
    void* moved = malloc(asize - kS1Overhead);
    if (!moved) return nullptr;
    std::memcpy(moved, ptr, current - kS1Overhead);
    free_block(header);
    return moved;
    // [lab S1.realloc copy end]
}

void* Twin::fit(uint64_t header, uint64_t run, uint64_t asize) {
    // [lab S1.realloc copy begin]
    uint64_t used = asize, prev_free = load(header) & kPrevFree;
    if (run - used < kS1MinBlock) {
        store(header, run | kAlloc | prev_free);
        store(header + run, load(header + run) & ~kPrevFree);
    } else {
        store(header, used | kAlloc | prev_free);
        set_tags(header + used, run - used);
        store(header + run, load(header + run) | kPrevFree);
        list_push(header + used);
    }
    return reinterpret_cast<void*>(header + 8);
    // [lab S1.realloc copy end]
}

void* Twin::memalign(uint64_t alignment, uint64_t size) {
    if (alignment <= kS1Align) return malloc(size);
    if (size > kS1MaxRequest) return status = S1_ENOMEM, nullptr;
    uint64_t asize = adjust(size);
    uint64_t q = 0, hole = fit_policy == S1_FIT_SEG ? find_aligned(asize, alignment, &q) : 0;
    if (hole) {
        list_remove(hole);
        uint64_t end = hole + load(hole);
        store(end, load(end) & ~kPrevFree);
        store(q - 8, (end - (q - 8)) | kAlloc);
        if (q - 8 != hole) {
            store(q - 8, load(q - 8) | kPrevFree);
            set_tags(hole, q - 8 - hole);
            list_push(hole);
        }
        split_tail(q - 8, asize);
        return reinterpret_cast<void*>(q);
    }
    void* raw = malloc(asize + alignment + kS1MinBlock - kS1Overhead);
    if (!raw) return nullptr;
    uint64_t p = reinterpret_cast<uint64_t>(raw);
    q = p;
    if (p & (alignment - 1)) {
        q = (p + kS1MinBlock + alignment - 1) & ~(alignment - 1);
        uint64_t header = p - 8;
        uint64_t prev_free = load(header) & kPrevFree, total = load(header) & ~kFlags;
        uint64_t lead = q - p;
        store(q - 8, (total - lead) | kAlloc | kPrevFree);
        store(header, lead | prev_free);
        coalesce(header);
    }
    split_tail(q - 8, asize);
    return reinterpret_cast<void*>(q);
}

// ---- check.asm ----

uint64_t Twin::check(S1Report* r) const {
    *r = S1Report{};
    auto fail = [&](uint64_t code, uint64_t address) {
        r->code = code;
        r->address = address;
        return code;
    };
    uint64_t previous_end = 0;
    for (uint64_t region = first_region_; region; region = next_region(region)) {
        ++r->regions;
        if (region < previous_end || (region & 15) || region >= heap_top_) return fail(S1_CHECK_REGION_ORDER, region);
        uint64_t end = load(region + kRegionEnd);
        if ((end & 15) || end < region + kFirstBlock + kS1MinBlock + 8 || end > heap_top_)
            return fail(S1_CHECK_REGION_END, region);
        r->heap_bytes += end - region;
        bool previous_free = false;
        uint64_t b = region + kFirstBlock;
        for (; b < end - 8;) {
            uint64_t header = load(b), size = header & ~kFlags;
            if (size < kS1MinBlock) return fail(S1_CHECK_BLOCK_SIZE, b);
            if (size > end - 8 - b) return fail(S1_CHECK_PAST_END, b);
            uint64_t flags = header & kFlags;
            if (flags == 0) {
                if (load(b + size - 8) != header) return fail(S1_CHECK_FOOTER, b);
                if (previous_free) return fail(S1_CHECK_ADJACENT_FREE, b);
                ++r->free_blocks;
                r->free_bytes += size;
                previous_free = true;
            } else if ((flags & ~kPrevFree) == kAlloc && ((flags & kPrevFree) != 0) == previous_free) {
                ++r->used_blocks;
                r->used_bytes += size - kS1Overhead;
                previous_free = false;
            } else {
                return fail(S1_CHECK_FLAGS, b);
            }
            b += size;
        }
        if ((load(end - 8) & kFlags) != (kEpilogueTag | (previous_free ? kPrevFree : 0))) return fail(S1_CHECK_EPILOGUE, end - 8);
        previous_end = end;
    }
    uint64_t seen = 0;
    for (uint64_t c = 0; c < kS1Classes; ++c) {
        if (((class_map_ >> c) & 1) != (free_heads_[c] != 0)) return fail(S1_CHECK_LIST_CLASS, 0);
        uint64_t previous = 0;
        for (uint64_t node = free_heads_[c]; node; previous = node, node = load(node + kNext)) {
            if (++seen > r->free_blocks) return fail(S1_CHECK_LIST_COUNT, node);
            if (!region_of(node) || (node & 15) != 8 || (load(node) & kFlags))
                return fail(S1_CHECK_LIST_FOREIGN, node);
            if (load(node + kPrev) != previous) return fail(S1_CHECK_LIST_LINK, node);
            if (size_class(load(node)) != c) return fail(S1_CHECK_LIST_CLASS, node);
        }
    }
    if (seen != r->free_blocks) return fail(S1_CHECK_LIST_COUNT, 0);
    return S1_CHECK_OK;
}

void Twin::walk(const std::function<bool(uint64_t, uint64_t, uint64_t)>& visit) const {
    for (uint64_t region = first_region_; region; region = next_region(region)) {
        uint64_t end = load(region + kRegionEnd);
        if (!visit(S1_KIND_REGION, region, end - region)) return;
        for (uint64_t b = region + kFirstBlock; b < end - 8;) {
            uint64_t header = load(b), size = header & ~kFlags;
            if (size < kS1MinBlock) return;
            if (!visit((header & kAlloc) ? S1_KIND_USED : S1_KIND_FREE, b, size)) return;
            b += size;
        }
        if (!visit(S1_KIND_FENCE, end - 8, 8)) return;
    }
}

}  // namespace edu::stage1
