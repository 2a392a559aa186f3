// stage1_brk/stage1.cc: the contract adapter around the assembly core. No allocator logic
// but one retry: it turns core status codes into errno or a one-line diagnostic, moves a break
// that cannot grow to a private reservation and asks again ([S1.41]), keeps the request-side
// statistics the core does not know about, maps options to the core's tunables, and builds
// the descriptor (the thread-safe entry is contract/locked.h's lock around this one).
#include "stage1_brk/stage1.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <new>

#include "contract/diagnostics.h"
#include "contract/locked.h"
#include "contract/os.h"
#include "stage1_brk/core.h"
#include "stage1_brk/reserved_break.h"

namespace edu::stage1 {
namespace {

constexpr const char* kName = "stage1_brk";

// [S1.22] Request-side statistics. The core counts what it asks of the kernel (sbrk calls,
// footprint); what the program asks of us is counted here. Callers are serialised (one thread,
// or the stage lock), so plain counters are exact.
struct RequestStats {
    uint64_t mallocs = 0, frees = 0, bytes_requested = 0;
    uint64_t live_blocks = 0, live_bytes = 0, peak_live_bytes = 0;
} g_stats;

// The call being served, for diagnostics raised deep inside the core (s1_list_corrupted).
const char* g_call = "malloc";

void count_alloc(void* p, std::size_t requested) {
    std::size_t usable = s1_block_usable(p);
    ++g_stats.mallocs;
    ++g_stats.live_blocks;
    g_stats.bytes_requested += requested;
    g_stats.live_bytes += usable;
    if (g_stats.live_bytes > g_stats.peak_live_bytes) g_stats.peak_live_bytes = g_stats.live_bytes;
}

void count_free(std::size_t usable) {
    ++g_stats.frees;
    --g_stats.live_blocks;
    g_stats.live_bytes -= usable;
}

const char* describe(uint32_t status) {
    switch (status) {
        case S1_FOREIGN: return "pointer not from this heap";
        case S1_MISALIGNED: return "misaligned pointer, never returned by this heap";
        case S1_NOT_A_BLOCK: return "no block starts here (interior or corrupted pointer)";
        case S1_DOUBLE_FREE: return "double free (block is already free)";
        case S1_HEAP_DAMAGED: return "heap damaged: a region's end word or link was overwritten (a write before a block or past one)";
        default: return "invalid pointer";
    }
}

// Checks a pointer about to be released or measured; never returns for a bad one. One
// validation: the usable size is then read from the block's header.
std::size_t usable_or_die(const char* call, const void* ptr) {
    uint32_t status = s1_validate(ptr);
    if (status != S1_OK) [[unlikely]] die(kName, call, ptr, describe(status));
    return s1_block_usable(ptr);
}

// ---- The single-thread entry ----------------------------------------------------------------

bool use_reserved_break(bool on);

// [S1.41] A break that cannot grow. The kernel refuses to move the break into anything mapped
// above it (a library, a program's fixed mapping), with memory to spare elsewhere; glibc then
// maps its next chunk elsewhere. Stage 1 moves its break to a private reservation, as the
// `break=reserved` option does ([S1.24]: the next growth finds the break "moved" and starts a
// region there), and tries the request again; if it fails there too, the break stays libc's and
// the answer is ENOMEM. Requests the core refuses by their size never get here.
template <class Allocate>
void* grow_elsewhere(std::size_t size, Allocate allocate) {
    if (size > kS1MaxRequest || s1_sbrk_hook != nullptr || !use_reserved_break(true)) return nullptr;
    void* p = allocate();
    if (!p) use_reserved_break(false);
    return p;
}

void* st_malloc(std::size_t size) {
    g_call = "malloc";
    void* p = s1_malloc(size);
    if (!p) [[unlikely]] p = grow_elsewhere(size, [size] { return s1_malloc(size); });
    if (!p) [[unlikely]] return enomem();
    count_alloc(p, size);
    return p;
}

void st_free(void* ptr) {
    if (!ptr) return;
    g_call = "free";
    std::size_t usable = usable_or_die("free", ptr);
    s1_free(ptr);
    count_free(usable);
}

void* st_calloc(std::size_t count, std::size_t size) {
    std::size_t bytes;
    if (__builtin_mul_overflow(count, size, &bytes)) [[unlikely]] return enomem();
    void* p = st_malloc(bytes);
    if (p) zero_fill(p, bytes, [](OsCall) { ++s1_madvise_calls; });  // recycled blocks hold old data
    return p;
}

void* st_realloc(void* ptr, std::size_t size) {
    if (!ptr) return st_malloc(size);
    g_call = "realloc";
    std::size_t old_usable = usable_or_die("realloc", ptr);
    void* p = s1_realloc(ptr, size);
    if (!p) [[unlikely]] p = grow_elsewhere(size, [ptr, size] { return s1_realloc(ptr, size); });
    if (!p) [[unlikely]] return enomem();  // only ENOMEM is left: ptr was valid
    // A resize keeps the block count: only the bytes change.
    g_stats.bytes_requested += size;
    g_stats.live_bytes += s1_block_usable(p) - old_usable;
    if (g_stats.live_bytes > g_stats.peak_live_bytes) g_stats.peak_live_bytes = g_stats.live_bytes;
    return p;
}

void* st_aligned_alloc(std::size_t alignment, std::size_t size) {
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > kS1MaxAlignment)
        return enomem();
    g_call = "aligned_alloc";
    void* p = s1_memalign(alignment, size);
    if (!p) [[unlikely]] p = grow_elsewhere(size, [alignment, size] { return s1_memalign(alignment, size); });
    if (!p) [[unlikely]] return enomem();
    count_alloc(p, size);
    return p;
}

std::size_t st_usable_size(const void* ptr) {
    if (!ptr) return 0;
    return usable_or_die("usable_size", ptr);
}

const char* check_message(uint64_t code) {
    switch (code) {
        case S1_CHECK_REGION_END: return "region end word misaligned, too small or above the heap's top";
        case S1_CHECK_REGION_ORDER: return "regions not ascending, overlapping, too small or above the heap's top";
        case S1_CHECK_BLOCK_SIZE: return "block size below the minimum";
        case S1_CHECK_PAST_END: return "block runs past its region's epilogue";
        case S1_CHECK_FOOTER: return "footer differs from header";
        case S1_CHECK_FLAGS: return "unknown flag bits in a block header";
        case S1_CHECK_ADJACENT_FREE: return "two free blocks side by side (missed coalesce)";
        case S1_CHECK_EPILOGUE: return "epilogue fence damaged";
        case S1_CHECK_LIST_FOREIGN: return "free-list node is not a free block of this heap";
        case S1_CHECK_LIST_LINK: return "free-list prev link does not point back";
        case S1_CHECK_LIST_COUNT: return "free-list length differs from free blocks in heap";
        case S1_CHECK_LIST_CLASS: return "free block on the wrong size-class list, or class map wrong";
        default: return "unknown invariant";
    }
}

CheckResult st_check() {
    S1Report report;
    CheckResult result;
    uint64_t code = s1_check(&report);
    result.live_blocks = report.used_blocks;
    result.live_bytes = report.used_bytes;
    result.free_blocks = report.free_blocks;
    if (code == S1_CHECK_OK && report.used_blocks != g_stats.live_blocks) {
        result.ok = false;
        LineWriter(result.message, sizeof result.message)
            .str("heap holds ").dec(report.used_blocks).str(" used blocks, statistics say ")
            .dec(g_stats.live_blocks);
    } else if (code != S1_CHECK_OK) {
        result.ok = false;
        LineWriter(result.message, sizeof result.message)
            .str(check_message(code)).str(" at ").hex(report.address);
    }
    return result;
}

// Adapts the core's visitor (header addresses, block sizes) to the contract's (payloads,
// usable sizes).
struct WalkContext {
    WalkFn visit;
    void* context;
};

int walk_visitor(void* raw, uint64_t kind, uint64_t address, uint64_t size) {
    auto* ctx = static_cast<WalkContext*>(raw);
    WalkEntry e{};
    switch (kind) {
        case S1_KIND_REGION: e = {"region", WalkState::meta, reinterpret_cast<void*>(address), size, 0}; break;
        case S1_KIND_FENCE: e = {"fence", WalkState::meta, reinterpret_cast<void*>(address), size, 1}; break;
        default:
            e = {"block", kind == S1_KIND_USED ? WalkState::used : WalkState::free,
                 reinterpret_cast<void*>(address + kS1Overhead), size - kS1Overhead, 1};
    }
    return ctx->visit(e, ctx->context) ? 1 : 0;
}

void st_walk(WalkFn visit, void* context) {
    WalkContext ctx{visit, context};
    s1_walk(&walk_visitor, &ctx);
}

Stats st_stats() {
    Stats s;
    s.mallocs = g_stats.mallocs;
    s.frees = g_stats.frees;
    s.bytes_requested = g_stats.bytes_requested;
    s.live_blocks = g_stats.live_blocks;
    s.live_bytes = g_stats.live_bytes;
    s.peak_live_bytes = g_stats.peak_live_bytes;
    s.footprint = s1_footprint;
    s.peak_footprint = s1_peak_footprint;
    s.os_calls[static_cast<unsigned>(OsCall::brk)] = s1_brk_calls;
    s.os_calls[static_cast<unsigned>(OsCall::madvise)] = s1_madvise_calls;
    return s;
}

constexpr Api kSingleThread = {&st_malloc,        &st_free,        &st_calloc,
                               &st_realloc,       &st_aligned_alloc, &st_usable_size,
                               &st_check,         &st_walk,        &st_stats};

// ---- Options --------------------------------------------------------------------------------

// Indexed by S1Fit.
constexpr const char* kFits[] = {"first", "next", "best", "seg"};

constexpr OptionInfo kOptions[] = {
    {"fit", "first|next|best|seg", "free-list search: first, next or best fit over one list, or segregated fit over size classes"},
    {"margin", "<bytes>", "largest margin added to a growth; the margin is a 256th of the heap (a 32nd for a small block under fit=seg) up to this (default 1048576)"},
    {"trim", "<bytes>|off", "trailing free bytes that make the heap lower the break (default 131072, and the tail follows large frees, [S1.43]; setting it stops that)"},
    {"break", "sbrk|reserved", "where the heap grows: the real program break (default) or a private reservation"},
};

// [S1.24] Where the break comes from. By default the core calls libc's sbrk, so it shares the
// data segment with anyone else who does (and copes when they move it). `reserved` gives it a
// break of its own in a private mapping: valgrind emulates brk in a fixed 8 MiB segment, so the
// battery runs under memcheck this way. Switching is safe at any time: the next growth
// finds the break "moved" and starts a new region.
ReservedBreak* g_reserved = nullptr;
void* reserved_sbrk(intptr_t increment) { return g_reserved->sbrk(increment); }

bool use_reserved_break(bool on) {
    if (!on) {
        s1_sbrk_hook = nullptr;
        return true;
    }
    if (!g_reserved) {
        alignas(ReservedBreak) static unsigned char storage[sizeof(ReservedBreak)];
        auto* candidate = new (storage) ReservedBreak();  // no heap: it lives in static storage
        if (!candidate->ok()) return false;
        g_reserved = candidate;
    }
    s1_sbrk_hook = &reserved_sbrk;
    return true;
}

bool parse_bytes(const char* text, uint64_t* out) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text, &end, 10);
    if (errno || end == text || *end || v > (1ull << 40)) return false;
    *out = v;
    return true;
}

using Lock = Locked<kSingleThread>;

// [S1.27] Options change the core's tunables, which every call of the thread-safe entry reads:
// they are set and read under the stage's lock, like any other call.
bool set_option_unlocked(const char* name, const char* value) {
    if (std::strcmp(name, "fit") == 0) {
        for (uint64_t i = 0; i < std::size(kFits); ++i)
            if (std::strcmp(value, kFits[i]) == 0) return s1_set_fit(i), true;
        return false;
    }
    uint64_t bytes;
    if (std::strcmp(name, "margin") == 0) {
        if (!parse_bytes(value, &bytes)) return false;
        s1_grow_margin = bytes;
        return true;
    }
    if (std::strcmp(name, "trim") == 0) {
        if (std::strcmp(value, "off") == 0) bytes = UINT64_MAX;
        else if (!parse_bytes(value, &bytes)) return false;
        s1_trim_threshold = bytes;
        s1_trim_fixed = 1;   // [S1.43] as glibc's M_TRIM_THRESHOLD: set, it no longer follows frees
        s1_trim_followed = 0;
        return true;
    }
    if (std::strcmp(name, "break") == 0) {
        if (std::strcmp(value, "sbrk") == 0) return use_reserved_break(false);
        if (std::strcmp(value, "reserved") == 0) return use_reserved_break(true);
    }
    return false;
}

bool set_option(const char* name, const char* value) {
    Lock::Guard guard;
    return set_option_unlocked(name, value);
}

const char* get_option_unlocked(const char* name) {
    static char buffer[32];
    if (std::strcmp(name, "fit") == 0) return kFits[s1_fit_policy % std::size(kFits)];
    if (std::strcmp(name, "margin") == 0) {
        LineWriter(buffer, sizeof buffer).dec(s1_grow_margin);
        return buffer;
    }
    if (std::strcmp(name, "trim") == 0) {
        if (s1_trim_threshold == UINT64_MAX) return "off";
        LineWriter(buffer, sizeof buffer).dec(s1_trim_threshold);
        return buffer;
    }
    if (std::strcmp(name, "break") == 0) return s1_sbrk_hook == &reserved_sbrk ? "reserved" : "sbrk";
    return nullptr;
}

const char* get_option(const char* name) {
    Lock::Guard guard;
    return get_option_unlocked(name);
}

}  // namespace

// [S1.25] The safe-unlinking check failed: name the free block whose links were overwritten.
extern "C" void s1_list_corrupted(uint64_t header) {
    die(kName, g_call, reinterpret_cast<void*>(header + 8),
        "corrupted free list: a free block's links were overwritten (write after free?)");
}

const Stage descriptor = {
    kName,
    1,
    "NASM brk heap: boundary tags, explicit free lists, first/next/best/segregated fit",
    ThreadSafety::locked,
    true,
    kS1MaxAlignment,
    &kSingleThread,
    &Lock::api,
    kOptions,
    sizeof kOptions / sizeof kOptions[0],
    &set_option,
    &get_option,
    &Lock::prepare_fork,
    &Lock::after_fork_parent,
    &Lock::after_fork_child,
};

namespace {
const bool g_registered = (register_stage(descriptor), true);
}  // namespace

}  // namespace edu::stage1
