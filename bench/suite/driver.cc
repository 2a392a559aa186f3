// bench/suite/driver.cc: one benchmark workload, through whatever malloc the process has.
// The suite runs this binary once per (allocator, workload, threads), choosing the allocator
// with LD_PRELOAD (a stage's drop-in library, mimalloc, jemalloc) or none (glibc), so every
// allocator is measured exactly as a real program meets it. Prints one JSON line.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

// CPU seconds (user + system) the whole process has used so far, every thread included.
double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct XorShift32 {  // HAKMEM's generator: shifts 13, 17, 5
    uint32_t x;
    explicit XorShift32(uint32_t seed) : x(seed | 1) {}
    uint32_t next() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        return x;
    }
};

void touch(void* p) { *static_cast<volatile char*>(p) = 1; }

// Random mixed (HAKMEM): a ring of slots; each step frees an occupied slot or fills an empty one
// with 16 + (r & mask) bytes. An untimed prefault pass of cycles / 10 steps comes first.
uint64_t ring(uint64_t cycles, uint32_t mask, double* seconds) {
    const uint32_t slots = 8192;
    std::vector<void*> slot(slots, nullptr);
    XorShift32 rng(0x12345);
    auto step = [&] {
        uint32_t r = rng.next();
        void*& s = slot[r % slots];
        if (s) {
            std::free(s);
            s = nullptr;
        } else {
            s = std::malloc(16 + (r & mask));
            touch(s);
        }
    };
    for (uint64_t i = 0; i < cycles / 10; ++i) step();
    auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < cycles; ++i) step();
    for (void*& s : slot) std::free(s), s = nullptr;
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return cycles;
}

// Larson-like: each thread replaces random blocks in its own array; after each round the arrays
// move one thread along, so every block is freed by a thread that did not allocate it.
uint64_t larson(unsigned threads, uint64_t steps, double* seconds) {
    const unsigned slots = 1000, rounds = 20;
    std::vector<std::vector<void*>> arrays(threads, std::vector<void*>(slots, nullptr));
    std::mutex m;
    std::condition_variable cv;
    unsigned arrived = 0, generation = 0;
    auto barrier = [&] {
        std::unique_lock<std::mutex> lock(m);
        unsigned g = generation;
        if (++arrived == threads) {
            arrived = 0;
            ++generation;
            std::rotate(arrays.begin(), arrays.begin() + 1, arrays.end());  // hand arrays along
            cv.notify_all();
        } else {
            cv.wait(lock, [&] { return generation != g; });
        }
    };
    const uint64_t per_round = steps / rounds / threads + 1;
    auto worker = [&](unsigned t) {
        XorShift32 rng(0x9e3779b9u * (t + 1));
        for (unsigned round = 0; round < rounds; ++round) {
            std::vector<void*>& a = arrays[t];
            for (uint64_t i = 0; i < per_round; ++i) {
                uint32_t r = rng.next();
                void*& s = a[r % slots];
                std::free(s);
                s = std::malloc(16 + (r >> 16) % 497);
                touch(s);
            }
            barrier();
        }
    };
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (std::thread& th : pool) th.join();
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (auto& a : arrays)
        for (void* p : a) std::free(p);
    return 2 * per_round * rounds * threads;  // a free and a malloc per step
}

// xmalloc-like: producers allocate batches of blocks, consumers free them. With one thread the
// same thread does both, a batch at a time.
uint64_t xmalloc(unsigned threads, uint64_t blocks, double* seconds) {
    const unsigned batch = 64;
    unsigned pairs = threads / 2 ? threads / 2 : 1;
    const uint64_t batches = blocks / batch / pairs + 1;
    struct Queue {
        std::mutex m;
        std::condition_variable cv;
        std::deque<void**> items;
    };
    std::vector<Queue> queues(pairs);
    auto produce = [&](unsigned q, bool also_consume) {
        XorShift32 rng(0x2545f491u * (q + 1));
        for (uint64_t b = 0; b < batches; ++b) {
            void** items = static_cast<void**>(std::malloc(batch * sizeof(void*)));
            for (unsigned i = 0; i < batch; ++i) {
                items[i] = std::malloc(16 + rng.next() % 241);
                touch(items[i]);
            }
            if (also_consume) {
                for (unsigned i = 0; i < batch; ++i) std::free(items[i]);
                std::free(items);
                continue;
            }
            std::lock_guard<std::mutex> lock(queues[q].m);
            queues[q].items.push_back(items);
            queues[q].cv.notify_one();
        }
    };
    auto consume = [&](unsigned q) {
        for (uint64_t b = 0; b < batches; ++b) {
            void** items;
            {
                std::unique_lock<std::mutex> lock(queues[q].m);
                queues[q].cv.wait(lock, [&] { return !queues[q].items.empty(); });
                items = queues[q].items.front();
                queues[q].items.pop_front();
            }
            for (unsigned i = 0; i < batch; ++i) std::free(items[i]);
            std::free(items);
        }
    };
    auto start = std::chrono::steady_clock::now();
    if (threads == 1) {
        produce(0, true);
    } else {
        std::vector<std::thread> pool;
        for (unsigned q = 0; q < pairs; ++q) {
            pool.emplace_back(produce, q, false);
            pool.emplace_back(consume, q);
        }
        for (std::thread& th : pool) th.join();
    }
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return 2 * batches * (batch + 1) * pairs;
}

// False-sharing probe (cache-scratch-like): the main thread allocates one small object per
// thread, back to back; each thread frees its object, then repeatedly allocates an object of
// the same size and writes it many times. An allocator that hands neighbouring objects on one
// cache line to different threads makes those writes fight over the line.
uint64_t false_sharing(unsigned threads, uint64_t iterations, double* seconds) {
    const unsigned writes = 1000, size = 8;
    std::vector<char*> first(threads);
    for (unsigned t = 0; t < threads; ++t) first[t] = static_cast<char*>(std::malloc(size));
    const uint64_t per_thread = iterations / threads + 1;
    auto worker = [&](unsigned t) {
        std::free(first[t]);
        for (uint64_t i = 0; i < per_thread; ++i) {
            volatile char* p = static_cast<char*>(std::malloc(size));
            for (unsigned w = 0; w < writes; ++w) p[w % size] = static_cast<char>(p[w % size] + 1);
            std::free(const_cast<char*>(p));
        }
    };
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker, t);
    for (std::thread& th : pool) th.join();
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return per_thread * threads;
}

// Realloc growth: blocks grown step by step, as a vector or a string builder grows.
uint64_t realloc_growth(uint64_t steps, double* seconds) {
    const unsigned blocks = 256;
    std::vector<void*> block(blocks, nullptr);
    std::vector<uint32_t> size(blocks, 0);
    XorShift32 rng(0xabcdef);
    auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < steps; ++i) {
        uint32_t r = rng.next(), b = r % blocks;
        size[b] += 16 + (r >> 24);
        if (size[b] > 65536) size[b] = 16;  // start over, as a new buffer would
        block[b] = std::realloc(block[b], size[b]);
        touch(block[b]);
    }
    for (void* p : block) std::free(p);
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return steps;
}

// Fragmentation: interleaved small and large blocks; the small ones are freed, leaving holes
// only small requests fit; then medium requests arrive. Repeated in rounds.
uint64_t fragmentation(uint64_t pairs, double* seconds) {
    XorShift32 rng(0x51ed27);
    std::vector<void*> large;
    uint64_t ops = 0;
    auto start = std::chrono::steady_clock::now();
    for (int round = 0; round < 4; ++round) {
        std::vector<void*> small, medium;
        for (uint64_t i = 0; i < pairs; ++i) {
            small.push_back(std::malloc(16 + rng.next() % 49));
            large.push_back(std::malloc(256 + rng.next() % 769));
            touch(small.back()), touch(large.back());
        }
        for (void* p : small) std::free(p);
        for (uint64_t i = 0; i < pairs / 2; ++i) medium.push_back(std::malloc(100 + rng.next() % 101));
        for (void* p : medium) std::free(p);
        for (std::size_t i = 0; i < large.size() / 2; ++i) std::free(large[i]);
        large.erase(large.begin(), large.begin() + static_cast<std::ptrdiff_t>(large.size() / 2));
        ops += 3 * pairs + pairs / 2 * 2 + large.size();
    }
    for (void* p : large) std::free(p);
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return ops + large.size();
}

// Large-block churn (mimalloc-bench's malloc-large pattern): 20 buffers of 5..25 MiB; each step
// replaces a random one with a new buffer of a random size, and writes its first byte.
uint64_t malloc_large(uint64_t steps, double* seconds) {
    const unsigned buffers = 20;
    const uint32_t min_size = 5u << 20, spread = 20u << 20;
    std::vector<void*> buffer(buffers, nullptr);
    XorShift32 rng(0x1a2e);
    auto start = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < steps; ++i) {
        uint32_t r = rng.next();
        void*& b = buffer[r % buffers];
        std::free(b);
        b = std::malloc(min_size + rng.next() % spread);
        touch(b);
    }
    for (void*& b : buffer) std::free(b), b = nullptr;
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return steps;
}

// Runs `body(thread, seed)` on `threads` threads (the calling thread alone when 1) and returns
// the wall-clock seconds from the first start to the last join.
template <class Body>
double on_threads(unsigned threads, Body body) {
    auto start = std::chrono::steady_clock::now();
    if (threads == 1) {
        body(0u);
    } else {
        std::vector<std::thread> pool;
        for (unsigned t = 0; t < threads; ++t) pool.emplace_back(body, t);
        for (std::thread& th : pool) th.join();
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// cfrac-like (mimalloc-bench's cfrac factors numbers with continued fractions): short-lived
// multi-precision numbers of 2..40 words; each step makes a temporary or two from operands
// held in a small pool, replaces an operand with the result and frees the rest, so most
// blocks die young and in roughly the order they were born.
uint64_t cfrac_like(unsigned threads, uint64_t steps, double* seconds) {
    const uint64_t per_thread = steps / threads + 1;
    *seconds = on_threads(threads, [&](unsigned t) {
        XorShift32 rng(0xc0ffee + t);
        const unsigned pool = 16;
        std::vector<uint64_t*> operand(pool);
        std::vector<unsigned> words(pool);
        for (unsigned i = 0; i < pool; ++i) {
            words[i] = 2 + rng.next() % 8;
            operand[i] = static_cast<uint64_t*>(std::calloc(words[i], 8));
        }
        for (uint64_t i = 0; i < per_thread; ++i) {
            uint32_t r = rng.next();
            unsigned a = r % pool, b = (r >> 8) % pool, n = words[a] + words[b];
            if (n > 40) n = 2 + (r >> 16) % 8;
            auto* sum = static_cast<uint64_t*>(std::malloc(n * 8));
            for (unsigned w = 0; w < n; ++w) sum[w] = operand[a][w % words[a]] + w;
            auto* quotient = static_cast<uint64_t*>(std::malloc((n / 2 + 1) * 8));
            quotient[0] = sum[0];
            std::free(operand[b]);
            operand[b] = sum;
            words[b] = n;
            std::free(quotient);
        }
        for (uint64_t* p : operand) std::free(p);
    });
    return 3 * per_thread * threads;
}

// espresso-like (the logic minimiser allocates bit-set "cubes" and cover arrays): sets of
// 8..520 bytes built, copied, grown with realloc as covers gain cubes, and freed a whole cover
// at a time, with a few long-lived sets kept across covers.
uint64_t espresso_like(unsigned threads, uint64_t steps, double* seconds) {
    const uint64_t per_thread = steps / threads + 1;
    *seconds = on_threads(threads, [&](unsigned t) {
        XorShift32 rng(0xe5b7e550 + t);
        std::vector<void*> keep(64, nullptr);
        uint64_t done = 0;
        while (done < per_thread) {
            unsigned cubes = 8 + rng.next() % 120, capacity = 4, count = 0;
            auto** cover = static_cast<void**>(std::malloc(capacity * sizeof(void*)));
            for (unsigned c = 0; c < cubes; ++c, ++done) {
                if (count == capacity) {
                    capacity *= 2;
                    cover = static_cast<void**>(std::realloc(cover, capacity * sizeof(void*)));
                }
                std::size_t bytes = 8 + (rng.next() % 65) * 8;
                cover[count] = std::malloc(bytes);
                std::memset(cover[count], 0x55, bytes < 64 ? bytes : 64);
                ++count;
            }
            uint32_t r = rng.next();
            void*& slot = keep[r % keep.size()];
            std::free(slot);
            slot = std::malloc(16 + (r >> 8) % 200);
            touch(slot);
            for (unsigned c = 0; c < count; ++c) std::free(cover[c]);
            std::free(cover);
        }
        for (void* p : keep) std::free(p);
    });
    return 2 * per_thread * threads;
}

// glibc-simple (glibc's benchtests/bench-malloc-simple): allocate a batch of blocks of one
// small size, free them all in order, for sizes 16..256; the allocator's straight-line speed.
uint64_t glibc_simple(uint64_t steps, double* seconds) {
    const unsigned batch = 1000;
    std::vector<void*> block(batch);
    uint64_t rounds = steps / batch / 2 + 1, ops = 0;
    auto start = std::chrono::steady_clock::now();
    for (uint64_t r = 0; r < rounds; ++r) {
        std::size_t size = 16 << (r % 5);  // 16, 32, 64, 128, 256
        for (unsigned i = 0; i < batch; ++i) block[i] = std::malloc(size);
        for (unsigned i = 0; i < batch; ++i) std::free(block[i]);
        ops += 2 * batch;
    }
    *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return ops;
}

// glibc-thread (glibc's benchtests/bench-malloc-thread): each thread keeps a working set of
// 4096 slots and replaces a random one with a block of a random size (mostly small, a few up
// to 32 KiB); threads never share blocks.
uint64_t glibc_thread(unsigned threads, uint64_t steps, double* seconds) {
    const uint64_t per_thread = steps / threads + 1;
    *seconds = on_threads(threads, [&](unsigned t) {
        XorShift32 rng(0x61bc + t);
        std::vector<void*> slot(4096, nullptr);
        for (uint64_t i = 0; i < per_thread; ++i) {
            uint32_t r = rng.next();
            void*& s = slot[r % slot.size()];
            std::free(s);
            uint32_t kind = (r >> 12) & 15;
            std::size_t size = kind < 12 ? 8 + (r >> 16) % 120 : kind < 15 ? 128 + (r >> 16) % 1920 : 2048 + (r >> 16) % 30720;
            s = std::malloc(size);
            touch(s);
        }
        for (void* p : slot) std::free(p);
    });
    return 2 * per_thread * threads;
}

// alloc-test-like (mimalloc-bench's alloc-test: random allocation and freeing with sizes from
// a skewed distribution, per thread): a ring of 1024 slots, sizes 8..16 KiB with small ones far
// more likely, each block written across its first cache line.
uint64_t alloc_test(unsigned threads, uint64_t steps, double* seconds) {
    const uint64_t per_thread = steps / threads + 1;
    *seconds = on_threads(threads, [&](unsigned t) {
        XorShift32 rng(0xa11c + t);
        std::vector<void*> slot(1024, nullptr);
        for (uint64_t i = 0; i < per_thread; ++i) {
            uint32_t r = rng.next();
            void*& s = slot[r % slot.size()];
            std::free(s);
            unsigned shift = 3 + __builtin_ctz((r >> 10) | 0x800);  // 8 << 0..11, halving odds
            std::size_t size = (std::size_t{1} << shift) + (r >> 22) % (std::size_t{1} << shift);
            s = std::malloc(size);
            std::memset(s, 1, size < 64 ? size : 64);
        }
        for (void* p : slot) std::free(p);
    });
    return 2 * per_thread * threads;
}

// mstress-like (mimalloc's test-stress): threads allocate objects of varying sizes into a
// shared array of slots; each step a thread frees or replaces a random slot, whatever thread
// made it, so many frees are remote; now and then an object is large (up to 256 KiB); some
// objects are kept in a thread-local list and freed in bulk every so often.
uint64_t mstress(unsigned threads, uint64_t steps, double* seconds) {
    const unsigned slots = 4096;
    std::vector<std::atomic<void*>> shared(slots);
    for (auto& s : shared) s.store(nullptr);
    const uint64_t per_thread = steps / threads + 1;
    *seconds = on_threads(threads, [&](unsigned t) {
        XorShift32 rng(0x5eed + 7919 * t);
        std::vector<void*> local;
        for (uint64_t i = 0; i < per_thread; ++i) {
            uint32_t r = rng.next();
            std::size_t size = (r & 255) == 0 ? 4096 + (r >> 8) % (252 * 1024) : 8 + (r >> 8) % 248;
            void* p = std::malloc(size);
            std::memset(p, static_cast<int>(t), size < 32 ? size : 32);
            if ((r >> 28) < 4) {
                local.push_back(p);
                if (local.size() == 256) {
                    for (void* q : local) std::free(q);
                    local.clear();
                }
            } else {
                std::free(shared[(r >> 4) % slots].exchange(p, std::memory_order_acq_rel));
            }
        }
        for (void* q : local) std::free(q);
    });
    for (auto& s : shared) std::free(s.exchange(nullptr));
    return 2 * per_thread * threads;
}

}  // namespace

int main(int argc, char** argv) {
    // --threaded: a thread is started and joined before the workload, so that a one-thread
    // workload runs in a process glibc counts as multi-threaded (__libc_single_threaded false):
    // stages 1-3 then take their lock on every call, which nobody contends.
    const bool threaded = argc > 1 && std::strcmp(argv[1], "--threaded") == 0;
    if (threaded) --argc, ++argv;
    if (argc != 4) {
        std::fprintf(stderr,
                     "usage: driver [--threaded] WORKLOAD THREADS SIZE\n"
                     "  WORKLOAD: ring | small | larson | xmalloc | false-sharing | realloc | fragment |\n"
                     "            malloc-large | cfrac | espresso | glibc-simple | glibc-thread | alloc-test |\n"
                     "            mstress\n"
                     "  SIZE: operations (or iterations) to run\n"
                     "  --threaded: start and join a thread first (the lock of stages 1-3, uncontended)\n");
        return 2;
    }
    std::string workload = argv[1];
    unsigned threads = static_cast<unsigned>(std::atoi(argv[2]));
    uint64_t size = std::strtoull(argv[3], nullptr, 10);
    if (threads == 0 || size == 0) return 2;
    if (threaded) std::thread([] { std::free(std::malloc(1)); }).join();
    double seconds = 0;
    uint64_t ops;
    // CPU time is counted around the whole workload call, its untimed setup included (the same
    // for every allocator); on a shared machine it does not count the time spent waiting for
    // a core, which the wall-clock `seconds` does.
    double cpu_start = cpu_seconds();
    if (workload == "ring") ops = ring(size, 0x3ff, &seconds);
    else if (workload == "small") ops = ring(size, 0x70, &seconds);  // 16..128 bytes
    else if (workload == "larson") ops = larson(threads, size, &seconds);
    else if (workload == "xmalloc") ops = xmalloc(threads, size, &seconds);
    else if (workload == "false-sharing") ops = false_sharing(threads, size, &seconds);
    else if (workload == "realloc") ops = realloc_growth(size, &seconds);
    else if (workload == "fragment") ops = fragmentation(size, &seconds);
    else if (workload == "malloc-large") ops = malloc_large(size, &seconds);
    else if (workload == "cfrac") ops = cfrac_like(threads, size, &seconds);
    else if (workload == "espresso") ops = espresso_like(threads, size, &seconds);
    else if (workload == "glibc-simple") ops = glibc_simple(size, &seconds);
    else if (workload == "glibc-thread") ops = glibc_thread(threads, size, &seconds);
    else if (workload == "alloc-test") ops = alloc_test(threads, size, &seconds);
    else if (workload == "mstress") ops = mstress(threads, size, &seconds);
    else {
        std::fprintf(stderr, "driver: unknown workload '%s'\n", workload.c_str());
        return 2;
    }
    double cpu = cpu_seconds() - cpu_start;
    // Peak RSS of this program image: VmHWM. (getrusage's ru_maxrss survives execve, so a
    // child of a large parent, such as the Python runner, would report the parent's peak.)
    long peak_kib = 0;
    if (FILE* status = std::fopen("/proc/self/status", "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, status))
            if (std::sscanf(line, "VmHWM: %ld kB", &peak_kib) == 1) break;
        std::fclose(status);
    }
    std::printf("{\"workload\": \"%s\", \"threads\": %u, \"ops\": %llu, \"seconds\": %.6f, \"ops_per_second\": %.1f, "
                "\"cpu_seconds\": %.6f, \"peak_rss_kib\": %ld}\n",
                workload.c_str(), threads, static_cast<unsigned long long>(ops), seconds,
                seconds > 0 ? double(ops) / seconds : 0.0, cpu, peak_kib);
    return 0;
}
