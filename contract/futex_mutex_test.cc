// contract/futex_mutex_test.cc: proves FutexMutex (contract/futex_mutex.h) excludes, wakes and
// survives fork. Threads update plain (non-atomic) fields under it, each section checking what
// the one before left, so a lost exclusion shows as a wrong total or a torn pair here and as a
// data race under TSan; a thread that must sleep on it is woken by the unlock (and keeps its
// errno through an interrupted sleep); a fork child taken while it is held gets it back with
// reset. The stages' batteries run it through contract/locked.h (tests/threads.cc).
#include <doctest/doctest.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "contract/futex_mutex.h"

namespace edu {
namespace {

constexpr int kThreads = 4;        // on 2 cores: holders are preempted, waiters sleep
constexpr int kRounds = 100'000;   // per thread

TEST_CASE("threads updating plain fields under the mutex see every section whole") {
    FutexMutex mutex;
    long total = 0;        // incremented once a section
    long first = 0;        // first == second at every unlock
    long second = 0;
    std::atomic<long> torn{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < kThreads; ++t) {
        pool.emplace_back([&] {
            for (int i = 0; i < kRounds; ++i) {
                mutex.lock();
                if (first != second) torn.fetch_add(1, std::memory_order_relaxed);
                ++first;
                ++total;
                ++second;
                mutex.unlock();
            }
        });
    }
    for (std::thread& th : pool) th.join();
    CHECK(total == long{kThreads} * kRounds);
    CHECK(first == second);
    CHECK(torn.load() == 0);
}

void ignore_signal(int) {}

TEST_CASE("a thread asleep on the mutex is woken by the unlock, its errno kept") {
    FutexMutex mutex;
    std::atomic<bool> got{false};
    std::atomic<int> errno_after{-1};
    struct sigaction action{};
    action.sa_handler = ignore_signal;  // no SA_RESTART: the signal ends futex_wait with EINTR
    struct sigaction previous{};
    REQUIRE(sigaction(SIGUSR1, &action, &previous) == 0);
    mutex.lock();
    std::thread waiter([&] {
        errno = 0;
        mutex.lock();  // sleeps in futex_wait
        errno_after.store(errno);
        got.store(true);
        mutex.unlock();
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // time to fall asleep
    CHECK_FALSE(got.load());
    pthread_kill(waiter.native_handle(), SIGUSR1);  // interrupted, the waiter must sleep again
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_FALSE(got.load());
    mutex.unlock();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!got.load() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    if (!got.load()) {
        waiter.detach();  // still asleep: an unlock that wakes nobody
        FAIL("the waiter never woke after the unlock");
    }
    waiter.join();
    // A malloc or free that waited must leave errno as it was (POSIX requires it of free).
    CHECK_MESSAGE(errno_after.load() == 0, "the futex call's EINTR leaked into errno");
    mutex.lock();  // and the mutex is free again, whatever state the waiter left
    mutex.unlock();
    sigaction(SIGUSR1, &previous, nullptr);
}

TEST_CASE("a fork child of a thread holding the mutex takes it again after reset") {
    static FutexMutex mutex;  // static: the child uses its copy of the same object
    mutex.lock();
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        alarm(10);  // a child that cannot take the mutex dies of SIGALRM instead of hanging
        mutex.reset();
        mutex.lock();
        mutex.unlock();
        _exit(0);
    }
    mutex.unlock();
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace edu
