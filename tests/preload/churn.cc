// tests/preload/churn.cc: blocks shared by every thread, under memory pressure. One table of
// slots serves all the threads, so a block is often freed, resized or checked by a thread other
// than the one that made it; requests come through every entry (malloc, calloc, realloc,
// aligned_alloc, posix_memalign, memalign) with sizes from 0 to 40 MiB and alignments from 8
// bytes to 64 MiB; threads end and new ones start (a stage 4 heap is abandoned, another adopts
// its segments), and the process forks while they run. Run under an address-space or data limit
// (churn_test.sh), a malloc may answer NULL, with ENOMEM and nothing else; every other answer is
// checked: alignment, malloc_usable_size, zeroed calloc memory, and every block's payload, a
// pattern of its tag, before it is resized or freed. Prints one line that any correct malloc
// prints ("churn SEED: ok"); the count of refusals goes to stderr. Run with random seeds and
// limits, a version of it found bugs the fixed workloads of the other tests did not (S3.97 /
// S4.115, S4.116); churn_test.sh runs fixed ones, tools/fuzz random ones for as long as asked.
//
//     churn SEED [THREADS] [STEPS] [GENERATIONS]
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr int kSlots = 4096;
constexpr int kMaxThreads = 16;

struct Slot {
    std::atomic_flag busy = ATOMIC_FLAG_INIT;  // a spin lock: the slot's block has one user at a time
    unsigned char* data = nullptr;
    std::size_t size = 0;
    uint64_t tag = 0;
};
Slot g_slots[kSlots];
unsigned long long g_seed;
long g_steps;
std::atomic<long> g_refused{0};

uint64_t next(uint64_t& s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

[[noreturn]] void wrong(const char* what, const void* p, std::size_t n) {
    std::fprintf(stderr, "churn %llu: %s (pointer %p, %zu)\n", g_seed, what, p, n);
    std::fflush(stderr);
    _exit(3);
}

// Mostly small, some pages, a few up to 2 MiB, one in 200 up to 40 MiB.
std::size_t pick_size(uint64_t& s) {
    uint64_t r = next(s) % 1000;
    if (r < 700) return next(s) % 257;
    if (r < 900) return next(s) % 4097;
    if (r < 975) return next(s) % 70000;
    if (r < 995) return next(s) % (std::size_t{1} << 21);
    return next(s) % (std::size_t{40} << 20);
}

// 8 to 256 bytes mostly, 512 bytes to 64 KiB often, 128 KiB to 64 MiB now and then.
std::size_t pick_alignment(uint64_t& s) {
    uint64_t r = next(s) % 100;
    if (r < 60) return std::size_t{8} << (next(s) % 6);
    if (r < 95) return std::size_t{512} << (next(s) % 8);
    return std::size_t{128 << 10} << (next(s) % 10);
}

// A block's bytes are a function of its tag and position. A block over 256 bytes has only its
// first and last 128 bytes set and one byte in every 65521 (a prime above 64 KiB) between: a
// 40 MiB block costs a few hundred touched pages, not ten thousand.
unsigned char pattern(uint64_t tag, std::size_t i) { return static_cast<unsigned char>(tag * 31 + i * 7 + (i >> 8)); }

// Calls visit(i) for each set byte of a block of `size` bytes below `end`.
template <class Visit>
void each_set_byte(std::size_t size, std::size_t end, Visit visit) {
    if (size <= 256) {
        for (std::size_t i = 0; i < end; ++i) visit(i);
        return;
    }
    for (std::size_t i = 0; i < 128 && i < end; ++i) visit(i);
    for (std::size_t i = 128; i < size - 128 && i < end; i += 65521) visit(i);
    for (std::size_t i = size - 128; i < end; ++i) visit(i);
}

void fill(unsigned char* p, std::size_t size, uint64_t tag) {
    each_set_byte(size, size, [&](std::size_t i) { p[i] = pattern(tag, i); });
}

// Checks the set bytes among the first `upto` of a block filled with `size` bytes.
void verify(const unsigned char* p, std::size_t size, uint64_t tag, std::size_t upto, const char* when) {
    each_set_byte(size, size < upto ? size : upto, [&](std::size_t i) {
        if (p[i] != pattern(tag, i)) wrong(when, p, i);
    });
}

// NULL is a right answer only with ENOMEM.
void refused(const void* p, std::size_t size) {
    if (errno != ENOMEM) wrong("NULL without ENOMEM", p, size);
    g_refused.fetch_add(1, std::memory_order_relaxed);
}

void accept(Slot& slot, unsigned char* p, std::size_t size, std::size_t alignment, uint64_t tag) {
    if (alignment != 0 && reinterpret_cast<uintptr_t>(p) % alignment != 0) wrong("misaligned block", p, alignment);
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) wrong("block not 16-byte aligned", p, size);
    if (malloc_usable_size(p) < size) wrong("malloc_usable_size below the request", p, size);
    fill(p, size, tag);
    slot.data = p;
    slot.size = size;
    slot.tag = tag;
}

void make(Slot& slot, uint64_t& s) {
    std::size_t size = pick_size(s), alignment = 0;
    uint64_t tag = next(s), r = next(s) % 100;
    unsigned char* p;
    errno = 0;
    if (r < 60) {
        p = static_cast<unsigned char*>(std::malloc(size));
    } else if (r < 75) {  // a count of up to 8 elements, at most 4 MiB in all
        std::size_t count = 1 + next(s) % 8;
        size = size % (std::size_t{4} << 20) / count;
        p = static_cast<unsigned char*>(std::calloc(count, size));
        size *= count;
        for (std::size_t i = 0; p != nullptr && i < size; i += size > 4096 ? 509 : 1)
            if (p[i] != 0) wrong("calloc memory not zero", p, i);
    } else if (r < 85) {
        alignment = pick_alignment(s);
        p = static_cast<unsigned char*>(aligned_alloc(alignment, size));
    } else if (r < 92) {
        alignment = pick_alignment(s);
        void* out = nullptr;
        int error = posix_memalign(&out, alignment, size);
        if (error != 0 && error != ENOMEM) wrong("posix_memalign gave an error other than ENOMEM", nullptr, alignment);
        p = static_cast<unsigned char*>(out);
        if (error != 0) errno = ENOMEM;
    } else if (r < 96) {
        alignment = pick_alignment(s);
        p = static_cast<unsigned char*>(memalign(alignment, size));
    } else {
        p = static_cast<unsigned char*>(std::realloc(nullptr, size));
    }
    if (p == nullptr) return refused(p, size);
    accept(slot, p, size, alignment, tag);
}

// Frees the slot's block or resizes it: to a new size, or a little larger (the in-place case).
void change(Slot& slot, uint64_t& s) {
    verify(slot.data, slot.size, slot.tag, slot.size, "a block's payload changed while it was live");
    uint64_t r = next(s) % 100;
    if (r < 55) {
        std::free(slot.data);
        slot.data = nullptr;
        return;
    }
    std::size_t size = r < 80 ? pick_size(s) : slot.size + next(s) % 300;
    errno = 0;
    auto* p = static_cast<unsigned char*>(std::realloc(slot.data, size));
    if (p == nullptr && size == 0 && errno != ENOMEM) {  // glibc frees the block and answers NULL
        slot.data = nullptr;
        return;
    }
    if (p == nullptr) {
        refused(p, size);
        verify(slot.data, slot.size, slot.tag, slot.size, "a refused realloc changed the block");
        return;
    }
    verify(p, slot.size, slot.tag, size, "realloc lost the block's payload");
    accept(slot, p, size, 0, slot.tag);
}

void* worker(void* arg) {
    uint64_t s = reinterpret_cast<uintptr_t>(arg) * 0x9E3779B97F4A7C15ull + g_seed + 1;
    for (long step = 0; step < g_steps; ++step) {
        Slot& slot = g_slots[next(s) % kSlots];
        while (slot.busy.test_and_set(std::memory_order_acquire)) {}
        if (slot.data == nullptr) make(slot, s);
        else change(slot, s);
        slot.busy.clear(std::memory_order_release);
    }
    return nullptr;
}

// A child of a process whose other threads hold the allocator's locks at any moment: its
// malloc must work (the library's fork hooks), and so must its exit.
void fork_while_running(uint64_t& s) {
    pid_t child = fork();
    if (child < 0) return;  // no memory for a child under the limit: nothing to test
    if (child == 0) {
        for (int i = 0; i < 2000; ++i) {
            void* p = std::malloc(1 + next(s) % 5000);  // at least the byte it writes
            if (p != nullptr) std::memset(p, 1, 1);
            std::free(p);
        }
        _exit(0);
    }
    int status = 0;
    waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) wrong("the forked child failed", nullptr, static_cast<std::size_t>(status));
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s SEED [THREADS] [STEPS] [GENERATIONS]\n", argv[0]);
        return 2;
    }
    g_seed = std::strtoull(argv[1], nullptr, 10);
    int threads = argc > 2 ? std::atoi(argv[2]) : 4;
    g_steps = argc > 3 ? std::atol(argv[3]) : 10000;
    int generations = argc > 4 ? std::atoi(argv[4]) : 3;
    if (threads < 1 || threads > kMaxThreads) threads = 4;
    uint64_t s = g_seed * 2654435761u + 7;
    for (int g = 0; g < generations; ++g) {
        pthread_t id[kMaxThreads];
        bool started[kMaxThreads] = {};
        for (int t = 0; t < threads; ++t) {
            void* arg = reinterpret_cast<void*>(static_cast<uintptr_t>(g * kMaxThreads + t + 1));
            started[t] = pthread_create(&id[t], nullptr, worker, arg) == 0;
            if (!started[t]) worker(arg);  // no room for a thread's stack under the limit
        }
        if (next(s) % 3 == 0) fork_while_running(s);
        for (int t = 0; t < threads; ++t)
            if (started[t]) pthread_join(id[t], nullptr);
    }
    for (Slot& slot : g_slots) {
        if (slot.data == nullptr) continue;
        verify(slot.data, slot.size, slot.tag, slot.size, "a block's payload changed by the end");
        std::free(slot.data);
    }
    std::fprintf(stderr, "churn %llu: %ld requests refused with ENOMEM\n", g_seed, g_refused.load());
    std::printf("churn %llu: ok\n", g_seed);
    return 0;
}
