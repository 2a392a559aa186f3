// contract/locked.h: the thread-safe entry of a single-threaded stage, written once.
// `Locked<kApi>::api` wraps every call of `kApi` in one mutex, and `Locked<kApi>` supplies the
// fork hooks that keep that mutex usable in a child. Stages 1-3 use it; stage 4 needs no lock.
#pragma once

#include <pthread.h>

#include "contract/allocator.h"

namespace edu {

template <const Api& kApi>
struct Locked {
    // A statically initialised mutex works before main and before any constructor runs.
    static inline pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;

    struct Guard {
        Guard() { pthread_mutex_lock(&mutex); }
        ~Guard() { pthread_mutex_unlock(&mutex); }
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;
    };

    static void* malloc(std::size_t size) { Guard g; return kApi.malloc(size); }
    static void free(void* ptr) { Guard g; kApi.free(ptr); }
    static void* calloc(std::size_t n, std::size_t size) { Guard g; return kApi.calloc(n, size); }
    static void* realloc(void* ptr, std::size_t size) { Guard g; return kApi.realloc(ptr, size); }
    static void* aligned_alloc(std::size_t alignment, std::size_t size) {
        Guard g;
        return kApi.aligned_alloc(alignment, size);
    }
    static std::size_t usable_size(const void* ptr) { Guard g; return kApi.usable_size(ptr); }
    static CheckResult check() { Guard g; return kApi.check(); }
    static void walk(WalkFn visit, void* context) { Guard g; kApi.walk(visit, context); }
    static Stats stats() { Guard g; return kApi.stats(); }

    static void prepare_fork() { pthread_mutex_lock(&mutex); }
    static void after_fork_parent() { pthread_mutex_unlock(&mutex); }
    // The child has one thread, the one that forked and holds the mutex: a fresh one is right.
    static void after_fork_child() { mutex = PTHREAD_MUTEX_INITIALIZER; }

    static constexpr Api api = {&malloc, &free,  &calloc, &realloc, &aligned_alloc,
                                &usable_size, &check, &walk, &stats};
};

}  // namespace edu
