// tests/preload/limits.cc: a program that lives within a resource limit (limits_test.sh runs it
// under prlimit): small and medium blocks from the main thread (and, with the argument
// `threads`, from four others at once), two big blocks, then requests until malloc says no,
// which must be NULL with errno ENOMEM and no crash; then everything is freed and malloc must
// work again. With `small`, only 80 MiB of small blocks live at once; with `large`, 200 blocks of
// 100 KB; with `mix`, a program's start-up: a little of every size class, a growing buffer and
// a few big blocks (limits_test.sh runs it under the smallest limit glibc runs it under, plus a
// margin). Every line it prints is the same under any malloc that keeps the C contract
// within the limit, so the test compares it with glibc's. With `late MIB`, as with `threads`, but
// the program limits its own address space to MIB MiB after its first malloc (stage 4 had
// reserved its arena by then, [S4.68]) and starts the four threads right after. With `count SIZE [MIB]` it is the
// chapters' measuring tool, not a test: blocks of SIZE bytes, each written, held until malloc
// says no, and their number printed; with MIB the program first mallocs once, then limits its
// own address space to MIB MiB and starts a thread (a limit set after start-up).
#include <pthread.h>
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

namespace {

constexpr int kMaxHeld = 1 << 14;
void* g_held[kMaxHeld];

// Mixed sizes, each block written, a third freed at once, the rest at the end.
void* churn(void*) {
    static const unsigned kSizes[] = {8, 24, 100, 400, 1000, 3000, 9000, 40000};
    void* kept[64] = {};
    unsigned n = 0;
    for (unsigned i = 0; i < 3000; ++i) {
        unsigned size = kSizes[i % (sizeof kSizes / sizeof kSizes[0])];
        void* p = std::malloc(size);
        if (!p) return reinterpret_cast<void*>(1);
        std::memset(p, static_cast<int>(i), size);
        if (i % 3 == 0) std::free(p);
        else if (n < 64) kept[n++] = p;
        else std::free(p);
        if (n == 64) {
            for (void*& q : kept) std::free(q);
            n = 0;
        }
    }
    for (unsigned i = 0; i < n; ++i) std::free(kept[i]);
    return nullptr;
}

// Four threads running churn at once; false if one cannot start.
bool four_threads() {
    pthread_attr_t small_stack;   // 8 MiB stacks would not fit four threads in 16 MiB of data
    pthread_attr_init(&small_stack);
    pthread_attr_setstacksize(&small_stack, 256 << 10);
    pthread_t threads[4];
    for (pthread_t& t : threads)
        if (pthread_create(&t, &small_stack, churn, nullptr) != 0) return std::printf("pthread_create failed\n"), false;
    int failed = 0;
    for (pthread_t& t : threads) {
        void* result = nullptr;
        pthread_join(t, &result);
        failed += result != nullptr;
    }
    std::printf("four threads: %d failed\n", failed);
    return true;
}

// Blocks of `size` bytes into blocks[0..max), each written, until malloc says no: how many.
int hold(void** blocks, int max, std::size_t size) {
    int n = 0;
    for (; n < max; ++n) {
        blocks[n] = std::malloc(size);
        if (!blocks[n]) break;
        std::memset(blocks[n], n & 0xff, size);
    }
    return n;
}

void release(void** blocks, int n) {
    for (int i = 0; i < n; ++i) std::free(blocks[i]);
}

// A limit set after start-up: one malloc (the allocator is set up), then RLIMIT_AS to `mib` MiB.
bool limit_after_start(long mib) {
    void* volatile first = std::malloc(100);
    std::free(first);
    rlimit limit{static_cast<rlim_t>(mib) << 20, RLIM_INFINITY};
    if (setrlimit(RLIMIT_AS, &limit) == 0) return true;
    std::printf("setrlimit failed\n");
    return false;
}

// With the argument `small`: 80 MiB in 1000-byte blocks, all live at once, then freed. Under an
// address-space limit of 192 MiB that is well within what glibc serves; stage 4 reserved its
// arena as the largest power of two within half the limit (64 MiB) and said NULL at 61,260.
int hold_small_blocks() {
    constexpr int kBlocks = 80 << 10;   // 80 Ki blocks of 1000 bytes: 80 MiB of payload, near enough
    static void* blocks[kBlocks];
    int n = hold(blocks, kBlocks, 1000);
    std::printf("%d blocks of 1000 bytes live at once: %s\n", kBlocks, n == kBlocks ? "ok" : "malloc returned NULL");
    release(blocks, n);
    return 0;
}

// With the argument `large`: 200 blocks of 100,000 bytes (20 MB) live at once, then freed. Under
// an address-space limit of 40 MiB glibc serves them all; stage 3 gave each a 4 MiB segment of
// address space and said NULL at the tenth ([S3.58]).
int hold_large_blocks() {
    constexpr int kBlocks = 200;
    constexpr std::size_t kSize = 100000;
    static void* blocks[kBlocks];
    int n = hold(blocks, kBlocks, kSize);
    std::printf("%d blocks of %zu bytes live at once: %s\n", kBlocks, kSize, n == kBlocks ? "ok" : "malloc returned NULL");
    release(blocks, n);
    return 0;
}

// With the argument `mix`: what a program holds after starting up (an interpreter's dictionaries
// and strings, a parser's nodes): 16 KiB of blocks of each size from 16 bytes to 64 KiB, four
// sizes per doubling (at least two blocks of each), every third freed at once; a buffer that
// grows by doubling from 1 KiB to 512 KiB (realloc); blocks of 100 KB, 300 KB and 1 MiB. About
// 2.6 MiB live, each byte written. Deterministic: the same requests in the same order each run.
// Exits 1 at the first NULL (limits_test.sh bisects on the exit status).
int hold_mix() {
    static void* blocks[8192];
    int n = 0;
    for (std::size_t low = 16; low < (std::size_t{64} << 10); low *= 2) {
        for (std::size_t size = low; size < 2 * low; size += low / 4) {
            std::size_t count = (std::size_t{16} << 10) / size;
            for (std::size_t i = 0; i < (count < 2 ? 2 : count); ++i) {
                void* p = std::malloc(size);
                if (!p) return std::printf("a block of %zu bytes: NULL\n", size), 1;
                std::memset(p, 1, size);
                if (n % 3 == 2) std::free(p);
                else blocks[n] = p;
                ++n;
            }
        }
    }
    char* buffer = nullptr;
    for (std::size_t size = 1024; size <= (std::size_t{512} << 10); size *= 2) {
        auto* grown = static_cast<char*>(std::realloc(buffer, size));
        if (!grown) return std::printf("a buffer of %zu bytes: NULL\n", size), 1;
        std::memset(grown + size / 2, 2, size / 2);
        buffer = grown;
    }
    void* big[3] = {};
    int held = hold(big, 1, 100000) + hold(big + 1, 1, 300000) + hold(big + 2, 1, std::size_t{1} << 20);
    std::printf("start-up mix: %s\n", held == 3 ? "ok" : "a big block was refused");
    release(big, held);
    std::free(buffer);
    for (int i = 0; i < n; ++i)
        if (i % 3 != 2) std::free(blocks[i]);
    return held == 3 ? 0 : 1;
}

// With the argument `count SIZE [MIB]`: how many blocks of SIZE bytes fit (stage 4's chapter,
// [S4.67] and [S4.68], quotes these counts under `prlimit --as=N` and with MIB).
int count_blocks(std::size_t size, long late_limit_mib) {
    constexpr int kMaxCounted = 1 << 16;
    static void* blocks[kMaxCounted];
    if (late_limit_mib > 0) {
        if (!limit_after_start(late_limit_mib)) return 2;
        pthread_t t;
        bool thread_ok = pthread_create(&t, nullptr, churn, nullptr) == 0;
        if (thread_ok) pthread_join(t, nullptr);
        std::printf("a thread started under the limit: %s\n", thread_ok ? "yes" : "refused");
    }
    int n = hold(blocks, kMaxCounted, size);
    std::printf("%d blocks of %zu bytes\n", n, size);
    release(blocks, n);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc > 2 && std::strcmp(argv[1], "count") == 0)
        return count_blocks(std::strtoul(argv[2], nullptr, 10), argc > 3 ? std::strtol(argv[3], nullptr, 10) : 0);
    if (argc > 1 && std::strcmp(argv[1], "small") == 0) return hold_small_blocks();
    if (argc > 1 && std::strcmp(argv[1], "large") == 0) return hold_large_blocks();
    bool late = argc > 2 && std::strcmp(argv[1], "late") == 0;
    if (late && !limit_after_start(std::strtol(argv[2], nullptr, 10))) return 2;
    if (late && !four_threads()) return 1;   // right after setrlimit, before any other mapping
    if (argc > 1 && std::strcmp(argv[1], "mix") == 0) return hold_mix();
    bool ok = churn(nullptr) == nullptr;
    std::printf("main thread: %s\n", ok ? "ok" : "malloc returned NULL");
    if (argc > 1 && std::strcmp(argv[1], "threads") == 0 && !four_threads()) return 1;
    for (std::size_t size : {std::size_t{4} << 20, std::size_t{40} << 20}) {
        void* p = std::malloc(size);
        if (p) std::memset(p, 1, 4096);
        std::printf("one block of %zu MiB: %s\n", size >> 20, p ? "ok" : "NULL");
        std::free(p);
    }
    int held = 0;
    errno = 0;
    for (; held < kMaxHeld; ++held) {
        void* p = std::malloc(1 << 20);
        if (!p) break;
        static_cast<char*>(p)[0] = 1;
        g_held[held] = p;
    }
    int error = errno;
    std::printf("asked for MiB blocks until malloc said no: %s\n",
                held == kMaxHeld ? "it never did" : error == ENOMEM ? "NULL, ENOMEM" : "NULL, another errno");
    for (int i = 0; i < held; ++i) std::free(g_held[i]);
    void* again = std::malloc(1 << 20);
    void* small = std::malloc(100);
    std::printf("after freeing them: %s\n", again && small ? "malloc works" : "malloc still fails");
    std::free(again);
    std::free(small);
    return 0;
}
