// stage4_threads/stage4.cc: the contract adapter: the Api tables of the two modes, the calls
// built on the fast paths (calloc, realloc, aligned_alloc, usable_size), the option, and
// `descriptor`, registered at static initialisation. Every call works on the caller's heap.
#include "stage4_threads/stage4.h"

#include <cstring>

#include "contract/diagnostics.h"
#include "contract/mapped.h"
#include "stage3_segments/bins.h"
#include "stage4_threads/alloc.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/check.h"
#include "stage4_threads/drop_in.h"
#include "stage4_threads/free.h"
#include "stage4_threads/os.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/segment.h"

namespace edu::stage4 {
namespace {

template <class M>
void* api_malloc(std::size_t size) {
    return heap_alloc<M>(t_heap, size, size);
}

template <class M>
void api_free(void* p) {
    heap_free<M>(p);
}

template <class M>
void* api_calloc(std::size_t count, std::size_t size) {
    std::size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) return enomem();
    void* p = heap_alloc<M>(t_heap, bytes, bytes);
    if (p) os_zero(p, bytes);   // recycled blocks hold old bytes
    return p;
}

// The usable size of `p` if it is a block of contract/mapped.h, else 0. Only a pointer where no
// segment of ours starts can be one (as free_generic asks, S4.51): outside the arena, or in a
// slot that a lazy arena has left unmapped ([S4.68]: the kernel places new mappings there once
// a switched arena gave its range back). Any other skips mapped.h's global lock, which another
// thread's block would take while mapped blocks live ([S4.66] maps many).
std::size_t mapped_size(const void* p) {
    return arena_blocks_at(arena_slot_of(p)) == 0 ? mapped_block_size(kStageNumber, p) : 0;
}

// A block of contract/mapped.h (alignment above kMaxAlignment, [S4.51]; a large block under a
// limit, [S4.66]). [S4.70] Resized to a large size, it keeps its mapping, resized by mremap
// (mapped_resize: no copy, its pages moved whole if need be), as stage 3's (S3.64); otherwise,
// or when the kernel refuses, it moves into the heap: realloc need not keep an alignment, and
// the heap serves every size.
template <class M>
void* realloc_mapped(void* p, std::size_t usable, std::size_t size) {
    if (size > kMediumMax && size <= kMaxRequest) {
        if (void* q = resize_mapped(p, usable, size)) return q;
    }
    void* q = heap_alloc<M>(t_heap, size, size);
    if (!q) return nullptr;   // ENOMEM; p is untouched
    std::memcpy(q, p, size < usable ? size : usable);
    free_mapped(p);
    if constexpr (M::stats) count_move(t_heap);   // one resize, not a malloc and a free
    return q;
}

// [S4.37] realloc as in stage 3 (S3.32), with two differences: a large block grows or shrinks
// in place only on its owner's thread (its segment's commitment is the owner's to change), and
// a block that moves moves into the caller's heap, not its old owner's: the caller is the one
// thread that may touch the new block, and only its own heap can serve it without a lock.
// A large or huge block's guards are checked first, as stage 3 does, by any thread: its owner
// would only see them when it collects the free inside a move, and name that free.
template <class M>
void* api_realloc(void* p, std::size_t size) {
    if (past_exit_hook(t_heap)) [[unlikely]]   // [S4.92]
        return with_borrowed_heap([=] { return api_realloc<M>(p, size); });
    if (!p) return heap_alloc<M>(t_heap, size, size);
    Found found{own_live_block(p), true};   // the caller's own live block: checked (S4.58)
    if (!found.page) {
        if (std::size_t mapped = mapped_size(p)) return realloc_mapped<M>(p, mapped, size);
        found = find_block(p, "realloc");
    }
    Layout::realloc_guards_check(found.page);   // [S4.71] S3.67's: before it stays, is resized or moves
    std::size_t usable = found.page->block_size;
    bool in_place = size <= usable && size >= usable / 2;
    if (!in_place && found.local && size <= kMaxRequest && size > kMediumMax) in_place = one_block_resize(found.page, size);
    if (in_place) {
        if constexpr (M::stats) {
            count_resize_by(heap_for_caller(t_heap), usable, found.page->block_size, size);
        }
        return p;
    }
    std::size_t target = stage3::realloc_target(usable, size);   // [S4.94] S3.88's headroom
    void* q = heap_alloc<M>(t_heap, target, size);
    if (!q && target != size) q = heap_alloc<M>(t_heap, size, size);
    if (!q) return nullptr;   // ENOMEM; p is untouched
    std::memcpy(q, p, size < usable ? size : usable);
    heap_free<M>(p);
    if constexpr (M::stats) count_move(t_heap);   // one resize, not a malloc and a free
    return q;
}

// Aligned requests without interior pointers, as stage 3 (S3.33): a class whose blocks are all
// aligned, or a one-block page at an aligned offset. [S4.51] An alignment above kMaxAlignment
// (2 MiB: a 4 MiB segment starts with its header, and segment_of masks a pointer down to it,
// so no block can start at a larger multiple) gets a mapping of its own (contract/mapped.h),
// outside the arena: free_generic, realloc and usable_size ask for it before find_block.
template <class M>
void* api_aligned_alloc(std::size_t alignment, std::size_t size) {
    if (past_exit_hook(t_heap)) [[unlikely]]   // [S4.92]
        return with_borrowed_heap([=] { return api_aligned_alloc<M>(alignment, size); });
    if (alignment > kMaxAlignment && alignment <= kMappedMaxAlignment && (alignment & (alignment - 1)) == 0)
        return alloc_mapped(alignment, size);   // counted as the heap's own ([S4.62])
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > kMaxAlignment) return enomem();
    if (alignment <= kAlignment) return heap_alloc<M>(t_heap, size, size);
    if (size > kMaxRequest) return enomem();
    unsigned bin = stage3::aligned_bin(alignment, size);
    if (bin < kBinCount) return heap_alloc<M>(t_heap, stage3::bin_size(bin), size, alignment);
    return malloc_one_block(t_heap, size, alignment, size);
}

std::size_t api_usable_size(const void* p) {
    if (!p) return 0;
    if (Page* own = own_live_block(p)) return own->block_size;   // checked (S4.58)
    if (std::size_t mapped = mapped_size(p)) return mapped;
    return find_block(p, "usable_size").page->block_size;
}
CheckResult api_check() { return check_heap(); }
void api_walk(WalkFn visit, void* context) { walk_heap(visit, context); }
Stats api_stats() { return stats_snapshot(); }

// The mode the drop-in library runs in holds DropIn's functions (drop_in.h, S4.64): the same
// fast paths, under the names the preload compares with.
template <class M>
constexpr bool kDropInMode = !M::stats && !M::secure;
template <class M>
constexpr Api kApiOf = {kDropInMode<M> ? &DropIn::malloc : &api_malloc<M>,
                        kDropInMode<M> ? &DropIn::free : &api_free<M>,
                        &api_calloc<M>,
                        &api_realloc<M>,
                        &api_aligned_alloc<M>,
                        &api_usable_size,
                        &api_check,
                        &api_walk,
                        &api_stats};

// [S4.38] One table per mode, as stage 3 (S3.31), minus the lock: descriptor.single_thread and
// descriptor.thread_safe are the same table, because the fast paths are already safe for any
// number of threads. set_option rewrites it; the contract has options change between
// workloads, never while another thread is inside the stage.
// Indexed [secure][stats] ([S4.56]).
constexpr Api kTables[2][2] = {
    {kApiOf<Mode<false, false>>, kApiOf<Mode<true, false>>},
    {kApiOf<Mode<false, true>>, kApiOf<Mode<true, true>>},
};
Api g_api = kTables[0][1];

constexpr OptionInfo kOptions[] = {
    {"secure", "off|on", "encode free lists with per-page keys and check every link popped (default off)"},
    {"stats", "on|off", "count requests on the fast paths (default on; off is the benchmark mode)"},
};

bool set_option(const char* name, const char* value) {
    bool on = std::strcmp(value, "on") == 0;
    if (!on && std::strcmp(value, "off") != 0) return false;
    if (std::strcmp(name, "stats") == 0) set_counting(on);
    else if (std::strcmp(name, "secure") != 0) return false;
    else if (on != secure_mode() && !secure_switch(on)) return false;   // another thread's heap is in use
    g_api = kTables[secure_mode() ? 1 : 0][counting() ? 1 : 0];
    return true;
}

const char* get_option(const char* name) {
    if (std::strcmp(name, "secure") == 0) return secure_mode() ? "on" : "off";
    if (std::strcmp(name, "stats") == 0) return counting() ? "on" : "off";
    return nullptr;
}

// [S4.68] The program lowered its own address-space limit: a reserved arena goes lazy now, and
// the caller's own segments are trimmed, so that the mapping the program makes next (a
// thread's stack) finds the room they held.
void limit_set() {
    if (arena_limited() && t_heap != &g_empty_heap) segment_trim_held(t_heap);
}

}  // namespace

// drop_in.h's gate (S4.64): closed (zero bounds) until contract/preload.cc opens it.
Gate g_gate = {0, 0};

const Stage descriptor = {
    kStageName,
    kStageNumber,
    "mimalloc-style heaps, one per thread: remote frees with one CAS, abandoned segments reclaimed",
    ThreadSafety::concurrent,
    true,
    kMappedMaxAlignment,
    &g_api,
    &g_api,
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    &set_option,
    &get_option,
    &prepare_fork,
    &after_fork_parent,
    &after_fork_child,
    &limit_set,
};

namespace {
const bool g_registered = (register_stage(descriptor), true);
}  // namespace

}  // namespace edu::stage4
