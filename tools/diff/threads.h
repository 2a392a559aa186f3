// tools/diff/threads.h: the other threads of a trace, for operations marked '@2', '@3', ...
// `Helpers::run(thread, job)` hands `job` to helper thread `thread` and waits until it is done:
// one thread runs at a time, so a replay with remote frees is as deterministic as one without,
// and whatever the caller does between two hand-offs (walk the heap, check it) finds every
// helper parked. Helpers start on first use and end when the object is destroyed.
#pragma once

#include <pthread.h>

#include <utility>

#include "tools/diff/workload.h"

namespace edu::diff {

class Helpers {
public:
    Helpers() = default;
    Helpers(const Helpers&) = delete;
    Helpers& operator=(const Helpers&) = delete;
    ~Helpers();

    // Runs job() on trace thread `thread` (1: the caller itself; 2..kMaxThreads: a helper).
    template <class Job>
    void run(unsigned thread, Job&& job) {
        if (thread <= 1) return job();
        hand_off(thread, [](void* j) { (*static_cast<Job*>(j))(); }, &job);
    }
    // True once helper `thread` has run a job.
    bool started(unsigned thread) const { return thread >= 2 && thread <= kMaxThreads && slots_[thread].started; }

private:
    struct Slot {
        pthread_t id{};
        pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
        pthread_cond_t wake = PTHREAD_COND_INITIALIZER;   // a job (or quit) was posted
        pthread_cond_t done = PTHREAD_COND_INITIALIZER;   // the job finished
        void (*job)(void*) = nullptr;
        void* arg = nullptr;
        bool started = false, quit = false;
    };
    void hand_off(unsigned thread, void (*job)(void*), void* arg);
    static void* serve(void* slot);

    Slot slots_[kMaxThreads + 1];
};

}  // namespace edu::diff
