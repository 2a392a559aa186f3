// contract/futex_mutex.h: the mutex of contract/locked.h, a three-state futex lock (Drepper,
// "Futexes Are Tricky", mutex 3). Free, it is taken by one `lock cmpxchg` and released by one
// exchange, both inline; a thread that finds it taken sleeps in the kernel, and only a release
// that sees a sleeper makes a system call. Entry points: lock, try_lock, unlock.
#pragma once

#include <atomic>

namespace edu {

// The three states, and why one word is enough:
//   kFree    nobody holds it;
//   kTaken   held, and no thread has gone to sleep on it since it was taken;
//   kWaited  held, and a thread may be asleep in futex_wait (or about to be).
// lock:   kFree -> kTaken by compare-and-swap (the uncontended case, the only one inline).
//         Otherwise (out of line, no spin: futex_mutex.cc says why) exchange in kWaited; if the
//         old state was kFree, the thread holds it (in state kWaited, which costs at most one
//         needless wake later); if not, futex_wait sleeps as long as the word still reads
//         kWaited, and the exchange is repeated on waking. Every sleeper has stored kWaited, so:
// unlock: exchange in kFree; an old state of kWaited means someone may sleep: wake one. The
//         woken thread stores kWaited again before it sleeps again, so a later sleeper is never
//         forgotten, even when a newcomer took the lock (kFree -> kTaken) in between.
// Acquire on every successful take and release on unlock order the critical sections; the
// kernel's futex_wait compares the word with kWaited atomically with going to sleep, so an
// unlock between the exchange and the sleep makes futex_wait return at once (no lost wake).
class FutexMutex {
public:
    void lock() {
        if (try_lock()) [[likely]] return;
        lock_contended();
    }
    // kFree -> kTaken, or false (nothing changed) if it is held.
    bool try_lock() {
        int expected = kFree;
        return state_.compare_exchange_strong(expected, kTaken, std::memory_order_acquire,
                                              std::memory_order_relaxed);
    }
    void unlock() {
        if (state_.exchange(kFree, std::memory_order_release) == kWaited) [[unlikely]] wake_one();
    }
    // A fork child: its one thread held the mutex across fork (prepare_fork) and nobody else
    // exists to wait for it, whatever state the parent's waiters left.
    void reset() { state_.store(kFree, std::memory_order_relaxed); }

private:
    static constexpr int kFree = 0;
    static constexpr int kTaken = 1;
    static constexpr int kWaited = 2;

    [[gnu::noinline, gnu::cold]] void lock_contended();
    [[gnu::noinline, gnu::cold]] void wake_one();

    std::atomic<int> state_{kFree};  // one of the three states above; the futex word
};

}  // namespace edu
