// contract/futex_mutex.cc: the slow paths of FutexMutex (contract/futex_mutex.h): the spin and
// the sleep of a thread that found the mutex taken, and the wake of an unlock that saw a sleeper.
#include "contract/futex_mutex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace edu {

namespace {

// Loads of the word before sleeping. A locked call of stages 1-3 holds the mutex for tens to a
// few hundred nanoseconds, and each `pause` waits some 40-140 cycles (by CPU generation), so
// 100 rounds (one to five microseconds) outlast most critical sections and cost less than a
// futex_wait and the wake that ends it. glibc's adaptive mutex spins up to 100 times too. On the
// loaded 2-core machine 0, 30, 100 and 1000 measured alike (docs/stage3_segments.md, "The lock").
constexpr int kSpins = 100;

// The loops re-check the word, so results are not needed; errno is kept as it was, since a
// malloc or free that waited must not leave EAGAIN or EINTR there (POSIX asks it of free).
void futex(std::atomic<int>* word, int op, int value) {
    int saved = errno;
    syscall(SYS_futex, reinterpret_cast<int*>(word), op, value, nullptr, nullptr, 0);
    errno = saved;
}

}  // namespace

void FutexMutex::lock_contended() {
    for (int i = 0; i < kSpins; ++i) {
        __builtin_ia32_pause();  // a spin-wait hint: the core spends less and leaves the loop
                                 // without the pipeline flush a changed word would otherwise cost
        int seen = state_.load(std::memory_order_relaxed);
        if (seen == kFree && state_.compare_exchange_weak(seen, kTaken, std::memory_order_acquire,
                                                          std::memory_order_relaxed))
            return;
    }
    // Sleep until the holder's unlock wakes us. futex_wait returns at once if the word no longer
    // reads kWaited (an unlock came first), and spuriously on signals: the loop re-checks.
    while (state_.exchange(kWaited, std::memory_order_acquire) != kFree)
        futex(&state_, FUTEX_WAIT_PRIVATE, kWaited);
}

void FutexMutex::wake_one() { futex(&state_, FUTEX_WAKE_PRIVATE, 1); }

}  // namespace edu
