// stage4_threads/testing.cc: the shared test helpers and main() of stage 4's test binaries.
#include "stage4_threads/testing.h"

#include <doctest/doctest.h>

#include <thread>

#include "stage4_threads/os.h"
#include "stage4_threads/registry.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/secure.h"
#include "stage4_threads/stage4.h"

namespace edu::stage4::testing {

const Api& api() { return *descriptor.thread_safe; }
Heap* my_heap() { return t_heap; }
uint64_t footprint() { return os_counters().footprint.load(std::memory_order_relaxed); }

std::size_t remote_count(const Page* page) {
    std::size_t n = 0;
    for (const Block* b = block_of(page->xthread_free.load(std::memory_order_acquire)); b; b = next_of(page, b))
        ++n;
    return n;
}

std::size_t delayed_count(const Heap* heap) {
    std::size_t n = 0;
    for (const Block* b = heap->delayed_free.load(std::memory_order_acquire); b; b = chain_next(b))
        ++n;
    return n;
}

Delay delay_state(const Page* page) { return delay_of(page->xthread_free.load(std::memory_order_acquire)); }

void on_thread(const std::function<void()>& body) { std::thread(body).join(); }

ParkedThread::ParkedThread(std::function<void()> hold, std::function<void()> leave) {
    thread_ = std::thread([this, hold = std::move(hold), leave = std::move(leave)] {
        hold();
        std::unique_lock<std::mutex> lock(mutex_);
        holding_ = true;
        cv_.notify_all();
        cv_.wait(lock, [this] { return released_; });
        lock.unlock();
        leave();
    });
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return holding_; });
}

void ParkedThread::release() {
    if (!thread_.joinable()) return;
    {
        std::lock_guard<std::mutex> lock(mutex_);
        released_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

ParkedThread::~ParkedThread() { release(); }

}  // namespace edu::stage4::testing

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    return context.run();
}
