// contract/futex_mutex.cc: the slow paths of FutexMutex (contract/futex_mutex.h): the sleep of
// a thread that found the mutex taken, and the wake of an unlock that saw a sleeper.
#include "contract/futex_mutex.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace edu {

namespace {

// The loops re-check the word, so results are not needed; errno is kept as it was, since a
// malloc or free that waited must not leave EAGAIN or EINTR there (POSIX asks it of free).
void futex(std::atomic<int>* word, int op, int value) {
    int saved = errno;
    syscall(SYS_futex, reinterpret_cast<int*>(word), op, value, nullptr, nullptr, 0);
    errno = saved;
}

}  // namespace

// No spin before sleeping, on purpose (glibc's malloc takes its arena locks the same way).
// A spinning thread takes the mutex the moment the holder lets it go, and the holder, whose next
// malloc follows at once, then waits in turn: the mutex and the heap's hot lines cross between
// the cores on every call. Asleep, the waiter leaves the holder running with its cache warm for
// the microseconds a wake takes. 100 `pause`s (glibc's adaptive bound) made two threads of
// larson 4 times slower than this when they ran at once (docs/stage3_segments.md, "The lock").
void FutexMutex::lock_contended() {
    // Sleep until the holder's unlock wakes us. futex_wait returns at once if the word no longer
    // reads kWaited (an unlock came first), and spuriously on signals: the loop re-checks.
    while (state_.exchange(kWaited, std::memory_order_acquire) != kFree)
        futex(&state_, FUTEX_WAIT_PRIVATE, kWaited);
}

void FutexMutex::wake_one() { futex(&state_, FUTEX_WAKE_PRIVATE, 1); }

}  // namespace edu
