// tests/errno.cc: proves that free leaves errno as it was (POSIX.1-2024 requires it; glibc keeps
// it since 2.33), on every path a stage has: small blocks whose pages empty, large and aligned
// blocks, the old block of a realloc that moves, blocks freed by a thread that did not make
// them, and frees in a thread's key destructors after the stage's own exit hook. Each free runs
// with errno set to a mark and must find it unchanged, with the system calls a free may make
// succeeding, then refused: pages locked (madvise cannot discard them) and the map count at its
// limit (an munmap that splits a mapping fails). Everything runs in forked children.
#include <doctest/doctest.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/support.h"

namespace edu::battery {
namespace {

constexpr int kMark = 1234;
constexpr std::size_t kKiB = 1024, kMiB = 1024 * kKiB;

// Sizes from every size class range of every stage, with enough small blocks that whole pages
// (and stage 2's pools and arenas) empty as they are freed, and large ones that stage 1 keeps
// at the top of its break, stages 2-4 in mappings or segments of their own.
std::vector<void*> allocate_set(const Api& heap) {
    std::vector<void*> blocks;
    const struct {
        std::size_t size;
        int count;
    } kinds[] = {{0, 4}, {24, 1500}, {48, 1500}, {500, 300}, {3000, 100}, {20 * kKiB, 20}, {100 * kKiB, 8},
                 {300 * kKiB, 4}, {kMiB, 3}, {5 * kMiB, 2}, {20 * kMiB, 1}};
    for (const auto& kind : kinds)
        for (int i = 0; i < kind.count; ++i) blocks.push_back(heap.malloc(kind.size));
    for (std::size_t alignment : {std::size_t{64}, 64 * kKiB, kMiB}) blocks.push_back(heap.aligned_alloc(alignment, 100));
    blocks.push_back(heap.calloc(1, 2 * kMiB));
    for (void* p : blocks) child_expect(p != nullptr, "a block of the set was refused");
    return blocks;
}

// Frees every block with errno set to the mark; "" or the first free that changed it.
std::string free_set(const Api& heap, const std::vector<void*>& blocks, const char* when) {
    for (void* p : blocks) {
        errno = kMark;
        std::size_t usable = heap.usable_size(p);
        heap.free(p);
        if (errno != kMark)
            return std::string("free of a block of ") + std::to_string(usable) + " B " + when + " changed errno to " +
                   std::to_string(errno);
    }
    return "";
}

void expect_set_freed(const Api& heap, const std::vector<void*>& blocks, const char* when) {
    std::string failure = free_set(heap, blocks, when);
    child_expect(failure.empty(), failure.c_str());
}

// Reallocs that grow a block out of its place (each frees the old one) and shrink it again.
void expect_reallocs_keep_errno(const Api& heap) {
    void* p = heap.malloc(100);
    child_expect(p != nullptr, "malloc(100) refused");
    for (std::size_t size : {std::size_t{5000}, 200 * kKiB, 8 * kMiB, 100 * kKiB, std::size_t{100}, 30 * kMiB}) {
        errno = kMark;
        p = heap.realloc(p, size);
        child_expect(p != nullptr, "a realloc was refused");
        child_expect(errno == kMark, ("realloc to " + std::to_string(size) + " B changed errno").c_str());
    }
    errno = kMark;
    heap.free(p);
    child_expect(errno == kMark, "free of a block that realloc grew changed errno");
}

// Locks the pages of every block (mlock by system call: the sanitizers' interceptors only
// pretend), so that any madvise a free makes to give them back is refused with EINVAL.
void lock_blocks(const Api& heap, const std::vector<void*>& blocks) {
    for (void* p : blocks) child_expect(lock_pages(p, heap.usable_size(p) + 1), "mlock of a block failed");
}

// The thread-exit case: a key made after the stage served the main thread (stage 4's own key
// comes first in every round of destructors), whose destructor re-arms itself to the last round
// glibc makes. In the first round and the last it frees the blocks its thread made before it
// exited, then blocks it makes there. The first failure is kept for the main thread.
pthread_key_t g_key;
const Api* g_heap = nullptr;
std::atomic<bool> g_failed{false};
char g_failure[256];
struct ExitingThread {
    std::vector<void*> made_before;
    int rounds = 0;
};

void record(const std::string& failure) {
    if (failure.empty() || g_failed.exchange(true)) return;
    std::snprintf(g_failure, sizeof g_failure, "%s", failure.c_str());
}

void after_exit_hook(void* value) {
    auto* me = static_cast<ExitingThread*>(value);
    ++me->rounds;
    if (me->rounds == 1 || me->rounds == PTHREAD_DESTRUCTOR_ITERATIONS) {
        std::vector<void*> mine;
        mine.swap(me->made_before);
        record(free_set(*g_heap, mine, "in a key destructor (its thread's blocks)"));
        void* made[] = {g_heap->malloc(48), g_heap->malloc(3000), g_heap->malloc(300 * kKiB), g_heap->malloc(5 * kMiB)};
        for (void* p : made) child_expect(p != nullptr, "an allocation in a key destructor was refused");
        record(free_set(*g_heap, std::vector<void*>(std::begin(made), std::end(made)), "in a key destructor (made there)"));
    }
    if (me->rounds < PTHREAD_DESTRUCTOR_ITERATIONS) pthread_setspecific(g_key, me);
}

TEST_CASE("free leaves errno as it was on every path, whether its system calls succeed or are refused") {
    const Api& heap = api();
    ChildOutcome plain = run_in_child([&] {
        expect_set_freed(heap, allocate_set(heap), "");
        expect_set_freed(heap, allocate_set(heap), "(again, into a heap that has been used)");
        expect_reallocs_keep_errno(heap);
        child_expect_heap_ok(heap, "the heap check failed");
    });
    CHECK_MESSAGE((plain.exited && plain.exit_code == 0), plain.describe());

    ChildOutcome locked = run_in_child([&] {
        std::vector<void*> blocks = allocate_set(heap);
        lock_blocks(heap, blocks);
        expect_set_freed(heap, blocks, "with its pages locked");
        child_expect_heap_ok(heap, "the heap check failed");
    });
    CHECK_MESSAGE((locked.exited && locked.exit_code == 0), locked.describe());

    // At the map count's limit a sanitizer's runtime cannot map its own memory either (TSan
    // exits 66, "failed to allocate"), as in the stages' own MapCountFull tests.
    if (kUnderSanitizer) return;
    ChildOutcome full = run_in_child([&] {
        std::vector<void*> blocks = allocate_set(heap);
        std::string failure;
        {
            MapCountFull limit;   // nothing may allocate until it is released
            failure = free_set(heap, blocks, "at the map count's limit");
        }
        child_expect(failure.empty(), failure.c_str());
        child_expect_heap_ok(heap, "the heap check failed");
    });
    CHECK_MESSAGE((full.exited && full.exit_code == 0), full.describe());
}

TEST_CASE("free leaves errno as it was for blocks of other threads and after a thread's exit hook") {
#if defined(__SANITIZE_THREAD__)
    return;   // code run in the last round of key destructors may crash TSan (threads.cc says why)
#endif
    const Api& heap = shared_api();
    ChildOutcome outcome = run_in_child([&] {
        // Blocks of a live thread freed by another (remote frees), then blocks of a thread that
        // has exited, freed by the main thread.
        std::vector<void*> mine = allocate_set(heap);
        std::string failure;
        std::vector<void*> theirs;
        std::thread([&] {
            failure = free_set(heap, mine, "made by another thread, still running");
            theirs = allocate_set(heap);
        }).join();
        child_expect(failure.empty(), failure.c_str());
        expect_set_freed(heap, theirs, "made by a thread that has exited");

        g_heap = &heap;
        heap.free(heap.malloc(1));   // the stage's own thread state (stage 4: its key) comes first
        child_expect(pthread_key_create(&g_key, after_exit_hook) == 0, "pthread_key_create failed");
        for (int t = 0; t < 4; ++t) {
            ExitingThread state;
            std::thread([&] {
                state.made_before = allocate_set(heap);
                pthread_setspecific(g_key, &state);
            }).join();
            child_expect(state.rounds == PTHREAD_DESTRUCTOR_ITERATIONS, "the key destructor did not run every round");
        }
        child_expect(!g_failed.load(), g_failure);
        child_expect_heap_ok(heap, "the heap check failed");
    });
    CHECK_MESSAGE((outcome.exited && outcome.exit_code == 0), outcome.describe());
}

}  // namespace
}  // namespace edu::battery
