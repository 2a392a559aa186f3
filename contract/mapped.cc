// contract/mapped.cc: over-aligned blocks in mappings of their own (see mapped.h). A mapping is
// reserved `alignment` bytes too long, then trimmed at both ends with munmap, so what stays is
// one page of record, then the block, at the first multiple of the alignment it can hold.
#include "contract/mapped.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "contract/diagnostics.h"

namespace edu {
namespace {

// In the page in front of its block; the mapping is that page and the block's `usable` bytes.
struct Record {
    Record* next;
    Record* prev;
    uintptr_t block;
    std::size_t usable;   // bytes, whole pages
};

// The live blocks, a doubly linked list under one lock: these calls are rare and each costs
// system calls anyway. g_count lets a pointer be turned away without the lock while none lives.
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
Record* g_first = nullptr;
std::atomic<std::size_t> g_count{0};

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// The record of `p` with the lock held, or nullptr.
Record* find_locked(const void* p) {
    for (Record* r = g_first; r != nullptr; r = r->next)
        if (r->block == reinterpret_cast<uintptr_t>(p)) return r;
    return nullptr;
}

bool may_be_mapped(const void* p) {
    return g_count.load(std::memory_order_relaxed) != 0 && (reinterpret_cast<uintptr_t>(p) & (page_size() - 1)) == 0;
}

}  // namespace

void* mapped_aligned_alloc(std::size_t alignment, std::size_t size) {
    std::size_t page = page_size();
    if (alignment < page) alignment = page;
    std::size_t usable, span;
    if (__builtin_add_overflow(size == 0 ? 1 : size, page - 1, &usable)) return enomem();
    usable &= ~(page - 1);
    if (__builtin_add_overflow(usable, page + alignment, &span)) return enomem();
    void* got = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (got == MAP_FAILED) return enomem();
    auto base = reinterpret_cast<uintptr_t>(got);
    uintptr_t block = (base + page + alignment - 1) & ~(alignment - 1);
    uintptr_t head = block - page, end = block + usable;
    if (head > base) munmap(got, head - base);
    if (base + span > end) munmap(reinterpret_cast<void*>(end), base + span - end);
    auto* r = reinterpret_cast<Record*>(head);
    r->block = block;
    r->usable = usable;
    r->prev = nullptr;
    pthread_mutex_lock(&g_lock);
    r->next = g_first;
    if (g_first) g_first->prev = r;
    g_first = r;
    g_count.fetch_add(1, std::memory_order_relaxed);
    pthread_mutex_unlock(&g_lock);
    return reinterpret_cast<void*>(block);
}

std::size_t mapped_block_size(const void* p) {
    if (!may_be_mapped(p)) return 0;
    pthread_mutex_lock(&g_lock);
    Record* r = find_locked(p);
    std::size_t usable = r ? r->usable : 0;
    pthread_mutex_unlock(&g_lock);
    return usable;
}

bool mapped_free(void* p) {
    if (!may_be_mapped(p)) return false;
    pthread_mutex_lock(&g_lock);
    Record* r = find_locked(p);
    if (r) {
        if (r->prev) r->prev->next = r->next;
        else g_first = r->next;
        if (r->next) r->next->prev = r->prev;
        g_count.fetch_sub(1, std::memory_order_relaxed);
    }
    pthread_mutex_unlock(&g_lock);
    if (r) munmap(r, page_size() + r->usable);
    return r != nullptr;
}

void mapped_prepare_fork() { pthread_mutex_lock(&g_lock); }
void mapped_after_fork_parent() { pthread_mutex_unlock(&g_lock); }
void mapped_after_fork_child() { pthread_mutex_init(&g_lock, nullptr); }

}  // namespace edu
