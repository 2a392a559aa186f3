// stage2_pools/stage2.cc: the contract adapter: routes each call to pools, the raw domain or
// the debug layer, counts it, and registers `descriptor` at static initialisation.
// Entry points: the Api tables, options, fork hooks, and pool_malloc_cold (pool.h's cold path,
// here because it routes a small block to stage 1 when no pool can be had, [S2.31]).
// The work itself: pool.h, raw.h, debug.h.
#include "stage2_pools/stage2.h"

#include <cerrno>
#include <cstring>

#include "contract/diagnostics.h"
#include "contract/locked.h"
#include "stage1_brk/core.h"
#include "stage1_brk/stage1.h"
#include "stage2_pools/arena.h"
#include "stage2_pools/check.h"
#include "stage2_pools/debug.h"
#include "stage2_pools/os.h"
#include "stage2_pools/pool.h"
#include "stage2_pools/radix.h"
#include "stage2_pools/raw.h"
#include "stage2_pools/stats.h"

namespace edu::stage2 {
namespace {

// 64 MiB, stage 1's limit: above 64 bytes every aligned block is stage 1's (the battery asks
// for every power of two up to this one, so a stage 1 that served less would fail it).
constexpr std::size_t kMaxAlignment = kS1MaxAlignment;

// A block from stage 1, entered in the raw table; `usable` gets its size. Callers count it.
void* raw_malloc(std::size_t n, std::size_t alignment, std::size_t* usable) {
    void* block = raw_alloc(n, alignment);
    if (!block) return nullptr;  // errno = ENOMEM from stage 1
    uintptr_t address = reinterpret_cast<uintptr_t>(block);
    *usable = raw_block_usable(block);
    if (!raw_track(address, address, *usable)) {
        raw_release(block);
        return enomem();
    }
    return block;
}

// A counted allocation from stage 1: what malloc and aligned_alloc hand out.
void* raw_malloc_counted(std::size_t n, std::size_t alignment) {
    std::size_t usable;
    void* block = raw_malloc(n, alignment, &usable);
    if (block) note_alloc(usable, n);
    return block;
}

}  // namespace

// [S2.31] The ring of class c is empty and no pool can be had, neither from an arena (the
// address space or data limit is used up, or the map count) nor from stage 1 as a whole pool
// ([S2.35]: no aligned room for one): the block comes from stage 1 instead, as pymalloc falls
// back to its raw malloc. Stage 1's heap may well hold the room, freed by large blocks; without
// this fallback, malloc(1) would say ENOMEM over megabytes of it. The block is a raw block like any other
// (the raw table knows it; free, realloc and usable_size find it there), with the size and the
// alignment a pool block of the class has (up to 64: [S2.21]), so callers count it as one.
// Debug mode dresses its blocks itself: it takes NULL and goes to stage 1 on its own.
void* pool_malloc_cold(unsigned c) {
    int saved = errno;
    void* block = pool_malloc_slow(c);
    if (block) [[likely]] {
        // [S2.36] A pool of stage 1's, just started: its blocks end kStage1PoolTail bytes short,
        // before the next block's header of stage 1's (pool_malloc_slow set the arena pools' end).
        Pool* pool = pool_of(reinterpret_cast<uintptr_t>(block));
        if (pool->arena_index == kNoArena) pool->max_next_offset = g_heap.pool_bytes - kStage1PoolTail - pool->block_size;
        return block;
    }
    errno = saved;  // ENOMEM from pool_malloc_slow; the call may still succeed
    if (g_heap.debug) return nullptr;
    std::size_t size = class_size(c);
    std::size_t alignment = size & -size;  // the largest power of two dividing the size
    if (alignment > kHeaderAlign) alignment = kHeaderAlign;
    block = raw_alloc(size, alignment);
    if (!block) return nullptr;  // errno = ENOMEM from stage 1
    auto address = reinterpret_cast<uintptr_t>(block);
    if (!raw_track(address, address, size)) {
        raw_release(block);
        return enomem();
    }
    return block;
}

namespace {

// Room for n bytes, from a pool or from stage 1, not counted: realloc counts a move as a
// resize (contract/allocator.h), not as a malloc and a free.
void* place(std::size_t n, std::size_t* usable) {
    if (n > kSmallMax) return raw_malloc(n, kAlignment, usable);
    unsigned c = class_of(n);
    *usable = class_size(c);
    return pool_malloc(c);
}

// Whether p lies in a free block of stage 1's: memory given back to stage 1 already (merged
// with its free neighbours, perhaps). What it held is gone: a large block, a small block of
// stage 1's ([S2.31]), or a pool of stage 1's that emptied ([S2.35]).
bool in_stage1_free_memory(uintptr_t p) {
    struct Find {
        uintptr_t p;
        bool found;
    } find{p, false};
    raw_walk(
        [](const WalkEntry& e, void* context) {
            auto* f = static_cast<Find*>(context);
            if (e.state != WalkState::free || std::strcmp(e.kind, "block") != 0) return true;
            f->found = f->p - reinterpret_cast<uintptr_t>(e.address) < e.size;
            return !f->found;
        },
        &find);
    return find.found;
}

// [S2.29] A pointer that is neither a pool's nor a large block's start. Before the line says
// "foreign, interior, or already freed", the cold path looks through the large blocks for one
// that holds it, so that an interior pointer into a large block is named as such, then through
// stage 1's free blocks (its walk), so that a block freed twice after its memory went back to
// stage 1 is a double free: a large block, or a small one whose pool of stage 1's emptied. The
// line names where it lies, not what it was: a free block of stage 1's keeps no trace of that.
[[noreturn]] void reject_raw(const char* call, const void* ptr) {
    auto p = reinterpret_cast<uintptr_t>(ptr);
    for (uint64_t i = 0; i < raw_capacity(); ++i) {
        const RawEntry& e = *raw_slot(i);
        if (e.user == 0 || (e.block & (kQuarantined | kPoolEntry)) || p - e.user >= e.usable) continue;
        char text[160];
        LineWriter(text, sizeof text)
            .str("interior pointer: ")
            .dec(p - e.user)
            .str(" bytes into the large block at ")
            .hex(e.user);
        die(kStageName, call, ptr, text);
    }
    if (in_stage1_free_memory(p)) die(kStageName, call, ptr, "double free (it lies in memory already given back to stage 1)");
    die(kStageName, call, ptr, "not a block of this heap: foreign, interior, or already freed");
}

// A pointer no arena holds: a raw block (`raw` set), or a block of a pool of stage 1's (`small`
// found and checked: [S2.35], the second probe, at the pointer's pool address), or neither: the
// pointer is rejected. The pool's own address is no block: its entry leads to the second probe,
// whose small_find names it a pointer into a pool header.
struct Outside {
    RawEntry* raw;
    SmallRef small;
};
Outside find_outside(uintptr_t address, const void* p, const char* call) {
    RawEntry* entry = raw_find(address);
    if (entry && !raw_is_pool(*entry)) [[likely]] return Outside{entry, SmallRef{}};
    if (!stage1_pool_of(address)) reject_raw(call, p);
    return Outside{nullptr, small_find(address, p, call)};
}

// Every malloc the fast path below does not take: debug mode, counting on (the default),
// malloc(0), or more than a class holds (stage 1's).
[[gnu::noinline]] void* malloc_other(std::size_t n) {
    if (g_heap.debug) return debug_malloc(n, kAlignment);
    if (n <= kSmallMax) {
        unsigned c = class_of(n);
        void* block = pool_malloc(c);
        if (block != nullptr) [[likely]] note_alloc(class_size(c), n);
        return block;
    }
    return raw_malloc_counted(n, kAlignment);
}

// [S2.19] malloc: a request of 1 to 512 bytes with nothing to count and no debug mode is one
// inline pool_malloc. Every call it can make is its last act (a tail call), so the path saves
// no register and builds no frame; everything else is malloc_other's.
void* s2_malloc(std::size_t n) {
    if (n - 1 < kSmallMax && !g_heap.debug && !g_heap.counting) [[likely]]
        return pool_malloc(class_of(n));
    return malloc_other(n);
}

// free of a block that is not in an arena: a raw block, a block of a pool of stage 1's, or a
// pointer that is not ours. Out of line, so that s2_free's path for small blocks needs no stack
// frame.
[[gnu::noinline]] void free_raw(void* p) {
    Outside found = find_outside(reinterpret_cast<uintptr_t>(p), p, "free");
    if (!found.raw) {
        note_free(found.small.pool->block_size);
        return pool_free(found.small);
    }
    note_free(found.raw->usable);
    raw_untrack(found.raw);
    raw_release(p);
}

// free: the radix tree says whether p is in an arena; if not, the raw table must know it, or
// its pool ([S2.35]).
void s2_free(void* p) {
    if (!p) return;
    if (g_heap.debug) [[unlikely]] return debug_free(p, "free");
    uintptr_t address = reinterpret_cast<uintptr_t>(p);
    if (radix_lookup(address) != 0) [[likely]] {
        SmallRef ref = small_find(address, p, "free");
        note_free(ref.pool->block_size);
        pool_free(ref);
        return;
    }
    free_raw(p);
}

void* s2_calloc(std::size_t count, std::size_t size) {
    std::size_t total;
    if (__builtin_mul_overflow(count, size, &total)) return enomem();
    void* p = s2_malloc(total);
    if (p) os_zero(p, total);
    return p;
}

// [S2.20] A small block stays where it is if the new size falls in its class; otherwise
// it moves (and may leave for stage 1). A raw block stays raw: stage 1 grows or shrinks it in
// place when it can, as CPython leaves a raw block with its raw allocator.
void* s2_realloc(void* p, std::size_t n) {
    if (!p) return s2_malloc(n);
    if (g_heap.debug) [[unlikely]] return debug_realloc(p, n);
    uintptr_t address = reinterpret_cast<uintptr_t>(p);
    Outside found{nullptr, SmallRef{}};
    if (radix_lookup(address))
        found.small = small_find(address, p, "realloc");
    else
        found = find_outside(address, p, "realloc");
    if (!found.raw) {
        const SmallRef& ref = found.small;
        uint32_t old = ref.pool->block_size;
        if (n <= kSmallMax && class_of(n) == ref.pool->class_index) {
            note_request(n);
            return p;
        }
        std::size_t usable;
        void* moved = place(n, &usable);
        if (!moved) return nullptr;
        std::memcpy(moved, p, n < old ? n : old);
        note_resize(old, usable, n);
        pool_free(ref);  // still valid: place touched other blocks only
        return moved;
    }
    RawEntry* entry = found.raw;
    uint64_t old = entry->usable;
    void* moved = raw_resize(p, n);
    if (!moved) return nullptr;  // p untouched, errno = ENOMEM from stage 1
    std::size_t usable = raw_block_usable(moved);
    note_resize(old, usable, n);  // in place or moved: a resize either way
    raw_retrack(entry, reinterpret_cast<uintptr_t>(moved), reinterpret_cast<uintptr_t>(moved),
                usable);
    return moved;
}

// [S2.21] Alignment 16 comes with every block. 32 and 64 come with every class whose
// size is a multiple of the alignment, because pool headers are multiples of 64 bytes: round
// the size up and take a pool block. Larger alignments (and larger sizes) are stage 1's.
void* s2_aligned_alloc(std::size_t alignment, std::size_t n) {
    // As stage 1 does: a request this stage cannot serve.
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > kMaxAlignment) return enomem();
    if (g_heap.debug) [[unlikely]] return debug_malloc(n, alignment);
    if (alignment <= kAlignment) return s2_malloc(n);
    if (alignment <= kHeaderAlign && n <= kSmallMax) {
        std::size_t rounded = n ? (n + alignment - 1) & ~(alignment - 1) : alignment;
        if (rounded <= kSmallMax) {
            unsigned c = class_of(rounded);
            void* block = pool_malloc(c);
            if (block) note_alloc(class_size(c), n);
            return block;
        }
    }
    return raw_malloc_counted(n, alignment);
}

// usable_size of anything but a small block in an arena: null, debug mode, a raw block, a
// block of a pool of stage 1's, or a pointer that is not ours (which dies). Out of line, as
// free_raw is, so that s2_usable_size's path for small blocks builds no stack frame.
[[gnu::noinline]] std::size_t usable_size_other(const void* p) {
    if (!p) return 0;
    if (g_heap.debug) return debug_usable(p);
    Outside found = find_outside(reinterpret_cast<uintptr_t>(p), p, "usable_size");
    return found.raw ? found.raw->usable : found.small.pool->block_size;
}

// [S2.40] usable_size of a small block: the radix tree and the checks of free ([S2.14]: a
// block boundary of the carved part, its bit set, so a freed block still dies here), then its
// class's size. Redis asks it at every malloc and free to count its memory, so everything else
// is usable_size_other's, out of line: inline, it makes the whole call save two registers and
// build a frame, in the lock's layer too.
std::size_t s2_usable_size(const void* p) {
    uintptr_t address = reinterpret_cast<uintptr_t>(p);
    if (!g_heap.debug && radix_lookup(address) != 0) [[likely]]
        return small_find(address, p, "usable_size").pool->block_size;
    return usable_size_other(p);
}

CheckResult s2_check() { return check_heap(); }
void s2_walk(WalkFn visit, void* context) { walk_heap(visit, context); }
Stats s2_stats() { return stats_snapshot(); }

constexpr Api kSingleThread = {&s2_malloc,  &s2_free,          &s2_calloc,
                               &s2_realloc, &s2_aligned_alloc, &s2_usable_size,
                               &s2_check,   &s2_walk,          &s2_stats};
using Lock = Locked<kSingleThread>;

// ---- Options ----
constexpr OptionInfo kOptions[] = {
    {"geometry", "classic|modern",
     "4 KiB pools in 256 KiB arenas, or 16 KiB in 1 MiB; only while no small block is live"},
    {"debug", "off|on",
     "fences, fill bytes, quarantine and reports at free; only while no block is live"},
    {"stats", "on|off", "count requests on the fast paths (default on; off is the benchmark mode)"},
};

// Debug mode reshapes every block, so it changes only with no block live at all. The
// quarantine then holds only dead blocks: empty it (checking each) first. A new geometry
// needs only the pools empty; arena_set_geometry refuses otherwise.
bool nothing_live() {
    if (stats_snapshot().live_blocks) return false;
    debug_drain();
    return true;
}

bool s2_set_option(const char* name, const char* value) {
    Lock::Guard guard;
    if (std::strcmp(name, "geometry") == 0) {
        const Geometry* geometry = std::strcmp(value, kClassic.name) == 0  ? &kClassic
                                   : std::strcmp(value, kModern.name) == 0 ? &kModern
                                                                           : nullptr;
        if (!geometry) return false;
        if (geometry == g_heap.geometry) return true;
        debug_drain();
        return arena_set_geometry(*geometry);
    }
    if (std::strcmp(name, "debug") == 0) {
        bool on = std::strcmp(value, "on") == 0;
        if (!on && std::strcmp(value, "off") != 0) return false;
        if (on == g_heap.debug) return true;
        if (!nothing_live()) return false;
        g_heap.debug = on;
        return true;
    }
    if (std::strcmp(name, "stats") == 0) {
        bool on = std::strcmp(value, "on") == 0;
        if (!on && std::strcmp(value, "off") != 0) return false;
        set_counting(on);
        return true;
    }
    return false;
}

const char* s2_get_option(const char* name) {
    Lock::Guard guard;
    if (std::strcmp(name, "geometry") == 0) return g_heap.geometry->name;
    if (std::strcmp(name, "debug") == 0) return g_heap.debug ? "on" : "off";
    if (std::strcmp(name, "stats") == 0) return g_heap.counting ? "on" : "off";
    return nullptr;
}

// ---- fork: our lock, then stage 1's (the order every call takes them in) ----
void s2_prepare_fork() {
    Lock::prepare_fork();
    stage1::descriptor.prepare_fork();
}
void s2_after_fork_parent() {
    stage1::descriptor.after_fork_parent();
    Lock::after_fork_parent();
}
void s2_after_fork_child() {
    stage1::descriptor.after_fork_child();
    Lock::after_fork_child();
}

}  // namespace

constinit const Stage descriptor = {
    kStageName,
    2,
    "pymalloc: 16-byte size classes in pools carved from mmap'd arenas; larger blocks from stage 1",
    ThreadSafety::locked,
    true,
    kMaxAlignment,
    &kSingleThread,
    &Lock::api,
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    &s2_set_option,
    &s2_get_option,
    &s2_prepare_fork,
    &s2_after_fork_parent,
    &s2_after_fork_child,
};

void print_pool_statistics() {
    Lock::Guard guard;
    print_pool_table();
}

namespace {
[[maybe_unused]] const bool g_registered = (register_stage(descriptor), true);
}  // namespace

}  // namespace edu::stage2
