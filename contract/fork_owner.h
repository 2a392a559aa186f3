// contract/fork_owner.h: which thread holds a lock of ours across fork(2), from the prepare hook
// to the parent's or the child's. Its own calls in between (another library's fork handler that
// allocates: contract/locked.h, point 8) run as the holder instead of waiting for themselves.
// Entry points: set and clear (the fork hooks), is_me (a call that found the lock taken).
#pragma once

#include <pthread.h>

#include <atomic>

namespace edu {

class ForkOwner {
public:
    void set() { thread_.store(pthread_self(), std::memory_order_relaxed); }
    void clear() { thread_.store(0, std::memory_order_relaxed); }
    // Only the holder can read its own id: any other thread reads 0 or the holder's, and waits.
    [[gnu::noinline, gnu::cold]] bool is_me() const {
        return thread_.load(std::memory_order_relaxed) == pthread_self();
    }

private:
    std::atomic<pthread_t> thread_{0};   // 0: no fork under way
};

}  // namespace edu
