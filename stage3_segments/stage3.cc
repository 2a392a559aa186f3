// stage3_segments/stage3.cc: the contract adapter: the Api tables of the four modes, the
// calls built on the fast paths (calloc, realloc, aligned_alloc, usable_size), options, the
// first-class heap API of heaps.h, and `descriptor`, registered at static initialisation.
#include "stage3_segments/stage3.h"

#include <cstring>

#include "contract/diagnostics.h"
#include "contract/locked.h"
#include "contract/mapped.h"
#include "stage3_segments/alloc.h"
#include "stage3_segments/bins.h"
#include "stage3_segments/check.h"
#include "stage3_segments/drop_in.h"
#include "stage3_segments/free.h"
#include "stage3_segments/heaps.h"
#include "stage3_segments/os.h"

namespace edu::stage3 {
namespace {

// ---- The single-thread entry, one instantiation per mode -----------------------------------

template <class M>
void* api_malloc(std::size_t size) {
    return heap_alloc<M>(&g_default_heap, size, size);
}

template <class M>
void api_free(void* p) {
    heap_free<M>(p);
}

template <class M>
void* heap_calloc_in(Heap* heap, std::size_t count, std::size_t size) {
    std::size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) return enomem();
    void* p = heap_alloc<M>(heap, bytes, bytes);
    if (p) os_zero(p, bytes);   // recycled blocks hold old bytes
    return p;
}

template <class M>
void* api_calloc(std::size_t count, std::size_t size) {
    return heap_calloc_in<M>(&g_default_heap, count, size);
}

// realloc of a block in a mapping of its own ([S3.39] [S3.63]), of `mapped` usable bytes.
template <class M>
[[gnu::noinline]] void* realloc_mapped(void* p, std::size_t mapped, std::size_t size) {
    if (size > kMediumMax && size <= kMaxRequest) {   // [S3.64] a large size stays mapped
        if (void* q = resize_mapped(p, mapped, size)) return q;
    }
    void* q = heap_alloc<M>(&g_default_heap, size, size);   // it moves into the heap
    if (!q) return nullptr;   // ENOMEM; p is untouched
    std::memcpy(q, p, size < mapped ? size : mapped);
    free_mapped(p);
    if constexpr (M::stats) count_move();
    return q;
}

// [S3.32] realloc stays in place when the new size still fits the block and uses at least
// half of it (the rule mimalloc uses), or when a large block can grow or shrink within its
// segment; otherwise it moves the block, within the heap that owns it. Either way it is one
// resize for the statistics (the contract counts no malloc and no free for it). [S3.64] A
// block in a mapping of its own resized to a large size keeps its mapping, resized by
// mremap (contract/mapped.h's mapped_resize: no copy, pages moved whole if need be); a small
// size, or a refused mremap, moves it into the heap. [S3.67] A large or huge block's guards are
// checked first, whatever follows: realloc names a damaged one, not the free inside a move.
template <class M>
void* api_realloc(void* p, std::size_t size) {
    if (!p) return heap_alloc<M>(&g_default_heap, size, size);
    Page* page = live_block_page<M>(p);   // [S3.93]
    if (!page) [[unlikely]] {
        if (std::size_t mapped = mapped_block_size(kStageNumber, p)) return realloc_mapped<M>(p, mapped, size);
        page = validate_block(p, "realloc");
    }
    Layout::realloc_guards_check(page);   // [S3.67] before it stays, is resized or moves
    std::size_t usable = page->block_size;
    if (size <= usable && size >= usable / 2) {
        if constexpr (M::stats) count_resize(usable, usable, size);
        return p;
    }
    if (size <= kMaxRequest && size > kMediumMax && one_block_resize(page, size)) {
        if constexpr (M::stats) count_resize(usable, page->block_size, size);
        return p;
    }
    std::size_t target = realloc_target(usable, size);   // [S3.88]
    void* q = heap_alloc<M>(page->heap, target, size);
    if (!q && target != size) q = heap_alloc<M>(page->heap, size, size);
    if (!q) return nullptr;   // ENOMEM; p is untouched
    std::memcpy(q, p, size < usable ? size : usable);
    heap_free<M>(p);
    if constexpr (M::stats) count_move();
    return q;
}

template <class M>
void* heap_aligned_in(Heap* heap, std::size_t alignment, std::size_t size) {
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > kMaxAlignment) return enomem();
    if (alignment <= kAlignment) return heap_alloc<M>(heap, size, size);
    if (size > kMaxRequest) return enomem();
    unsigned bin = aligned_bin(alignment, size);
    if (bin < kBinCount) return heap_alloc<M>(heap, bin_size(bin), size, alignment);
    return malloc_one_block(heap, size, alignment, size);
}

// [S3.39] An alignment above kMaxAlignment (2 MiB: a segment starts with its header, and a
// pointer is masked down to its segment, so no block can start at a larger multiple) gets a
// mapping of its own (contract/mapped.h), outside every segment; free_generic, realloc and
// usable_size ask for it before they judge a pointer; it is counted as the heap's ([S3.56]).
// First-class heaps (heaps.h) keep the
// 2 MiB limit: a heap's blocks live in its segments, which heap_destroy gives back.
template <class M>
void* api_aligned_alloc(std::size_t alignment, std::size_t size) {
    if (alignment > kMaxAlignment && alignment <= kMappedMaxAlignment && (alignment & (alignment - 1)) == 0)
        return alloc_mapped(alignment, size);
    return heap_aligned_in<M>(&g_default_heap, alignment, size);
}

// A block that live_block_page does not vouch for ([S3.93]): a mapped one, or whatever
// validate_block says p is.
[[gnu::noinline]] std::size_t usable_size_generic(const void* p) {
    if (!p) return 0;
    if (std::size_t mapped = mapped_block_size(kStageNumber, p)) return mapped;
    return validate_block(p, "usable_size")->block_size;
}

template <class M>
std::size_t api_usable_size(const void* p) {
    if (Page* page = live_block_page<M>(p)) [[likely]] return page->block_size;
    return usable_size_generic(p);
}

CheckResult api_check() { return check_heap(); }
void api_walk(WalkFn visit, void* context) { walk_heap(visit, context); }
Stats api_stats() { return stats_snapshot(); }

template <class M>
constexpr Api kApiOf = {&api_malloc<M>,        &api_free<M>,     &api_calloc<M>,
                        &api_realloc<M>,       &api_aligned_alloc<M>, &api_usable_size<M>,
                        &api_check,            &api_walk,        &api_stats};

// [S3.31] Modes. Each option value picks one of four tables, each built from its own copy of
// the fast paths; descriptor.single_thread points at this one table, which set_option
// rewrites. The default counts statistics (the battery checks them); "stats=off" is the mode
// to compare with a release build of mimalloc, which keeps no statistics either.
constexpr Api kTables[2][2] = {
    {kApiOf<Mode<false, false>>, kApiOf<Mode<false, true>>},
    {kApiOf<Mode<true, false>>, kApiOf<Mode<true, true>>},
};
Api g_single_thread = kTables[0][1];

using Lock = Locked<g_single_thread>;

// [S3.50] The thread-safe entry, one table per mode too. Each one's unlocked path (one thread)
// runs its own mode's fast path, called directly and inlined; its locked path takes the mutex
// and calls through g_single_thread, read under it. A single table calling through
// g_single_thread would cost every call of the drop-in library a load and an indirect jump.
// descriptor.thread_safe points at g_thread_safe, which select_table rewrites only while the
// process has one thread (no call can be running through it then). Once a second thread
// exists it may keep naming an old mode, harmlessly: its unlocked path can no longer run, and
// its locked path reads the current mode under the mutex. A fork child has one thread again,
// so after_fork_child brings the table up to date. The drop-in library's copies of it
// (contract/preload.cc's slots) follow only set_option, so in the child of a threaded process
// they may still name the mode before a change; harmless, because their unlocked path cannot
// run there either: glibc never sets __libc_single_threaded back to true (fork does not touch
// it, and pthread_create runs its one-time thread setup only while the flag is true, so the
// clearing is for good). A libc that set it true in the child would have a stale copy run the
// old mode's fast path on the new mode's lists; secure_test's fork case checks both halves.
template <class M>
constexpr const Api& kLockedOf = Lock::Direct<kApiOf<M>>::api;
// The drop-in library's usual mode: the same entry, with DropIn's malloc and free (drop_in.h).
constexpr Api kLockedDropIn = [] {
    Api api = kLockedOf<Mode<false, false>>;
    api.malloc = &DropIn::malloc;
    api.free = &DropIn::free;
    return api;
}();
constexpr const Api* kLockedTables[2][2] = {
    {&kLockedDropIn, &kLockedOf<Mode<false, true>>},
    {&kLockedOf<Mode<true, false>>, &kLockedOf<Mode<true, true>>},
};
Api g_thread_safe = *kLockedTables[0][1];

void select_table() {
    g_single_thread = kTables[secure_mode()][g_counting];
    if (__libc_single_threaded) g_thread_safe = *kLockedTables[secure_mode()][g_counting];
}

void after_fork_child() {
    Lock::after_fork_child();
    g_thread_safe = *kLockedTables[secure_mode()][g_counting];   // no call runs through it
}

// ---- Options --------------------------------------------------------------------------------

constexpr OptionInfo kOptions[] = {
    {"secure", "off|on", "encode free lists with per-page keys and check every link popped (default off)"},
    {"stats", "on|off", "count requests on the fast paths (default on; off is the benchmark mode)"},
};

bool parse_switch(const char* value, bool* on) {
    if (std::strcmp(value, "on") == 0) return *on = true, true;
    if (std::strcmp(value, "off") == 0) return *on = false, true;
    return false;
}

// [S3.37] Options change under the thread-safe entry's lock: re-keying rewrites every list and
// every page's keys, and the table the locked entry calls through changes with the mode, so a
// thread inside a locked call while another switched the mode would read half-rewritten lists.
bool set_option(const char* name, const char* value) {
    Lock::Guard guard;
    bool on;
    if (std::strcmp(name, "secure") == 0) {
        if (!parse_switch(value, &on)) return false;
        if (on != secure_mode()) rekey_all_pages(on);
        select_table();
        return true;
    }
    if (std::strcmp(name, "stats") == 0) {
        if (!parse_switch(value, &on)) return false;
        set_counting(on);
        select_table();
        return true;
    }
    return false;
}

const char* get_option(const char* name) {
    if (std::strcmp(name, "secure") == 0) return secure_mode() ? "on" : "off";
    if (std::strcmp(name, "stats") == 0) return g_counting ? "on" : "off";
    return nullptr;
}

// heaps.h calls run in whichever mode is current.
template <template <class> class Call, class... Args>
auto in_mode(Args... args) {
    if (secure_mode()) {
        if (g_counting) return Call<Mode<true, true>>::run(args...);
        return Call<Mode<true, false>>::run(args...);
    }
    if (g_counting) return Call<Mode<false, true>>::run(args...);
    return Call<Mode<false, false>>::run(args...);
}

template <class M>
struct MallocCall {
    static void* run(Heap* heap, std::size_t size) { return heap_alloc<M>(heap, size, size); }
};
template <class M>
struct AlignedCall {
    static void* run(Heap* heap, std::size_t alignment, std::size_t size) {
        return heap_aligned_in<M>(heap, alignment, size);
    }
};
template <class M>
struct CallocCall {
    static void* run(Heap* heap, std::size_t count, std::size_t size) {
        return heap_calloc_in<M>(heap, count, size);
    }
};

}  // namespace

// ---- drop_in.h: the locked half of DropIn, as contract/locked.h's Direct calls it, its gate -

void* drop_in_malloc_locked(std::size_t size) { return Lock::call_locked<&Api::malloc>(size); }
void drop_in_free_locked(void* p) { Lock::call_locked<&Api::free>(p); }
const char* g_gate = &kClosed;

// ---- heaps.h --------------------------------------------------------------------------------

Heap* heap_create() { return heap_new(); }
void* heap_malloc(Heap* heap, std::size_t size) { return in_mode<MallocCall>(heap, size); }
void* heap_aligned_alloc(Heap* heap, std::size_t alignment, std::size_t size) {
    return in_mode<AlignedCall>(heap, alignment, size);
}
void* heap_calloc(Heap* heap, std::size_t count, std::size_t size) {
    return in_mode<CallocCall>(heap, count, size);
}
void heap_destroy(Heap* heap) {
    if (heap == &g_default_heap) die(kStageName, "heap_destroy", heap, "the default heap cannot be destroyed");
    heap_delete(heap);
}
Heap* default_heap() { return &g_default_heap; }
void collect(bool force) {
    for (Heap* heap = first_heap(); heap; heap = heap->next) heap_collect(heap, force);
}

// ---- The descriptor -------------------------------------------------------------------------

const Stage descriptor = {
    kStageName,
    kStageNumber,
    "mimalloc-style segments, pages and sharded free lists, one thread",
    ThreadSafety::locked,
    true,
    kMappedMaxAlignment,
    &g_single_thread,
    &g_thread_safe,
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    &set_option,
    &get_option,
    &Lock::prepare_fork,
    &Lock::after_fork_parent,
    &after_fork_child,
};

namespace {
const bool g_registered = (register_stage(descriptor), true);
}  // namespace

}  // namespace edu::stage3
