// contract/allocator.h: the one contract every stage provides.
// A stage is a `Stage` descriptor: name, number, options, and two tables of entry points
// (`Api`), one for a single thread and one safe for many. The battery, the preload shim, the
// diff tool and the benchmarks only ever see this header, so a new stage is a new descriptor.
// Nothing here is named `malloc`: all four stages live side by side in one process.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edu {

// ---- Statistics ----------------------------------------------------------------------------
// Kinds of request a stage makes of the operating system.
enum class OsCall : unsigned { brk, mmap, munmap, madvise, mprotect, mremap, count };
inline constexpr const char* kOsCallNames[] = {"brk", "mmap", "munmap", "madvise", "mprotect", "mremap"};

// What a stage reports of itself. Byte counts are bytes; "live" counts usable bytes (what
// `usable_size` reports), so live_bytes - requested bytes of the live blocks is the
// internal fragmentation a driver can measure.
struct Stats {
    uint64_t mallocs = 0;            // successful allocations: malloc, calloc, aligned_alloc,
                                     // and realloc(nullptr, n); a resize counts as neither
    uint64_t frees = 0;              // blocks released by free
    uint64_t bytes_requested = 0;    // sum of sizes asked for, ever
    uint64_t live_blocks = 0;        // blocks handed out and not yet freed
    uint64_t live_bytes = 0;         // usable bytes in those blocks
    uint64_t peak_live_bytes = 0;    // maximum of live_bytes
    uint64_t footprint = 0;          // bytes obtained from the OS and not given back
    uint64_t peak_footprint = 0;     // maximum of footprint
    uint64_t os_calls[static_cast<unsigned>(OsCall::count)] = {};  // by kind
};

// ---- Heap checking and walking --------------------------------------------------------------
// The checker's answer: ok, or the first invariant found violated, in words.
struct CheckResult {
    bool ok = true;
    char message[192] = "ok";        // NUL-terminated: "ok" or the violated invariant
    uint64_t live_blocks = 0;        // blocks the heap believes are allocated
    uint64_t live_bytes = 0;         // usable bytes in them
    uint64_t free_blocks = 0;        // free blocks (or free slots) the heap holds
};

// The state of one region the walker visits.
enum class WalkState : unsigned {
    used,       // an allocated block, payload belongs to the program
    free,       // a free block, on a free list
    meta,       // allocator bookkeeping: headers, fences, pool/page/segment descriptors
    unused,     // memory the allocator holds but has not carved into blocks yet
    remote,     // a block freed by a thread that does not own it, waiting on a cross-thread list
                // until the owner collects it (stage 4): no longer the program's, not yet reusable
};
inline constexpr const char* kWalkStateNames[] = {"used", "free", "meta", "unused", "remote"};
inline constexpr unsigned kWalkStateCount = 5;

// One visit. `kind` names the concept ("region", "block", "arena", "pool", "segment",
// "page", ...). `depth` nests: a pool (depth 1) lies inside an arena (depth 0).
struct WalkEntry {
    const char* kind;
    WalkState state;
    const void* address;     // start of the region (for blocks: the payload address)
    std::size_t size;        // bytes (for blocks: usable payload bytes)
    unsigned depth;
};
// Return false to stop the walk early.
using WalkFn = bool (*)(const WalkEntry& entry, void* context);

// ---- Entry points ---------------------------------------------------------------------------
// The malloc family as C defines it, plus introspection. Error behaviour, for every stage:
//   * `malloc(0)` returns a unique, freeable block; `free(nullptr)` does nothing;
//   * `realloc(p, 0)` resizes p to a zero-size block: it returns a unique, freeable block
//     (not NULL), like malloc(0); `realloc(nullptr, n)` is malloc(n);
//   * a size the stage cannot serve (near SIZE_MAX, out of memory, calloc overflow) returns
//     nullptr with errno = ENOMEM and leaves the heap unchanged;
//   * a pointer that is not a live block of this stage (double free, foreign, interior,
//     misaligned) prints one line naming the stage, the call and the pointer, then aborts.
struct Api {
    void* (*malloc)(std::size_t size);
    void (*free)(void* ptr);
    void* (*calloc)(std::size_t count, std::size_t size);
    void* (*realloc)(void* ptr, std::size_t size);
    // `alignment` is a power of two no larger than Stage::max_alignment; size is any size.
    void* (*aligned_alloc)(std::size_t alignment, std::size_t size);
    std::size_t (*usable_size)(const void* ptr);
    CheckResult (*check)();
    void (*walk)(WalkFn visit, void* context);
    Stats (*stats)();
};

enum class ThreadSafety : unsigned {
    locked,         // `thread_safe` serialises every call behind one lock (stages 1-3)
    concurrent,     // `thread_safe` runs in parallel: per-thread heaps (stage 4)
};

// One tunable of a stage, settable by name with `set_option` before or between workloads.
// EDU_OPTIONS sets them as "<stage>.<name>=<value>" (contract/options.h). A stage whose fast
// paths can skip counting names that switch "stats" (on|off); with it off, the printed
// statistics say the requests were not counted (contract/report.cc).
struct OptionInfo {
    const char* name;        // "fit"
    const char* values;      // "first|next|best"
    const char* help;        // one line
};

struct Stage {
    const char* name;                // "stage1_brk"
    int number;                      // 1..4
    const char* summary;             // one line: what the stage is
    ThreadSafety thread_safety;
    bool returns_memory;             // footprint falls when everything is freed
    std::size_t max_alignment;       // largest alignment aligned_alloc supports (>= 64 KiB)
    const Api* single_thread;        // fastest entry: one thread at a time
    const Api* thread_safe;          // any number of threads
    const OptionInfo* options;       // array of option_count entries
    std::size_t option_count;
    // Set an option: returns false (and changes nothing) for an unknown name or value.
    bool (*set_option)(const char* name, const char* value);
    // Current value of an option, or nullptr for an unknown name.
    const char* (*get_option)(const char* name);
    // fork(2) support for `thread_safe`: take every lock before the fork, release them after
    // in the parent, and make them usable again in the child (the preload shim registers these
    // with pthread_atfork).
    void (*prepare_fork)();
    void (*after_fork_parent)();
    void (*after_fork_child)();
    // Called by the drop-in library after the program changed its own address-space limit
    // (RLIMIT_AS through setrlimit or prlimit, which the library passes on to the kernel), from
    // the thread that changed it: a stage that holds address space it does not use gives it
    // back here (stage 4, S4.68). nullptr: the stage does not care.
    void (*limit_set)() = nullptr;
};

// ---- Registry -------------------------------------------------------------------------------
// Every stage library registers its descriptor at static-initialisation time, so tools that
// link several stages (the diff tool, the benchmarks) discover them without a list to edit.
void register_stage(const Stage& stage);
const Stage* find_stage(int number);      // nullptr if that stage is not linked in
const Stage* find_stage(const char* name);
std::size_t stage_count();
const Stage& stage_at(std::size_t index);  // ordered by stage number

}  // namespace edu
