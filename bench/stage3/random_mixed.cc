// bench/stage3/random_mixed.cc: stage 3 against mimalloc (and glibc) on HAKMEM's random-mixed
// ring (ANCHORS.md): ws slots, xorshift32 (13, 17, 5), slot r % ws freed if occupied, else
// 16 + (r & 0x3FF) bytes allocated there and their first byte written; an untimed prefault of
// cycles / 10 steps, then the timed loop plus drain; ops/s = cycles / CPU-s. Also 16..128 B.
// Allocators alternate in each repetition; medians and ratios to mimalloc are printed.
// Usage: random_mixed [cycles=10000000] [repetitions=5] [allocator prefix] [slots] (--help)
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iterator>
#include <vector>

#include "bench/stage3/allocators.h"

namespace edu::bench {
namespace {

struct Workload {
    const char* name;
    uint32_t slots;
    bool small;   // 16..128 bytes instead of 16..1039
};

// The thread's CPU time (user + system, page faults included): on a shared machine the wall
// clock also counts other processes.
double now_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline uint32_t xorshift32(uint32_t& x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

inline std::size_t size_of_step(uint32_t r, bool small) {
    return small ? 16 + (r >> 10) % 113 : 16 + (r & 0x3ff);
}

// Runs `steps` steps of the ring; the same generator state gives the same sequence to everyone.
inline void run_steps(const Allocator& a, std::vector<void*>& ring, uint32_t& rng, uint64_t steps,
                      bool small) {
    const uint32_t slots = static_cast<uint32_t>(ring.size());
    for (uint64_t i = 0; i < steps; ++i) {
        uint32_t r = xorshift32(rng);
        void*& slot = ring[r % slots];
        if (slot) {
            a.free(slot);
            slot = nullptr;
        } else {
            void* p = a.malloc(size_of_step(r, small));
            if (!p) {
                std::fprintf(stderr, "%s: malloc failed\n", a.label);
                std::exit(1);
            }
            *static_cast<volatile char*>(p) = static_cast<char>(r);
            slot = p;
        }
    }
}

// Operations per second of one run.
double run_once(Allocator& a, const Workload& w, uint64_t cycles) {
    activate(a);
    std::vector<void*> ring(w.slots, nullptr);
    uint32_t rng = 0x12345678u;
    run_steps(a, ring, rng, cycles / 10, w.small);   // prefault: about half the slots live
    double t0 = now_seconds();
    run_steps(a, ring, rng, cycles, w.small);
    for (void*& slot : ring)
        if (slot) a.free(slot), slot = nullptr;
    double t1 = now_seconds();
    return static_cast<double>(cycles) / (t1 - t0);
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char kUsage[] =
    "usage: random_mixed [cycles=10000000] [repetitions=5] [allocator prefix] [slots: 8192, 400 or 256]\n"
    "  (bazel run --config=opt //bench/stage3:random_mixed [-- ARGS])\n";

// A positive whole number, or exit 2 naming the argument: a run takes minutes, and "--help" or
// a typo read as 0 cycles printed a table of zeros.
uint64_t positive(const char* arg, const char* what) {
    char* end = nullptr;
    uint64_t v = std::strtoull(arg, &end, 0);
    if (*arg < '0' || *arg > '9' || *end != '\0' || v == 0) {
        std::fprintf(stderr, "random_mixed: %s: not a positive number of %s\n%s", arg, what, kUsage);
        std::exit(2);
    }
    return v;
}

}  // namespace
}  // namespace edu::bench

int main(int argc, char** argv) {
    using namespace edu::bench;
    if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (argc > 5) {
        std::fprintf(stderr, "random_mixed: %s: too many arguments\n%s", argv[5], kUsage);
        return 2;
    }
    uint64_t cycles = argc > 1 ? positive(argv[1], "cycles") : 10000000;
    int repetitions = argc > 2 ? static_cast<int>(positive(argv[2], "repetitions")) : 5;
    const char* only_allocator = argc > 3 ? argv[3] : "";
    uint32_t only_slots = argc > 4 ? static_cast<uint32_t>(positive(argv[4], "slots")) : 0;
    // mimalloc first, so its library is loaded before stage 3 maps anything.
    std::vector<Allocator> allocators = {
        mimalloc_allocator(),
        stage3_allocator("stage3 (stats off)", "off", "off"),
        stage3_allocator("stage3 (stats on)", "off", "on"),
        stage3_allocator("stage3 (secure, stats off)", "on", "off"),
        glibc_allocator(),
    };
    const Workload workloads[] = {
        {"ring 8192, 16..1039 B", 8192, false},
        {"ring 400, 16..1039 B", 400, false},
        {"ring 256, 16..1039 B", 256, false},
        {"ring 8192, 16..128 B", 8192, true},
    };
    std::erase_if(allocators, [&](const Allocator& a) {
        return std::strncmp(a.label, only_allocator, std::strlen(only_allocator)) != 0;
    });
    if (allocators.empty()) {
        std::fprintf(stderr, "random_mixed: %s: names none of the allocators\n%s", only_allocator, kUsage);
        return 2;
    }
    if (only_slots && std::none_of(std::begin(workloads), std::end(workloads),
                                   [&](const Workload& w) { return w.slots == only_slots; })) {
        std::fprintf(stderr, "random_mixed: %u: no ring of that many slots\n%s", only_slots, kUsage);
        return 2;
    }
    std::printf("random mixed: %llu cycles, %d repetitions, medians in M ops per CPU-second; ratio = / %s\n",
                static_cast<unsigned long long>(cycles), repetitions, allocators[0].label);
    for (const Workload& w : workloads) {
        if (only_slots && w.slots != only_slots) continue;
        std::vector<std::vector<double>> results(allocators.size());
        for (int rep = 0; rep < repetitions; ++rep)
            for (std::size_t i = 0; i < allocators.size(); ++i)
                results[i].push_back(run_once(allocators[i], w, cycles));
        double base = median(results[0]);
        std::printf("\n%s\n", w.name);
        for (std::size_t i = 0; i < allocators.size(); ++i) {
            double m = median(results[i]);
            auto [lo, hi] = std::minmax_element(results[i].begin(), results[i].end());
            std::printf("  %-28s %8.2f M ops/s  (min %6.2f, max %6.2f)  %5.2fx\n", allocators[i].label,
                        m / 1e6, *lo / 1e6, *hi / 1e6, m / base);
        }
    }
    return 0;
}
