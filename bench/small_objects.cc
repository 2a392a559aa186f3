// bench/small_objects.cc: throughput of small objects, 16..512 bytes, allocated and freed in a
// random mix (the ring workload of ANCHORS.md), through glibc's malloc and every linked stage in
// one run. Prints operations per CPU second and the ratio to glibc; timed: loop plus drain.
// Usage: small_objects [steps=20000000] [slots=8192] [seed=1] [repeats=3]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

#include "contract/allocator.h"

namespace {

struct Allocator {
    const char* label;
    void* (*malloc)(std::size_t);
    void (*free)(void*);
};

struct Workload {
    uint64_t steps;
    uint32_t slots;
    uint32_t seed;
};

uint32_t xorshift32(uint32_t& state) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

// CPU time of this thread (user + system): on a shared machine, time spent waiting for a core
// is not the allocator's, while its system calls (mmap, munmap, brk) are.
double now_seconds() {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// One step: slot r % slots is freed if occupied, else filled with 16 + (r >> 16) % 497 bytes
// whose first byte is written (so the block is touched, as a program would).
inline void step(const Allocator& a, std::vector<void*>& ring, uint32_t& rng, uint32_t slots) {
    uint32_t r = xorshift32(rng);
    void*& slot = ring[r % slots];
    if (slot) {
        a.free(slot);
        slot = nullptr;
    } else {
        std::size_t size = 16 + (r >> 16) % 497;
        slot = a.malloc(size);
        if (!slot) {
            std::fprintf(stderr, "%s: malloc(%zu) failed\n", a.label, size);
            std::exit(1);
        }
        *static_cast<volatile char*>(slot) = static_cast<char>(r);
    }
}

// Seconds for `w.steps` steps plus the final drain, after an untimed warm-up of steps / 10
// that leaves about half the slots live.
double run_once(const Allocator& a, const Workload& w) {
    std::vector<void*> ring(w.slots, nullptr);
    uint32_t rng = w.seed;
    for (uint64_t i = 0; i < w.steps / 10; ++i) step(a, ring, rng, w.slots);
    double start = now_seconds();
    for (uint64_t i = 0; i < w.steps; ++i) step(a, ring, rng, w.slots);
    for (void* slot : ring)
        if (slot) a.free(slot);
    return now_seconds() - start;
}

void print_row(const char* label, double rate, double glibc, uint64_t steps) {
    std::printf("%-34s %7.1f M ops/CPU-s   %5.2fx glibc   (%llu steps)\n", label, rate / 1e6,
                rate / glibc, static_cast<unsigned long long>(steps));
}

// One line of the table: an allocator, and the option it runs under (if any).
struct Variant {
    char label[96];
    Allocator allocator;
    const edu::Stage* stage;     // for the option; nullptr for glibc
    const char* option;          // nullptr: none
    const char* on;
    const char* off;
    uint64_t steps;
    double best = 1e300;         // seconds
};

void* (*volatile g_libc_malloc)(std::size_t) = &std::malloc;
void (*volatile g_libc_free)(void*) = &std::free;
void* libc_malloc(std::size_t n) { return g_libc_malloc(n); }
void libc_free(void* p) { g_libc_free(p); }

}  // namespace

int main(int argc, char** argv) {
    Workload w{20000000, 8192, 1};
    int repeats = 3;
    if (argc > 1) w.steps = std::strtoull(argv[1], nullptr, 10);
    if (argc > 2) w.slots = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
    if (argc > 3) w.seed = static_cast<uint32_t>(std::strtoul(argv[3], nullptr, 10));
    if (argc > 4) repeats = std::atoi(argv[4]);
    if (!w.steps || !w.slots || !w.seed || repeats < 1) {
        std::fprintf(stderr, "usage: small_objects [steps] [slots] [seed (non-zero)] [repeats]\n");
        return 2;
    }
    std::printf(
        "small objects: 16..512 bytes, random mixed alloc/free, %u slots, seed %u, best of %d\n",
        w.slots, w.seed, repeats);

    // Every variant runs once per round, in turn, so a burst of load from elsewhere on the
    // machine hits all of them alike; each keeps its best round.
    std::vector<Variant> variants;
    auto add = [&](const char* label, Allocator a, const edu::Stage* stage, const char* option,
                   const char* on, const char* off, uint64_t steps) {
        Variant v{};
        std::snprintf(v.label, sizeof v.label, "%s", label);
        v.allocator = a;
        v.allocator.label = v.label;
        v.stage = stage;
        v.option = option;
        v.on = on;
        v.off = off;
        v.steps = steps;
        v.best = 1e300;
        variants.push_back(v);
    };
    add("glibc malloc", Allocator{"glibc", &libc_malloc, &libc_free}, nullptr, nullptr, nullptr,
        nullptr, w.steps);
    for (std::size_t i = 0; i < edu::stage_count(); ++i) {
        const edu::Stage& stage = edu::stage_at(i);
        // Stage 1 searches a first-fit list: a tenth of the steps keeps the run short.
        uint64_t steps = stage.number == 1 ? w.steps / 10 : w.steps;
        const edu::Api& single = *stage.single_thread;
        const edu::Api& locked = *stage.thread_safe;
        char label[96];
        add(stage.name, Allocator{nullptr, single.malloc, single.free}, &stage, nullptr, nullptr,
            nullptr, steps);
        std::snprintf(label, sizeof label, "%s (thread-safe entry)", stage.name);
        add(label, Allocator{nullptr, locked.malloc, locked.free}, &stage, nullptr, nullptr, nullptr,
            steps);
        // The stage's two-valued switches that change the small-object path, if it has them.
        const char* switches[][3] = {{"geometry", "modern", "classic"}, {"debug", "on", "off"}};
        for (const auto& s : switches) {
            const char* now = stage.get_option(s[0]);
            if (!now || std::strcmp(now, s[2]) != 0) continue;
            std::snprintf(label, sizeof label, "%s (%s=%s)", stage.name, s[0], s[1]);
            add(label, Allocator{nullptr, single.malloc, single.free}, &stage, s[0], s[1], s[2],
                steps);
        }
    }
    for (int round = 0; round < repeats; ++round) {
        for (Variant& v : variants) {
            if (v.option && !v.stage->set_option(v.option, v.on)) {
                std::fprintf(stderr, "%s: cannot set %s=%s\n", v.stage->name, v.option, v.on);
                return 1;
            }
            Workload mine = w;
            mine.steps = v.steps;
            double t = run_once(v.allocator, mine);
            if (t < v.best) v.best = t;
            if (v.option) v.stage->set_option(v.option, v.off);
        }
    }
    const double glibc = static_cast<double>(variants[0].steps) / variants[0].best;
    for (const Variant& v : variants)
        print_row(v.label, static_cast<double>(v.steps) / v.best, glibc, v.steps);
    return 0;
}
