// tests/preload/limits.cc: a program that lives within a resource limit. limits_test.sh runs its
// test modes under prlimit and compares every line with glibc's: requests until malloc says NULL
// with ENOMEM, no crash, malloc working again once all is freed; with four threads, small or
// large blocks, a program's start-up (`mix`), a limit the program sets itself (`late`, and
// `first-page`'s data limits just above what it holds), and requests larger than the machine's
// memory with no limit at all (`machine`). Its
// measuring modes print what the chapters quote (stage 3's section 8, stage 4's [S4.66] to
// [S4.69]); main() lists every mode.
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <initializer_list>

namespace {

constexpr int kMaxHeld = 1 << 14;
void* g_held[kMaxHeld];
// The measuring modes' blocks, one array for all (the executable's size is part of what an
// address-space limit counts: a second array would change the counts the chapters quote).
constexpr int kMaxCounted = 1 << 16;
void* g_counted[kMaxCounted];

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

// The process's anonymous mappings (no file behind them; the brk heap), one line each with its
// size: the allocator's, and the executable's zero-filled data (g_counted and the others).
void print_anonymous_mappings(const char* when) {
    std::printf("anonymous mappings %s:\n", when);
    std::FILE* maps = std::fopen("/proc/self/maps", "r");
    if (!maps) return void(std::printf("  /proc/self/maps cannot be read\n"));
    char line[512];
    while (std::fgets(line, sizeof line, maps)) {
        unsigned long start = 0, end = 0;
        char perms[8] = {};
        char path[256] = {};
        if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &start, &end, perms, path) < 3) continue;
        if (path[0] != '\0' && std::strcmp(path, "[heap]") != 0) continue;   // a file, the stack, the vDSO
        std::printf("  %lx-%lx %s %6lu KiB %s\n", start, end, perms, (end - start) >> 10, path);
    }
    std::fclose(maps);
}

// A thread that churns mixed blocks and exits: whether it could start.
bool run_a_thread() {
    pthread_t t;
    bool ok = pthread_create(&t, nullptr, churn, nullptr) == 0;
    if (ok) pthread_join(t, nullptr);
    return ok;
}

// With the argument `count SIZE [MIB [maps]]`: how many blocks of SIZE bytes fit (the chapters
// quote these counts under `prlimit --as=N`, and with MIB: stage 4's [S4.67] to [S4.69]).
int count_blocks(std::size_t size, long late_limit_mib, bool maps) {
    if (late_limit_mib > 0) {
        if (!limit_after_start(late_limit_mib)) return 2;
        std::printf("a thread started under the limit: %s\n", run_a_thread() ? "yes" : "refused");
        if (maps) print_anonymous_mappings("after the thread");
    }
    int n = hold(g_counted, kMaxCounted, size);
    std::printf("%d blocks of %zu bytes\n", n, size);
    if (maps) print_anonymous_mappings("at NULL");
    release(g_counted, n);
    return 0;
}

// With the argument `outside SIZE`: a limit set from outside ([S4.68]). One malloc, "ready",
// then the program waits for a line on stdin while bench/limit_from_outside.sh lowers its limit
// with prlimit --pid; then blocks until NULL, freed, and a thread.
int count_after_outside_limit(std::size_t size) {
    void* volatile first = std::malloc(100);
    std::free(first);
    std::printf("ready\n");
    std::fflush(stdout);
    char line[64];
    if (!std::fgets(line, sizeof line, stdin)) return std::printf("no go-ahead on stdin\n"), 2;
    rlimit limit{};
    getrlimit(RLIMIT_AS, &limit);
    std::printf("address-space limit seen: %ld MiB\n", static_cast<long>(limit.rlim_cur >> 20));
    int n = hold(g_counted, kMaxCounted, size);
    std::printf("%d blocks of %zu bytes\n", n, size);
    release(g_counted, n);
    std::printf("a thread started afterwards: %s\n", run_a_thread() ? "yes" : "refused");
    return 0;
}

// With the argument `maps SIZE N`: what N written blocks of SIZE bytes map ([S3.62]).
int maps_of_blocks(std::size_t size, int count) {
    if (count > kMaxCounted) count = kMaxCounted;
    int n = hold(g_counted, count, size);
    std::printf("%d blocks of %zu bytes\n", n, size);
    print_anonymous_mappings("holding them");
    release(g_counted, n);
    return 0;
}

// With the argument `machine`: requests larger than the machine's memory and swap together,
// through every call of the family, with no limit set. Linux's default overcommit policy
// (vm.overcommit_memory=0) refuses a mapping or a commit larger than that on its own, so glibc
// answers NULL with ENOMEM; a stage that reserves PROT_NONE address space and makes it writable
// with mprotect must let the kernel judge the same request (before the fix, stage 3 handed out
// 25 GiB to 64 TiB blocks and stage 4 up to its 64 GiB arena, which the program's first writes
// would have taken to the OOM killer). No block is touched. Under vm.overcommit_memory=1 the
// kernel grants anything, glibc too: the mode says so and asks nothing.
int beyond_the_machine() {
    std::FILE* policy = std::fopen("/proc/sys/vm/overcommit_memory", "r");
    int mode = 0;
    if (policy) {
        if (std::fscanf(policy, "%d", &mode) != 1) mode = 0;
        std::fclose(policy);
    }
    if (mode == 1) return std::printf("vm.overcommit_memory=1: the kernel grants any request\n"), 0;
    struct sysinfo info {};
    if (sysinfo(&info) != 0) return std::printf("sysinfo failed\n"), 2;
    std::size_t machine = (std::size_t{info.totalram} + info.totalswap) * info.mem_unit;
    std::size_t size = (machine + machine / 8 + (std::size_t{1} << 20)) & ~((std::size_t{1} << 20) - 1);
    auto say = [](const char* call, void* p) {
        std::printf("%s more than the machine: %s\n", call,
                    p ? "a block" : errno == ENOMEM ? "NULL, ENOMEM" : "NULL, another errno");
        std::free(p);
    };
    errno = 0;
    say("malloc of", std::malloc(size));
    errno = 0;
    say("calloc of", std::calloc(size >> 12, 4096));
    errno = 0;
    void* small = std::malloc(100);
    void* grown = std::realloc(small, size);
    say("realloc from 100 bytes to", grown);
    if (!grown) std::free(small);
    errno = 0;
    void* large = std::malloc(std::size_t{1} << 20);
    grown = std::realloc(large, size);
    say("realloc from 1 MiB to", grown);
    if (!grown) std::free(large);
    for (std::size_t alignment : {std::size_t{4096}, std::size_t{1} << 21, std::size_t{1} << 23}) {
        char call[64];
        std::snprintf(call, sizeof call, "memalign(%zu KiB) of", alignment >> 10);
        errno = 0;
        say(call, memalign(alignment, size));
    }
    void* p = nullptr;
    int error = posix_memalign(&p, 64, size);
    std::printf("posix_memalign of more than the machine: %s\n", error == 0 ? "a block" : error == ENOMEM ? "ENOMEM" : "another error");
    if (error == 0) std::free(p);
    return 0;
}

// The process's data (VmData in /proc/self/status: what RLIMIT_DATA counts), in bytes; 0 if unread.
std::size_t data_in_use() {
    std::FILE* status = std::fopen("/proc/self/status", "r");
    if (!status) return 0;
    char line[256];
    std::size_t kib = 0;
    while (std::fgets(line, sizeof line, status))
        if (std::strncmp(line, "VmData:", 7) == 0) kib = std::strtoul(line + 7, nullptr, 10);
    std::fclose(status);
    return kib << 10;
}

// With the argument `first-page`: for each room from 0 to 48 KiB, a child sets its data limit
// that far above what it holds, asks for 20,000-byte blocks (a medium page of stages 3 and 4) until
// malloc says no, frees them and exits, which runs the stage's heap check (EDU_ALLOC_CHECK=1 in
// run_both). A room that holds a fresh segment's header but not its first page left stages 3 and 4
// with an empty segment on their open list ([S3.69], [S4.75]): the check at exit aborted.
int refused_first_page() {
    for (std::size_t room_kib = 0; room_kib <= 48; room_kib += 8) {
        std::fflush(stdout);
        pid_t child = fork();
        if (child < 0) return std::printf("fork failed\n"), 2;
        if (child == 0) {
            void* warm = std::malloc(16);   // the allocator set up before the limit
            std::free(warm);
            rlimit limit{data_in_use() + (room_kib << 10), RLIM_INFINITY};
            if (data_in_use() == 0 || setrlimit(RLIMIT_DATA, &limit) != 0) std::exit(3);
            int n = 0;
            errno = 0;
            while (n < kMaxCounted && (g_counted[n] = std::malloc(20000)) != nullptr) ++n;
            int error = errno;
            release(g_counted, n);
            std::exit(n < kMaxCounted && error == ENOMEM ? 0 : 4);
        }
        int status = 0;
        waitpid(child, &status, 0);
        std::printf("data limit %zu KiB above use, 20,000-byte blocks until NULL: %s\n", room_kib,
                    WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ENOMEM, then a clean exit"
                    : WIFEXITED(status)                           ? "no ENOMEM"
                                                                  : "the child died");
    }
    return 0;
}

// With the argument `freed-room`: 100,000-byte blocks until malloc says no, every other one
// freed, then 512 small blocks (1 to 512 bytes) in the room they left: glibc serves them all,
// errno untouched. Stage 2 said NULL to every one ([S2.31]: its small blocks came only from
// arenas it could no longer map, with megabytes free in stage 1's heap), and its raw table,
// which could not double, refused blocks past half its slots ([S2.32]).
int small_in_freed_room() {
    int n = hold(g_counted, kMaxCounted, 100000);
    for (int i = 0; i < n; i += 2) std::free(g_counted[i]);
    static void* small[512];
    int served = 0;
    errno = 0;
    for (std::size_t size = 1; size <= 512; ++size) {
        small[size - 1] = std::malloc(size);
        if (!small[size - 1]) continue;
        std::memset(small[size - 1], 1, size);
        ++served;
    }
    std::printf("blocks of 1 to 512 bytes in the room of freed 100,000-byte ones: %d of 512, errno %s\n", served,
                errno == 0 ? "untouched" : "set");
    release(small, 512);
    for (int i = 1; i < n; i += 2) std::free(g_counted[i]);
    return 0;
}

// With the argument `after-holes SIZE [LARGE]`: blocks of LARGE bytes (100,000 if not given)
// until malloc says no, every other one freed, then blocks of SIZE bytes until malloc says no:
// how many fit in the holes (stage 2's [S2.34]: its raw table, once one block of stage 1's,
// fitted in no hole past 4,096 slots; stages 3 and 4 keep a freed block for its own size class,
// [S3.75], [S4.82]).
// Past the end of g_counted the blocks are chained through their first words (SIZE >= 8), so
// tiny blocks are counted beyond kMaxCounted with no second array (which would change the counts
// below the cap, quoted before: see g_counted); a count below the cap prints as it did.
int count_after_holes(std::size_t size, std::size_t large_size) {
    int large = hold(g_counted, kMaxCounted, large_size);
    for (int i = 0; i < large; i += 2) std::free(g_counted[i]);
    int n = hold(g_counted + large, kMaxCounted - large, size);
    void* chain = nullptr;
    long more = 0;
    if (large + n == kMaxCounted && size >= sizeof(void*)) {
        for (void* p; (p = std::malloc(size)) != nullptr; ++more) {
            std::memset(p, static_cast<int>(more & 0xff), size);
            std::memcpy(p, &chain, sizeof chain);
            chain = p;
        }
    }
    std::printf("%ld blocks of %zu bytes after every other of %d blocks of %zu bytes was freed\n", n + more, size,
                large, large_size);
    while (chain) {
        void* next;
        std::memcpy(&next, chain, sizeof next);
        std::free(chain);
        chain = next;
    }
    release(g_counted + large, n);
    for (int i = 1; i < large; i += 2) std::free(g_counted[i]);
    return 0;
}

double now_us() {
    timespec t{};
    clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

// With the argument `free-cost N`: N blocks of 100,000 bytes, each written, then freed oldest
// first; the mean time of a free ([S4.66]'s table of mapped blocks).
int free_cost(int count) {
    if (count > kMaxCounted) count = kMaxCounted;
    int n = hold(g_counted, count, 100000);
    double start = now_us();
    release(g_counted, n);
    double elapsed = now_us() - start;
    std::printf("%d blocks of 100000 bytes freed oldest first: %.2f us a free\n", n, n ? elapsed / n : 0.0);
    return n == count ? 0 : 1;
}

// With the argument `rlimit-cost`: the mean time of a getrlimit (100,000 calls), and of an
// mprotect making a fresh 12 KiB segment header writable in a 4 MiB PROT_NONE reservation (1,000
// reservations), what a fresh segment's claim costs anyway ([S4.68]).
int rlimit_cost() {
    constexpr int kCalls = 100000;
    rlimit limit{};
    double start = now_us();
    for (int i = 0; i < kCalls; ++i) getrlimit(RLIMIT_AS, &limit);
    double getrlimit_us = (now_us() - start) / kCalls;
    constexpr int kReservations = 1000;
    constexpr std::size_t kReserved = std::size_t{4} << 20, kHeader = std::size_t{12} << 10;
    double mprotect_us = 0;
    for (int i = 0; i < kReservations; ++i) {
        void* r = mmap(nullptr, kReserved, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == MAP_FAILED) return std::printf("mmap failed\n"), 1;
        double before = now_us();
        int failed = mprotect(r, kHeader, PROT_READ | PROT_WRITE);
        mprotect_us += now_us() - before;
        munmap(r, kReserved);
        if (failed) return std::printf("mprotect failed\n"), 1;
    }
    std::printf("getrlimit: %.0f ns; mprotect of a fresh 12 KiB header: %.2f us\n", getrlimit_us * 1e3,
                mprotect_us / kReservations);
    return 0;
}

}  // namespace

// Test modes (limits_test.sh): none (the main thread's churn, blocks of 4 and 40 MiB, then 1 MiB
// blocks until NULL), `threads` (four threads churn too), `small` (80 MiB of 1000-byte blocks),
// `large` (200 of 100 KB), `mix` (a start-up), `late MIB` (the program limits itself to MIB MiB
// after its first malloc, then four threads at once and the rest as `threads`), `machine`
// (requests larger than the machine's memory and swap, no limit), `first-page` (a data limit
// that grants a fresh segment's header but not its first page), `freed-room` (small blocks in the
// room freed large blocks left under a limit).
// Measuring modes (not tests; the chapters quote what they print):
//   count SIZE [MIB [maps]]  blocks of SIZE bytes, each written, held until malloc says no: how
//                            many; with MIB, first one malloc, the limit lowered to MIB MiB and a
//                            thread run; with `maps`, the anonymous mappings after it and at NULL
//   outside SIZE             one malloc, "ready", a line awaited on stdin while
//                            bench/limit_from_outside.sh runs prlimit --pid, then as `count`
//                            and a thread after the blocks are freed
//   maps SIZE N              N written blocks of SIZE bytes, then the anonymous mappings
//   after-holes SIZE [LARGE] blocks of LARGE bytes (100,000) until NULL, every other freed,
//                            then blocks of SIZE bytes until NULL: how many (past 65,536
//                            blocks in all, chained through their first words: SIZE >= 8)
//   free-cost N              N blocks of 100,000 bytes freed oldest first: the time of a free
//   rlimit-cost              the time of a getrlimit, and of a fresh 12 KiB header's mprotect
int main(int argc, char** argv) {
    if (argc > 2 && std::strcmp(argv[1], "count") == 0)
        return count_blocks(std::strtoul(argv[2], nullptr, 10), argc > 3 ? std::strtol(argv[3], nullptr, 10) : 0,
                            argc > 4 && std::strcmp(argv[4], "maps") == 0);
    if (argc > 2 && std::strcmp(argv[1], "outside") == 0) return count_after_outside_limit(std::strtoul(argv[2], nullptr, 10));
    if (argc > 3 && std::strcmp(argv[1], "maps") == 0)
        return maps_of_blocks(std::strtoul(argv[2], nullptr, 10), std::atoi(argv[3]));
    if (argc > 2 && std::strcmp(argv[1], "free-cost") == 0) return free_cost(std::atoi(argv[2]));
    if (argc > 2 && std::strcmp(argv[1], "after-holes") == 0)
        return count_after_holes(std::strtoul(argv[2], nullptr, 10), argc > 3 ? std::strtoul(argv[3], nullptr, 10) : 100000);
    if (argc > 1 && std::strcmp(argv[1], "rlimit-cost") == 0) return rlimit_cost();
    if (argc > 1 && std::strcmp(argv[1], "small") == 0) return hold_small_blocks();
    if (argc > 1 && std::strcmp(argv[1], "large") == 0) return hold_large_blocks();
    if (argc > 1 && std::strcmp(argv[1], "machine") == 0) return beyond_the_machine();
    if (argc > 1 && std::strcmp(argv[1], "first-page") == 0) return refused_first_page();
    if (argc > 1 && std::strcmp(argv[1], "freed-room") == 0) return small_in_freed_room();
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
