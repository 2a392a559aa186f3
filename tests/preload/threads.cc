// tests/preload/threads.cc: proves a malloc survives threads and fork, whichever one is loaded.
// Four workers replay seeded random mallocs, reallocs, frees and hand-offs (a block made by one
// thread, checked and freed by the next); the main thread forks in the middle and the child
// allocates on its own, as do fork handlers registered before the library's. Every block carries
// a pattern derived from its tag and is checked before it is released. Then thousands of threads
// end with a block of glibc's to free at exit, which must not grow the resident set. Output is
// sums of tags, the same under any correct malloc.
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/preload/resident.h"

namespace {

constexpr int kThreads = 4;
constexpr int kSteps = 40000;       // operations per worker
constexpr int kSlots = 256;         // live blocks per worker at most

uint32_t xorshift(uint32_t& s) {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
}

// Mostly small sizes, sometimes a page or two, rarely a quarter MiB.
std::size_t pick_size(uint32_t r) {
    switch (r % 16) {
        case 0: return 0;
        case 1: return 4096 + (r >> 8) % 8192;
        case 2: if ((r >> 4) % 8 == 0) return 256 * 1024 + (r >> 8) % 4096; [[fallthrough]];
        default: return 1 + (r >> 8) % 600;
    }
}

// A block's bytes: a function of its tag and position, so any overlap or loss shows.
unsigned char pattern(uint64_t tag, std::size_t i) { return static_cast<unsigned char>(tag * 31 + i * 7); }

struct Block {
    unsigned char* data;
    std::size_t size;
    uint64_t tag;
};

void fill(const Block& b) {
    for (std::size_t i = 0; i < b.size; ++i) b.data[i] = pattern(b.tag, i);
}

// Checks the first `n` bytes and returns a value to sum; exits on damage.
uint64_t verify(const Block& b, std::size_t n, const char* where) {
    for (std::size_t i = 0; i < n; ++i) {
        if (b.data[i] != pattern(b.tag, i)) {
            std::fprintf(stderr, "damaged block: tag %llu byte %zu of %zu (%s)\n",
                         static_cast<unsigned long long>(b.tag), i, b.size, where);
            std::exit(1);
        }
    }
    return b.tag * 1000003u + b.size;
}

Block make(uint64_t tag, std::size_t size) {
    Block b{static_cast<unsigned char*>(std::malloc(size)), size, tag};
    if (b.data == nullptr) {
        std::fprintf(stderr, "malloc(%zu) failed\n", size);
        std::exit(1);
    }
    fill(b);
    return b;
}

// Blocks on their way from worker t-1 to worker t.
struct Mailbox {
    std::mutex lock;
    std::vector<Block> blocks;
};
Mailbox g_mailboxes[kThreads];
std::atomic<int> g_halfway{0};

struct Result {
    uint64_t sum = 0;
    uint64_t sent = 0;
    uint64_t received = 0;
    uint64_t reallocs = 0;
};

uint64_t drain(Mailbox& box, Result& result) {
    std::vector<Block> taken;  // empty: allocates nothing until swapped
    {
        std::lock_guard<std::mutex> guard(box.lock);
        taken.swap(box.blocks);
    }
    uint64_t sum = 0;
    for (const Block& b : taken) {
        sum += verify(b, b.size, "received");
        std::free(b.data);
        ++result.received;
    }
    return sum;
}

void worker(int t, Result& result, uint64_t expected_in) {
    uint32_t seed = 0x9e3779b9u * static_cast<uint32_t>(t + 1);
    std::vector<Block> slots(kSlots, Block{nullptr, 0, 0});
    Mailbox& next = g_mailboxes[(t + 1) % kThreads];
    Mailbox& mine = g_mailboxes[t];
    uint64_t tag = static_cast<uint64_t>(t) << 32;
    for (int step = 0; step < kSteps; ++step) {
        if (step == kSteps / 2) g_halfway.fetch_add(1);
        uint32_t r = xorshift(seed);
        Block& b = slots[r % kSlots];
        if (b.data == nullptr) {
            b = make(++tag, pick_size(xorshift(seed)));
            continue;
        }
        switch ((r >> 10) % 8) {
            case 0:
            case 1: {  // grow or shrink, keeping the common prefix
                std::size_t size = pick_size(xorshift(seed));
                auto* p = static_cast<unsigned char*>(std::realloc(b.data, size ? size : 1));
                if (p == nullptr) {
                    std::fprintf(stderr, "realloc failed\n");
                    std::exit(1);
                }
                Block moved{p, size, b.tag};
                result.sum += verify(moved, b.size < size ? b.size : size, "realloc");
                b = moved;
                fill(b);
                ++result.reallocs;
                break;
            }
            case 2: {  // hand the block to the next worker
                {
                    std::lock_guard<std::mutex> guard(next.lock);
                    next.blocks.push_back(b);
                }
                ++result.sent;
                b = Block{nullptr, 0, 0};
                break;
            }
            default:
                result.sum += verify(b, b.size, "free");
                std::free(b.data);
                b = Block{nullptr, 0, 0};
        }
        if (step % 64 == 0) result.sum += drain(mine, result);
    }
    for (Block& left : slots) {
        if (left.data == nullptr) continue;
        result.sum += verify(left, left.size, "final");
        std::free(left.data);
    }
    while (result.received < expected_in) {
        result.sum += drain(mine, result);
        std::this_thread::yield();
    }
}

// How many blocks worker t sends, computed by replaying its choices without allocating.
uint64_t count_sent(int t) {
    uint32_t seed = 0x9e3779b9u * static_cast<uint32_t>(t + 1);
    std::vector<bool> live(kSlots, false);
    uint64_t sent = 0;
    for (int step = 0; step < kSteps; ++step) {
        uint32_t r = xorshift(seed);
        std::size_t slot = r % kSlots;
        if (!live[slot]) {
            xorshift(seed);
            live[slot] = true;
            continue;
        }
        unsigned op = (r >> 10) % 8;
        if (op <= 1) {  // realloc: draws a size, the block stays
            xorshift(seed);
            continue;
        }
        live[slot] = false;  // handed off or freed
        if (op == 2) ++sent;
    }
    return sent;
}

// Threads that end with a block of glibc's own to free: strerror of an unknown number mallocs
// the thread's message buffer, which glibc frees after every pthread key destructor has run
// (__libc_thread_freeres). A malloc that takes a per-thread record for that late free, keyed
// for a destructor that never runs again, keeps it for good (stage 4 kept 40 KiB a thread,
// S4.73). Returns the growth of the resident set over kExits threads, in KiB.
constexpr int kExits = 3000;

long exits_growth_kib() {
    auto body = [](int i) { std::strlen(std::strerror(100000 + i)); };
    for (int i = 0; i < 100; ++i) std::thread(body, i).join();   // every pool warmed up
    long before = resident_kib();
    for (int i = 0; i < kExits; ++i) std::thread(body, i).join();
    return resident_kib() - before;
}

// The forked child: one thread, fresh allocations of every kind, exit status 0 if all held.
[[noreturn]] void child() {
    uint64_t sum = 0;
    std::vector<Block> blocks;
    for (uint64_t i = 1; i <= 2000; ++i) blocks.push_back(make(i, pick_size(static_cast<uint32_t>(i * 2654435761u))));
    for (std::size_t i = 0; i < blocks.size(); i += 2) {
        sum += verify(blocks[i], blocks[i].size, "child");
        std::free(blocks[i].data);
    }
    void* aligned = nullptr;
    if (posix_memalign(&aligned, 4096, 10000) != 0 || reinterpret_cast<uintptr_t>(aligned) % 4096 != 0) _exit(2);
    std::free(aligned);
    for (std::size_t i = 1; i < blocks.size(); i += 2) {
        sum += verify(blocks[i], blocks[i].size, "child");
        std::free(blocks[i].data);
    }
    _exit(sum != 0 ? 0 : 3);
}

// Fork handlers registered before the drop-in library's own, as a library's constructor
// registers them (the library's constructor runs after those of the libraries loaded with it;
// here the program's .preinit_array runs first of all). glibc runs the prepare handlers last
// registered first, so these run while the library's hooks hold its locks, and the child
// handler runs before the library's. Each allocates a small, a large and an over-aligned
// block: with glibc's malloc, whose locks are taken inside fork, that is fine. Before
// contract/locked.h's point 8, stages 1-3, and every stage in debug mode, waited for
// themselves in the prepare handler (the alarm in main ends that wait).
void* g_handler_blocks[3];

void allocate_in_handler() {
    g_handler_blocks[0] = std::malloc(100);
    g_handler_blocks[1] = std::malloc(200000);
    g_handler_blocks[2] = aligned_alloc(std::size_t{1} << 21, std::size_t{3} << 20);
    for (void* p : g_handler_blocks)
        if (p) std::memset(p, 0x3c, 100);
}

void free_handler_blocks() {
    for (void*& p : g_handler_blocks) {
        std::free(p);
        p = nullptr;
    }
}

void child_handler() {
    free_handler_blocks();   // the parent's, copied into the child
    allocate_in_handler();
    free_handler_blocks();
}

void register_early_fork_handlers() { pthread_atfork(allocate_in_handler, free_handler_blocks, child_handler); }

[[gnu::used, gnu::section(".preinit_array")]] void (*const g_preinit)() = register_early_fork_handlers;

}  // namespace

int main() {
    uint64_t expected_in[kThreads];
    for (int t = 0; t < kThreads; ++t) expected_in[(t + 1) % kThreads] = count_sent(t);

    Result results[kThreads];
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t)
        workers.emplace_back(worker, t, std::ref(results[t]), expected_in[t]);

    // Fork while the workers are busy: the malloc's fork hooks must leave the child a usable heap.
    while (g_halfway.load() == 0) std::this_thread::yield();
    std::fflush(stdout);
    alarm(60);   // a fork handler that waits for itself is killed, and the test fails
    pid_t pid = fork();
    if (pid < 0) {
        std::perror("fork");
        return 1;
    }
    if (pid == 0) child();
    for (std::thread& w : workers) w.join();
    int status = 0;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        std::fprintf(stderr, "fork child failed (status %d)\n", status);
        return 1;
    }
    alarm(0);

    uint64_t total = 0;
    for (int t = 0; t < kThreads; ++t) {
        const Result& r = results[t];
        if (r.received != expected_in[t]) {
            std::fprintf(stderr, "worker %d received %llu of %llu blocks\n", t,
                         static_cast<unsigned long long>(r.received),
                         static_cast<unsigned long long>(expected_in[t]));
            return 1;
        }
        std::printf("worker %d: sent %llu, received %llu, reallocs %llu, checksum %016llx\n", t,
                    static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.received),
                    static_cast<unsigned long long>(r.reallocs), static_cast<unsigned long long>(r.sum));
        total += r.sum;
    }
    std::printf("fork child: ok\n");
    std::printf("total checksum %016llx\n", static_cast<unsigned long long>(total));

    long growth = exits_growth_kib();
    if (growth > 4096) {
        std::fprintf(stderr, "%d threads that exit after strerror grew the resident set by %ld KiB\n", kExits, growth);
        return 1;
    }
    std::printf("%d thread exits after strerror: resident set bounded\n", kExits);
    return 0;
}
