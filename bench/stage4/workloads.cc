// bench/stage4/workloads.cc: larson-like, xmalloc-like and cache-scratch-like workloads over
// the process's malloc and free. Compiled with -fno-builtin, so every call reaches the
// allocator; the harness itself allocates nothing inside the timed part.
#include "bench/stage4/workloads.h"

#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <vector>

namespace edu::bench {
namespace {

using Clock = std::chrono::steady_clock;

inline uint32_t xorshift32(uint32_t& x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

// Pins the calling thread to the (worker % n)-th of the n cores the process may use, so worker
// i and worker i + n share a core and no two workers of fewer than n share one. Unpinned, the
// scheduler sometimes put both threads of a two-thread run on one core for a while: the same
// allocator then ran anywhere between one and five times slower from one run to the next.
// Threads a pinned thread creates (larson's generations) inherit its core.
void pin_to_core(unsigned worker) {
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return;
    int n = CPU_COUNT(&allowed);
    if (n <= 0) return;
    unsigned want = worker % static_cast<unsigned>(n);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (!CPU_ISSET(cpu, &allowed)) continue;
        if (want-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            pthread_setaffinity_np(pthread_self(), sizeof one, &one);
            return;
        }
    }
}

[[noreturn]] void out_of_memory() {
    std::abort();
}

inline void* take(std::size_t size, uint32_t r) {
    void* p = std::malloc(size);
    if (!p) out_of_memory();
    *static_cast<volatile char*>(p) = static_cast<char>(r);   // touch it, as a program would
    return p;
}

// Starts the clock, lets the threads run `seconds`, raises `stop`, joins them: the time the
// workload took, including the threads' last steps.
template <class Join>
double timed(double seconds, std::atomic<bool>& stop, Join join_all) {
    auto start = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    stop.store(true, std::memory_order_relaxed);
    join_all();
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// ---- larson ------------------------------------------------------------------------------------

// The shape of larson's usual invocation (mimalloc-bench: `larson 5 8 1000 5000 100 4141 N`):
// 8..1000-byte blocks, 5000 per worker, and 100 rounds of 5000 replacements before a thread
// hands its array to a new thread.
constexpr int kLarsonBlocks = 5000;          // per worker
constexpr int kLarsonGeneration = 100 * kLarsonBlocks;   // replacements before the thread hands over

struct alignas(64) LarsonSlot {
    std::vector<void*> blocks;
    uint32_t rng = 0;
    uint64_t operations = 0;
};

void larson_generation(LarsonSlot* slot, const std::atomic<bool>* stop) {
    uint32_t rng = slot->rng;
    void** blocks = slot->blocks.data();
    int done = 0;
    for (; done < kLarsonGeneration; ++done) {
        if ((done & 255) == 0 && stop->load(std::memory_order_relaxed)) break;
        uint32_t r = xorshift32(rng);
        uint32_t at = r % kLarsonBlocks;
        std::free(blocks[at]);
        blocks[at] = take(8 + (r >> 16) % 993, r);
    }
    slot->rng = rng;
    slot->operations += static_cast<uint64_t>(done);
}

// ---- xmalloc ------------------------------------------------------------------------------------

constexpr int kBatch = 128;
constexpr unsigned kRing = 16;

// One producer (the previous thread in the ring), one consumer (its owner).
struct alignas(64) Mailbox {
    struct alignas(64) Slot {
        std::atomic<int> full{0};
        void* blocks[kBatch];
    };
    Slot slots[kRing];
    alignas(64) unsigned head = 0;   // the producer's
    alignas(64) unsigned tail = 0;   // the consumer's
    alignas(64) uint64_t freed = 0;  // the consumer's
};

// Frees every batch waiting in `box`; returns the blocks freed.
int drain(Mailbox& box) {
    int n = 0;
    for (;;) {
        Mailbox::Slot& slot = box.slots[box.tail % kRing];
        if (!slot.full.load(std::memory_order_acquire)) return n;
        for (void* p : slot.blocks) std::free(p);
        slot.full.store(0, std::memory_order_release);
        ++box.tail;
        n += kBatch;
    }
}

void xmalloc_thread(unsigned worker, Mailbox* inbox, Mailbox* outbox, uint32_t seed, const std::atomic<bool>* stop) {
    pin_to_core(worker);
    uint32_t rng = seed;
    while (!stop->load(std::memory_order_relaxed)) {
        inbox->freed += static_cast<uint64_t>(drain(*inbox));
        Mailbox::Slot& slot = outbox->slots[outbox->head % kRing];
        if (slot.full.load(std::memory_order_acquire)) {   // the next thread is behind
            std::this_thread::yield();
            continue;
        }
        for (void*& p : slot.blocks) {
            uint32_t r = xorshift32(rng);
            p = take(16 + (r >> 8) % 497, r);
        }
        slot.full.store(1, std::memory_order_release);
        ++outbox->head;
    }
}

// ---- cache-scratch ------------------------------------------------------------------------------

constexpr int kWrites = 1000;

void scratch_thread(unsigned worker, void* given, uint64_t* writes, const std::atomic<bool>* stop) {
    pin_to_core(worker);
    std::free(given);
    uint64_t n = 0;
    while (!stop->load(std::memory_order_relaxed)) {
        auto* p = static_cast<volatile char*>(take(8, 1));
        for (int i = 0; i < kWrites; ++i) p[i & 7] = static_cast<char>(p[i & 7] + 1);
        std::free(const_cast<char*>(p));
        n += kWrites;
    }
    *writes = n;
}

}  // namespace

Outcome run_larson(int threads, double seconds) {
    std::vector<LarsonSlot> slots(static_cast<std::size_t>(threads));
    uint32_t rng = 0x9e3779b9u;
    for (LarsonSlot& slot : slots) {   // the main thread makes every first block
        slot.rng = xorshift32(rng) | 1;
        slot.blocks.resize(kLarsonBlocks);
        for (void*& p : slot.blocks) p = take(8 + xorshift32(rng) % 993, 1);
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> managers;
    for (LarsonSlot& slot : slots) {
        auto worker = static_cast<unsigned>(managers.size());
        managers.emplace_back([&slot, &stop, worker] {
            pin_to_core(worker);
            while (!stop.load(std::memory_order_relaxed)) std::thread(larson_generation, &slot, &stop).join();
        });
    }
    double elapsed = timed(seconds, stop, [&] {
        for (std::thread& m : managers) m.join();
    });
    uint64_t operations = 0;
    for (LarsonSlot& slot : slots) {
        operations += slot.operations;
        for (void* p : slot.blocks) std::free(p);
    }
    return Outcome{operations, elapsed};
}

Outcome run_xmalloc(int threads, double seconds) {
    std::vector<Mailbox> boxes(static_cast<std::size_t>(threads));
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back(xmalloc_thread, static_cast<unsigned>(t), &boxes[static_cast<std::size_t>(t)],
                             &boxes[static_cast<std::size_t>((t + 1) % threads)], 0x1234567u + static_cast<uint32_t>(t) * 7919u,
                             &stop);
    double elapsed = timed(seconds, stop, [&] {
        for (std::thread& w : workers) w.join();
    });
    uint64_t operations = 0;
    for (Mailbox& box : boxes) {
        operations += box.freed;
        drain(box);   // untimed: what was still in flight
    }
    return Outcome{operations, elapsed};
}

Outcome run_scratch(int threads, double seconds) {
    std::vector<void*> objects;
    for (int t = 0; t < threads; ++t) objects.push_back(take(8, 1));   // side by side, in main's heap
    std::vector<uint64_t> writes(static_cast<std::size_t>(threads) * 8, 0);   // one cache line apart
    std::atomic<bool> stop{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back(scratch_thread, static_cast<unsigned>(t), objects[static_cast<std::size_t>(t)], &writes[static_cast<std::size_t>(t) * 8], &stop);
    double elapsed = timed(seconds, stop, [&] {
        for (std::thread& w : workers) w.join();
    });
    uint64_t operations = 0;
    for (int t = 0; t < threads; ++t) operations += writes[static_cast<std::size_t>(t) * 8];
    return Outcome{operations, elapsed};
}

}  // namespace edu::bench
