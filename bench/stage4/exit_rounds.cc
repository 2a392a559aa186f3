// bench/stage4/exit_rounds.cc: threads that call malloc from their pthread key destructors, for
// the figures of docs/stage4_threads.md section 8 ([S4.92], [S4.97]). Run with a drop-in library
// preloaded (or none, for glibc), under callgrind for instruction counts:
//   exit_rounds last CYCLES WIDTH KEEP   WIDTH threads at a time, CYCLES times; each re-arms its
//                                        key in rounds 1-3 and makes KEEP mallocs in round 4,
//                                        which the main thread frees
//   exit_rounds churn THREADS            one at a time; each mallocs, frees, hands a block on
//   exit_rounds late FIRST               2000 threads whose first call comes in round FIRST
//                                        (1-4); prints how much VmSize and VmRSS grew
//   exit_rounds large WIDTH MIB CYCLES   WIDTH threads at a time, CYCLES times; each frees a
//                                        block of MIB MiB it wrote before it exits ([S4.93]);
//                                        prints how much VmRSS grew
//   exit_rounds orphan WIDTH MIB CYCLES  as large, but a key destructor (after the allocator's
//                                        exit hook) frees the block ([S4.97], [S4.93])
//   exit_rounds drain WIDTH BLOCKS CYCLES body|hook   WIDTH threads at a time (all holding a
//                                        heap at once), CYCLES times; each allocates BLOCKS
//                                        blocks of about 1 KiB and frees them, in its body or in
//                                        a key destructor after the exit hook ([S4.97]); prints
//                                        how much VmRSS grew
//   exit_rounds pairs THREADS PAIRS      one at a time; each makes PAIRS free(malloc(64)) in a
//                                        key destructor after the exit hook ([S4.105])
#include <limits.h>
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace {

pthread_key_t g_key;
__thread int t_rounds = 0;
int g_keep = 200;
int g_first = 4;
char g_mark;   // a key value that is no block
std::mutex g_mutex;
std::vector<void*> g_handed;

void last_rounds(void* value) {
    std::free(value);
    if (++t_rounds < PTHREAD_DESTRUCTOR_ITERATIONS) {
        pthread_setspecific(g_key, std::malloc(200));
        return;
    }
    std::vector<void*> mine;
    mine.reserve(static_cast<std::size_t>(g_keep));   // a malloc in the last round too
    for (int i = 0; i < g_keep; ++i) {
        void* p = std::malloc(static_cast<std::size_t>(32 + i));
        std::memset(p, 1, 8);
        mine.push_back(p);
    }
    std::lock_guard<std::mutex> hold(g_mutex);
    g_handed.insert(g_handed.end(), mine.begin(), mine.end());
}

void late_rounds(void* value) {
    int round = ++t_rounds;
    if (value != &g_mark) std::free(value);
    if (round >= g_first) std::free(std::malloc(64));
    if (round < PTHREAD_DESTRUCTOR_ITERATIONS) pthread_setspecific(g_key, round >= g_first ? std::malloc(200) : &g_mark);
}

void* arm_with_block(void*) {
    std::free(std::malloc(10));
    pthread_setspecific(g_key, std::malloc(100));
    return nullptr;
}

void* arm_with_mark(void*) {
    pthread_setspecific(g_key, &g_mark);
    return nullptr;
}

std::size_t g_large = 0;

void* large(void*) {
    auto* p = static_cast<char*>(std::malloc(g_large));
    if (p) std::memset(p, 1, g_large);
    std::free(p);
    std::free(std::malloc(100));
    return nullptr;
}

void* orphan(void*) {
    std::free(std::malloc(10));
    auto* p = static_cast<char*>(std::malloc(g_large));
    if (p) std::memset(p, 1, g_large);
    pthread_setspecific(g_key, p);   // freed by last_free, after the exit hook
    return nullptr;
}

void last_free(void* value) { std::free(value); }

int g_blocks = 0;
bool g_in_hook = false;
pthread_barrier_t g_barrier;

void drain_blocks() {
    std::vector<void*> blocks;
    blocks.reserve(static_cast<std::size_t>(g_blocks));
    for (int i = 0; i < g_blocks; ++i) {
        void* p = std::malloc(static_cast<std::size_t>(1000 + (i % 7) * 16));
        std::memset(p, 1, 1000);
        blocks.push_back(p);
    }
    for (void* p : blocks) std::free(p);
}

void drain_in_hook(void* value) {
    std::free(value);
    if (g_in_hook) drain_blocks();
}

void* drain(void*) {
    std::free(std::malloc(10));
    if (!g_in_hook) drain_blocks();
    pthread_setspecific(g_key, std::malloc(20));
    pthread_barrier_wait(&g_barrier);   // every thread holds its heap at once
    return nullptr;
}

int g_pairs = 200;

void pairs_in_hook(void* value) {
    std::free(value);
    for (int i = 0; i < g_pairs; ++i) std::free(std::malloc(64));
}

void* arm_pairs(void*) {
    pthread_setspecific(g_key, std::malloc(20));
    return nullptr;
}

void* churn(void*) {
    std::free(std::malloc(100));
    return std::malloc(64);
}

long status_kib(const char* field) {
    FILE* f = std::fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && std::fgets(line, sizeof line, f))
        if (std::strncmp(line, field, std::strlen(field)) == 0) kib = std::atol(line + std::strlen(field));
    if (f) std::fclose(f);
    return kib;
}

void run(int threads, void* (*body)(void*), bool free_result) {
    pthread_t t;
    void* result = nullptr;
    for (int i = 0; i < threads; ++i) {
        pthread_create(&t, nullptr, body, nullptr);
        pthread_join(t, &result);
        if (free_result) std::free(result);
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::free(std::malloc(1));   // the allocator's own key first, as in tests/threads.cc
    const char* mode = argc > 1 ? argv[1] : "";
    if (std::strcmp(mode, "last") == 0 && argc == 5) {
        int cycles = std::atoi(argv[2]), width = std::atoi(argv[3]);
        g_keep = std::atoi(argv[4]);
        pthread_key_create(&g_key, last_rounds);
        for (int c = 0; c < cycles; ++c) {
            std::vector<pthread_t> batch(static_cast<std::size_t>(width));
            for (pthread_t& t : batch) pthread_create(&t, nullptr, arm_with_block, nullptr);
            for (pthread_t& t : batch) pthread_join(t, nullptr);
            for (void* p : g_handed) std::free(p);
            g_handed.clear();
        }
        return 0;
    }
    if (std::strcmp(mode, "churn") == 0 && argc == 3) {
        run(std::atoi(argv[2]), churn, true);
        return 0;
    }
    if (std::strcmp(mode, "late") == 0 && argc == 3) {
        g_first = std::atoi(argv[2]);
        pthread_key_create(&g_key, late_rounds);
        long size = status_kib("VmSize:"), rss = status_kib("VmRSS:");
        run(2000, arm_with_mark, false);
        std::printf("first call in round %d: VmSize +%ld KiB, VmRSS +%ld KiB\n", g_first, status_kib("VmSize:") - size,
                    status_kib("VmRSS:") - rss);
        return 0;
    }
    bool orphans = std::strcmp(mode, "orphan") == 0;
    if ((orphans || std::strcmp(mode, "large") == 0) && argc == 5) {
        int width = std::atoi(argv[2]), cycles = std::atoi(argv[4]);
        g_large = static_cast<std::size_t>(std::atoi(argv[3])) << 20;
        if (orphans) pthread_key_create(&g_key, last_free);
        long rss = status_kib("VmRSS:");
        for (int c = 0; c < cycles; ++c) {
            std::vector<pthread_t> batch(static_cast<std::size_t>(width));
            for (pthread_t& t : batch) pthread_create(&t, nullptr, orphans ? orphan : large, nullptr);
            for (pthread_t& t : batch) pthread_join(t, nullptr);
        }
        std::printf("%d threads of %s MiB, %d times: VmRSS +%ld KiB\n", width, argv[3], cycles, status_kib("VmRSS:") - rss);
        return 0;
    }
    if (std::strcmp(mode, "drain") == 0 && argc == 6) {
        int width = std::atoi(argv[2]), cycles = std::atoi(argv[4]);
        g_blocks = std::atoi(argv[3]);
        g_in_hook = std::strcmp(argv[5], "hook") == 0;
        pthread_key_create(&g_key, drain_in_hook);
        pthread_barrier_init(&g_barrier, nullptr, static_cast<unsigned>(width));
        long rss = status_kib("VmRSS:");
        for (int c = 0; c < cycles; ++c) {
            std::vector<pthread_t> batch(static_cast<std::size_t>(width));
            for (pthread_t& t : batch) pthread_create(&t, nullptr, drain, nullptr);
            for (pthread_t& t : batch) pthread_join(t, nullptr);
        }
        std::printf("%d threads of %d blocks in their %s, %d times: VmRSS +%ld KiB\n", width, g_blocks, argv[5], cycles,
                    status_kib("VmRSS:") - rss);
        return 0;
    }
    if (std::strcmp(mode, "pairs") == 0 && argc == 4) {
        g_pairs = std::atoi(argv[3]);
        pthread_key_create(&g_key, pairs_in_hook);
        run(std::atoi(argv[2]), arm_pairs, false);
        return 0;
    }
    std::fprintf(stderr, "usage: exit_rounds last CYCLES WIDTH KEEP | churn THREADS | late FIRST | large|orphan WIDTH MIB CYCLES | drain WIDTH BLOCKS CYCLES body|hook | pairs THREADS PAIRS\n");
    return 2;
}
