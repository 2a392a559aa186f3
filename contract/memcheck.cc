// contract/memcheck.cc: the memcheck layer: client requests around every call of the entry.
// Memcheck sees an allocator's blocks only if it is told; it sees the allocator's own reads of
// freed memory (free-list links, headers) as errors unless it is told to look away.
#include "contract/memcheck.h"

#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>

#include <cstdlib>
#include <cstring>

#include "contract/diagnostics.h"

namespace edu {
namespace {

const Api* g_inner = nullptr;

// The stage's own code touches freed blocks and headers the program may not touch: memcheck
// reports nothing on this thread while one of these lives.
struct StageAtWork {
    StageAtWork() { VALGRIND_DISABLE_ERROR_REPORTING; }
    ~StageAtWork() { VALGRIND_ENABLE_ERROR_REPORTING; }
};

// A block handed out: its n bytes addressable (defined if zeroed), the slack after them not.
void* announce(void* p, std::size_t n, bool zeroed) {
    if (!p) return nullptr;
    std::size_t usable;
    {
        StageAtWork quiet;
        usable = g_inner->usable_size(p);
    }
    VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, zeroed);
    if (usable > n) VALGRIND_MAKE_MEM_NOACCESS(static_cast<char*>(p) + n, usable - n);
    return p;
}

void* m_malloc(std::size_t n) {
    void* p;
    {
        StageAtWork quiet;
        p = g_inner->malloc(n);
    }
    return announce(p, n, false);
}

void* m_calloc(std::size_t count, std::size_t size) {
    void* p;
    {
        StageAtWork quiet;
        p = g_inner->calloc(count, size);
    }
    return announce(p, count * size, true);  // a product that overflowed returned nullptr
}

void* m_aligned_alloc(std::size_t alignment, std::size_t n) {
    void* p;
    {
        StageAtWork quiet;
        p = g_inner->aligned_alloc(alignment, n);
    }
    return announce(p, n, false);
}

// Memcheck first: it reports a bad free with the program's stack; then the stage, which
// aborts with its own line if the pointer is not a live block.
void m_free(void* p) {
    if (!p) return;
    VALGRIND_FREELIKE_BLOCK(p, 0);
    StageAtWork quiet;
    g_inner->free(p);
}

void* m_realloc(void* p, std::size_t n) {
    if (!p) return m_malloc(n);
    std::size_t old;
    {
        StageAtWork quiet;
        old = g_inner->usable_size(p);  // aborts with the stage's line if p is not live
    }
    void* moved = m_malloc(n);
    if (!moved) return nullptr;
    {
        // Copies definedness too; bytes past the old request were inaccessible and stay
        // unreported (memcheck cannot tell us the old request).
        StageAtWork quiet;
        std::memcpy(moved, p, old < n ? old : n);
    }
    m_free(p);
    return moved;
}

std::size_t m_usable_size(const void* p) {
    StageAtWork quiet;
    return g_inner->usable_size(p);
}

CheckResult m_check() {
    StageAtWork quiet;
    return g_inner->check();
}

void m_walk(WalkFn visit, void* context) {
    StageAtWork quiet;
    g_inner->walk(visit, context);
}

Stats m_stats() {
    StageAtWork quiet;
    return g_inner->stats();
}

constexpr Api kMemcheck = {&m_malloc, &m_free,  &m_calloc, &m_realloc, &m_aligned_alloc,
                           &m_usable_size, &m_check, &m_walk, &m_stats};

}  // namespace

// Valgrind preloads each tool's own library (vgpreload_<tool>-<platform>.so) into the program,
// so LD_PRELOAD names the tool; getenv does not allocate.
bool running_on_memcheck() {
    if (RUNNING_ON_VALGRIND == 0) return false;
    const char* preload = std::getenv("LD_PRELOAD");
    return preload != nullptr && std::strstr(preload, "vgpreload_memcheck") != nullptr;
}

const Api& memcheck_entry(const Api& inner) {
    if (g_inner && g_inner != &inner) die("contract", "memcheck_entry", &inner, "one memcheck layer per process");
    g_inner = &inner;
    return kMemcheck;
}

}  // namespace edu
