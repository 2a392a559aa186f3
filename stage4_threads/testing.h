// stage4_threads/testing.h: what stage 4's own tests share: the stage's entry points, the
// calling thread's heap, list lengths, a thread that runs a body and exits (so its heap is
// abandoned), a thread parked while it holds a heap, and main() (testing.cc). doctest's runner and run_in_child come from
// //tests:support.
#pragma once

#include <cstddef>
#include <cstdint>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "contract/allocator.h"
#include "stage4_threads/types.h"

namespace edu::stage4::testing {

const Api& api();                 // descriptor.thread_safe (the same table as single_thread)
Heap* my_heap();                  // t_heap of the calling thread
uint64_t footprint();

// Blocks on a page's xthread_free list (the caller must own the page or nobody may).
std::size_t remote_count(const Page* page);
std::size_t delayed_count(const Heap* heap);
Delay delay_state(const Page* page);

// Runs `body` on a new thread and joins it: the thread's heap is abandoned when it exits.
void on_thread(const std::function<void()>& body);

// A thread parked while its heap is in use: it runs `hold` (a malloc gives it a heap), then
// waits until release() lets it run `leave` and exit. The constructor returns once `hold` has
// run; release() joins the thread, and the destructor releases it if the test did not.
class ParkedThread {
public:
    ParkedThread(std::function<void()> hold, std::function<void()> leave);
    ~ParkedThread();
    ParkedThread(const ParkedThread&) = delete;
    ParkedThread& operator=(const ParkedThread&) = delete;
    void release();

private:
    std::mutex mutex_;
    std::condition_variable cv_;
    bool holding_ = false, released_ = false;
    std::thread thread_;
};

}  // namespace edu::stage4::testing
