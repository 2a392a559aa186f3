// stage1_brk/twin.h: a C++ reference model of the assembly core, procedure for procedure.
// [S1.23] The twin exists to be compared: twin_test.cc drives it and the NASM core with the
// same random operations over two simulated breaks and requires the same results, statuses and
// heap walks. Read it next to the .asm files when an instruction sequence is hard to follow.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "stage1_brk/core.h"

namespace edu::stage1 {

class Twin {
public:
    // `sbrk` has sbrk's contract: the old break, or -1 cast to a pointer on failure.
    explicit Twin(std::function<void*(intptr_t)> sbrk) : sbrk_(std::move(sbrk)) {}

    void* malloc(uint64_t size);
    uint32_t free(void* ptr);
    void* realloc(void* ptr, uint64_t size);
    void* memalign(uint64_t alignment, uint64_t size);
    uint64_t usable_size(const void* ptr);
    uint32_t validate(const void* ptr) const;
    uint64_t check(S1Report* report) const;
    // Calls visit(kind, header address, size) like s1_walk; return false to stop.
    void walk(const std::function<bool(uint64_t, uint64_t, uint64_t)>& visit) const;

    void set_fit(uint64_t policy);
    uint64_t size_class(uint64_t size) const;

    // Tunables and counters, named as in heap.asm.
    uint64_t fit_policy = S1_FIT_SEG;
    uint64_t grow_margin = 1024 * 1024;
    uint64_t trim_threshold = 128 * 1024;
    uint64_t trim_fixed = 0, trim_followed = 0;  // [S1.43] s1_trim_fixed, s1_trim_followed
    uint64_t purge_floor = 4 * 1024 * 1024;
    uint32_t status = S1_OK;
    uint64_t brk_calls = 0, footprint = 0, peak_footprint = 0, madvise_calls = 0;
    uint64_t free_bytes = 0, dirty_bytes = 0;  // s1_free_bytes, s1_dirty_bytes

private:
    // Word access into simulated memory.
    static uint64_t load(uint64_t address);
    static void store(uint64_t address, uint64_t value);
    static void set_tags(uint64_t header, uint64_t tag);
    static uint64_t next_region(uint64_t region);  // 0 after the highest

    uint64_t sbrk(int64_t increment);  // counts like s1_sbrk; returns UINT64_MAX on failure
    uint64_t region_of(uint64_t address, bool* damaged = nullptr) const;  // *damaged: [S1.40]
    uint64_t margin(uint64_t shift) const;  // footprint >> shift, bounded [S1.31]
    uint64_t heap_grow(uint64_t asize, uint64_t mode);  // mode: S1Grow, as s1_heap_grow's rsi
    uint64_t heap_grow_once(uint64_t asize, uint64_t mode);  // one attempt; the block may fall short
    uint64_t fresh_range(uint64_t base, uint64_t length);
    void heap_trim(uint64_t header);
    void release(uint64_t header, uint64_t freed);
    void purge();
    void release_pages(uint64_t header);
    void list_push(uint64_t header);
    void list_remove(uint64_t header);
    uint64_t find_fit(uint64_t asize);
    uint64_t wilderness() const;
    uint64_t find_aligned(uint64_t asize, uint64_t alignment, uint64_t* payload) const;
    uint64_t seg_best(uint64_t node, uint64_t asize, uint64_t limit, uint64_t skip) const;
    uint64_t place(uint64_t header, uint64_t asize);  // the used block's header
    uint64_t coalesce(uint64_t header);
    void split_tail(uint64_t header, uint64_t asize);
    void free_block(uint64_t header);
    void* fit(uint64_t header, uint64_t run, uint64_t asize);  // s1_realloc's .fit

    std::function<void*(intptr_t)> sbrk_;
    uint64_t first_region_ = 0, last_region_ = 0, heap_top_ = 0;  // heap_top_: s1_heap_top
    uint64_t free_heads_[kS1Classes] = {}, class_map_ = 0, rover_ = 0;
};

}  // namespace edu::stage1
