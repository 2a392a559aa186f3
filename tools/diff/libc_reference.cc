// tools/diff/libc_reference.cc: glibc's malloc behind the contract's Api, for reference.
// Footprint = mallinfo2's `arena` (bytes the main heap took with brk) + `hblkhd` (bytes in
// blocks glibc mapped one by one), minus the bytes in use (`uordblks` + `hblkhd`) when stats()
// is first called: the replay runs in a freshly exec'd process, so those are the driver's own
// data (the operations); the rest of glibc's first heap counts as the trace's, as it would
// for a program that had only just started. mallinfo2 walks glibc's bins, so it is called only when the answer
// can have changed: the break moved, or a request big enough to be mapped on its own came or went.
#include "tools/diff/libc_reference.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>

namespace edu::diff {
namespace {

// glibc maps a request on its own from M_MMAP_THRESHOLD up; the threshold starts at 128 KiB and
// only grows (to at most 32 MiB on 64-bit), so no smaller request can change `hblkhd`.
constexpr std::size_t kMayBeMapped = 128 * 1024;

struct Footprint {
    bool dirty = true;
    bool started = false;
    void* brk = nullptr;
    uint64_t baseline = 0, now = 0;
} g;

void touched(std::size_t size) {
    if (size >= kMayBeMapped) g.dirty = true;
}

void* libc_malloc(std::size_t n) {
    touched(n);
    return std::malloc(n);
}
void libc_free(void* p) {
    if (p) touched(malloc_usable_size(p));
    std::free(p);
}
void* libc_calloc(std::size_t n, std::size_t size) {
    g.dirty = true;
    return std::calloc(n, size);
}
void* libc_realloc(void* p, std::size_t n) {
    touched(n);
    if (p) touched(malloc_usable_size(p));
    return std::realloc(p, n);
}
void* libc_aligned(std::size_t alignment, std::size_t n) {
    touched(n);
    return std::aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
}
std::size_t libc_usable(const void* p) { return malloc_usable_size(const_cast<void*>(p)); }
CheckResult libc_check() { return CheckResult{}; }  // glibc has no checker we can call
void libc_walk(WalkFn, void*) {}                      // nor a walker

Stats libc_stats() {
    void* brk = sbrk(0);
    if (g.dirty || brk != g.brk) {
        struct mallinfo2 info = mallinfo2();
        uint64_t held = info.arena + info.hblkhd;
        if (!g.started) {
            g.started = true;
            g.baseline = info.uordblks + info.hblkhd;
        }
        g.now = held > g.baseline ? held - g.baseline : 0;
        g.brk = brk;
        g.dirty = false;
    }
    Stats s;
    s.footprint = g.now;
    return s;
}

bool no_option(const char*, const char*) { return false; }
const char* no_value(const char*) { return nullptr; }
void nothing() {}

constexpr Api kLibc = {&libc_malloc, &libc_free,  &libc_calloc, &libc_realloc, &libc_aligned,
                       &libc_usable, &libc_check, &libc_walk,   &libc_stats};
constexpr Stage kReference = {"libc", 0, "the C library's malloc (glibc), for reference", ThreadSafety::locked,
                              true, 4096, &kLibc, &kLibc, nullptr, 0, &no_option, &no_value, &nothing,
                              &nothing, &nothing};

}  // namespace

const Stage& libc_reference() { return kReference; }

}  // namespace edu::diff
