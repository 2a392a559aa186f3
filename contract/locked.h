// contract/locked.h: the thread-safe entry of a single-threaded stage, written once.
// `Locked<kApi>::api` wraps every call of `kApi` in one mutex (contract/futex_mutex.h), taken
// only once the process has a second thread, and `Locked<kApi>` supplies the fork hooks that
// keep that mutex usable in a child. Stages 1-3 use it; stage 4 needs no lock.
#pragma once

#include <sys/single_threaded.h>

#include "contract/allocator.h"
#include "contract/fork_owner.h"
#include "contract/futex_mutex.h"

namespace edu {

// Why a call may skip the lock while glibc's `__libc_single_threaded` is true (glibc's own
// malloc skips its arena atomics on the same flag):
//  1. The flag is true only while the process has exactly one thread; glibc's pthread_create
//     clears it as its first act, before it allocates the new thread's stack and TLS (its
//     calloc of the DTV therefore already takes the lock) and before the clone that starts it.
//  2. A call that read `true` runs in that one thread. No other thread can appear before the
//     call returns, because only a running thread creates threads and this one is inside the
//     allocator, which never calls pthread_create. So the unlocked call is over before any
//     second thread exists, and it cannot overlap a locked one.
//  3. Every thread created later reads `false`: the store precedes the clone, and thread
//     creation orders everything the creator did before it with everything the new thread does.
//     From then on every call takes the mutex, exactly as before this optimisation.
//  4. A fork child keeps the flag as it was (glibc never sets it back to true: fork does not
//     touch it); a libc that set it true again would be right here too, since the child's
//     one thread is the forking one and after_fork_child gave it a fresh mutex (though not for
//     copies of a stage's table taken before a mode change, see stage 3's S3.50). A Guard
//     remembers whether it locked, so a call never unlocks a mutex it did not take.
// A thread started behind glibc's back (a raw clone) leaves the flag true: such a thread must
// not call malloc at all, with this library or with glibc's.
//
// Why the mutex is FutexMutex rather than a pthread_mutex_t, and why it is still right:
//  5. Exclusion and ordering: a call takes it with an acquire compare-and-swap (or an acquire
//     exchange after sleeping) and leaves it with a release exchange, so each locked call sees
//     every write of the one before it, as with pthread_mutex_lock/unlock; futex_mutex.h shows
//     that no waiter sleeps through its wake. Its atomics are std::atomic, so ThreadSanitizer
//     sees the ordering (contract:futex_mutex_test and the batteries' thread cases run under it).
//  6. Cost: free, it is one inline `lock cmpxchg` to take and one exchange to release; glibc's
//     mutex is a call into libc that checks its kind and records its owner. The locked path
//     of a call that nobody contends went from 88-92 to 21-25 instructions above the unlocked
//     one in stages 1-3 (callgrind, docs/stage3_segments.md, "The lock"). Like glibc's mutex
//     it never spins: its waiter sleeps at once, which keeps a hot lock on one core.
//  7. Fork: prepare_fork takes it like any call, so no call is inside the stage when fork
//     copies the heap; the parent releases it; the child's one thread is the one that holds it
//     and nobody else can wait on the child's copy, so reset() makes it free, whatever state
//     the parent's waiters had left in the word.
//  8. Between prepare_fork and after_fork_*, the forking thread may call again: glibc runs the
//     prepare handlers last registered first, and the child handlers first registered first,
//     and the drop-in library registers its hooks in its constructor, after the constructors of
//     the libraries it was loaded with. A library that registered a handler there which
//     allocates (in prepare, or in the child) called malloc with the mutex held by its own
//     thread, and waited for itself for ever (glibc's malloc takes its locks inside fork, after
//     every prepare handler and before every child handler). So prepare_fork records its thread
//     as `fork_owner`, and a call that finds the mutex taken asks, off the uncontended path,
//     whether its own thread holds it for a fork: then it runs without taking it, as the holder,
//     no other thread being able to enter (they wait, or do not exist in the child). Only the
//     holder ever reads its own id there; another thread reads 0 or the holder's, and waits.
//     The debug layer's locks and the mapped blocks' lock do the same (contract/fork_owner.h).
template <const Api& kApi>
struct Locked {
    // A constant-initialised mutex works before main and before any constructor runs.
    static constinit inline FutexMutex mutex;
    // The thread that holds `mutex` for a fork (point 8).
    static constinit inline ForkOwner fork_owner;

    class Guard {
    public:
        Guard() : locked_(!__libc_single_threaded) {
            if (!locked_ || mutex.try_lock()) [[likely]] return;
            if (fork_owner.is_me()) locked_ = false;   // point 8: it runs as the holder
            else mutex.lock();
        }
        ~Guard() {
            if (locked_) mutex.unlock();
        }
        Guard(const Guard&) = delete;
        Guard& operator=(const Guard&) = delete;

    private:
        bool locked_;  // this call took the mutex and must release it
    };

    // Every entry is `call<kDirect, &Api::entry>`: while the process has one thread, a test of
    // the flag and the entry of `kDirect`; the locked path is out of line, so the unlocked one
    // builds no stack frame (the preload's jump, this test, the stage: nothing else). `kDirect`
    // is `kApi` unless a stage whose table changes with its options hands the unlocked path a
    // constant table of its own (`Direct` below), which the compiler calls directly, inlined.
    template <const Api& kDirect, auto kEntry, class... Args>
    static auto call(Args... args) {
        if (__libc_single_threaded) [[likely]] return (kDirect.*kEntry)(args...);
        return call_locked<kEntry>(args...);
    }
    template <auto kEntry, class... Args>
    [[gnu::noinline]] static auto call_locked(Args... args) {
        Guard g;  // reads the flag again and locks unless it says one thread (point 4 above)
        return (kApi.*kEntry)(args...);
    }

    // The thread-safe table whose unlocked path runs `kDirect` and whose locked path runs
    // `kApi`, read under the mutex. Stage 3 keeps one per mode (stage3_segments/stage3.cc).
    template <const Api& kDirect>
    struct Direct {
        static void* malloc(std::size_t size) { return call<kDirect, &Api::malloc>(size); }
        static void free(void* ptr) { call<kDirect, &Api::free>(ptr); }
        static void* calloc(std::size_t n, std::size_t size) { return call<kDirect, &Api::calloc>(n, size); }
        static void* realloc(void* ptr, std::size_t size) { return call<kDirect, &Api::realloc>(ptr, size); }
        static void* aligned_alloc(std::size_t alignment, std::size_t size) {
            return call<kDirect, &Api::aligned_alloc>(alignment, size);
        }
        static std::size_t usable_size(const void* ptr) { return call<kDirect, &Api::usable_size>(ptr); }
        static CheckResult check() { return call<kDirect, &Api::check>(); }
        static void walk(WalkFn visit, void* context) { call<kDirect, &Api::walk>(visit, context); }
        static Stats stats() { return call<kDirect, &Api::stats>(); }
        static constexpr Api api = {&malloc, &free,  &calloc, &realloc, &aligned_alloc,
                                    &usable_size, &check, &walk, &stats};
    };

    // The fork hooks always take the mutex: cheap, once per fork, and right whatever the flag
    // (point 7 above).
    static void prepare_fork() {
        mutex.lock();
        fork_owner.set();
    }
    static void after_fork_parent() {
        fork_owner.clear();
        mutex.unlock();
    }
    // The child has one thread, the one that forked and holds the mutex: a free one is right.
    static void after_fork_child() {
        fork_owner.clear();
        mutex.reset();
    }

    static constexpr const Api& api = Direct<kApi>::api;
};

}  // namespace edu
