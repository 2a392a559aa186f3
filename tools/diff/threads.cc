// tools/diff/threads.cc: helper threads that run one job at a time, handed off and waited for.
#include "tools/diff/threads.h"

#include <cstdio>
#include <cstdlib>

namespace edu::diff {

void* Helpers::serve(void* raw) {
    auto* s = static_cast<Slot*>(raw);
    pthread_mutex_lock(&s->mutex);
    for (;;) {
        while (!s->job && !s->quit) pthread_cond_wait(&s->wake, &s->mutex);
        if (!s->job) break;   // quit, with nothing left to do
        s->job(s->arg);       // with the slot's mutex held: the caller waits on `done` meanwhile
        s->job = nullptr;
        pthread_cond_signal(&s->done);
    }
    pthread_mutex_unlock(&s->mutex);
    return nullptr;
}

void Helpers::hand_off(unsigned thread, void (*job)(void*), void* arg) {
    if (thread > kMaxThreads) {
        std::fprintf(stderr, "stagediff: no thread %u (threads are 1..%u)\n", thread, kMaxThreads);
        std::abort();
    }
    Slot& s = slots_[thread];
    if (!s.started) {
        if (pthread_create(&s.id, nullptr, &serve, &s) != 0) {
            std::fputs("stagediff: cannot start a helper thread\n", stderr);
            std::_Exit(2);
        }
        s.started = true;
    }
    // The mutex orders everything this thread did before the hand-off with the job, and the
    // job with everything after it: the helper and the caller never run at once.
    pthread_mutex_lock(&s.mutex);
    s.job = job;
    s.arg = arg;
    pthread_cond_signal(&s.wake);
    while (s.job) pthread_cond_wait(&s.done, &s.mutex);
    pthread_mutex_unlock(&s.mutex);
}

Helpers::~Helpers() {
    for (Slot& s : slots_) {
        if (!s.started) continue;
        pthread_mutex_lock(&s.mutex);
        s.quit = true;
        pthread_cond_signal(&s.wake);
        pthread_mutex_unlock(&s.mutex);
        pthread_join(s.id, nullptr);
    }
}

}  // namespace edu::diff
