// stage4_threads/registry.cc: the empty heap, the thread-local heap pointer, heap records (a
// lock-free pool that never shrinks), the thread-exit hook, and the fork hooks.
#include "stage4_threads/registry.h"

#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <new>

#include "stage3_segments/segment_layout.h"
#include "stage4_threads/abandon.h"
#include "stage4_threads/arena.h"
#include "stage4_threads/os.h"
#include "stage4_threads/remote.h"
#include "stage4_threads/segment.h"

namespace edu::stage4 {

constinit Page g_empty_page{};
constinit Heap g_empty_heap;
__thread Heap* t_heap __attribute__((tls_model("initial-exec"))) = &g_empty_heap;
__thread ExitState t_exit __attribute__((tls_model("initial-exec"))) = ExitState::running;
// [S4.97] The record this thread orphaned last: its next borrowed call tries it first.
__thread Heap* t_orphan __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {

constexpr std::size_t kRecordBytes = (sizeof(Heap) + kOsPage - 1) & ~(kOsPage - 1);

std::atomic<Heap*> g_records{nullptr};
std::atomic<uint64_t> g_generation{0};
std::atomic<uint32_t> g_acquiring{0};     // threads inside heap_acquire right now
std::atomic<uint32_t> g_orphans{0};       // [S4.97] orphaned records, a hint: 0 skips the walk
std::atomic<uint32_t> g_record_count{0};  // records mapped so far
std::atomic<uint32_t> g_scan_at{2};       // [S4.114] the pool size that allows the next walk
std::atomic<bool> g_scanning{false};      // a thread is walking for dead records
pthread_key_t g_key;
bool g_key_made = false;                  // written once, under g_key_once
pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

// The pthread key's destructor: runs when a thread that has a heap exits (after its C++
// thread_local destructors, which may still free), once: every call after it borrows a record
// without the key ([S4.73], [S4.92]).
void thread_done(void* value) {
    heap_give_back(static_cast<Heap*>(value));
    t_exit = ExitState::exited;
}

void make_key() { g_key_made = pthread_key_create(&g_key, &thread_done) == 0; }

// Takes `h` if it is in state `from` (one CAS; acquire: the last holder's writes to the record
// and its segments happen before).
bool take(Heap* h, HeapState from) {
    HeapState expected = from;
    return h->state.load(std::memory_order_relaxed) == from &&
           h->state.compare_exchange_strong(expected, HeapState::in_use, std::memory_order_acquire,
                                            std::memory_order_relaxed);
}

Heap* take_orphan(bool any);
Heap* map_record();
bool release_for_record();

// [S4.113] Heap::owner: the uses of the record above, the kernel tid of its keyed holder below.
constexpr uint64_t kTidBits = 0xffffffffu;

uint32_t kernel_tid() { return static_cast<uint32_t>(syscall(SYS_gettid)); }

// The calling thread holds `h` keyed: its process and tid, one use more (release: a scanner that
// reads the word reads the record as it was taken, and the process).
void own_record(Heap* h) {
    uint64_t uses = (h->owner.load(std::memory_order_relaxed) >> 32) + 1;
    h->owner_pid.store(getpid(), std::memory_order_relaxed);
    h->owner.store(uses << 32 | kernel_tid(), std::memory_order_release);
}

// Before a record leaves in_use: no holder's tid, so no scanner asks about it.
void disown_record(Heap* h) {
    h->owner.store(h->owner.load(std::memory_order_relaxed) & ~kTidBits, std::memory_order_relaxed);
}

// [S4.97] A record nobody holds, its segments still its own: the part of orphaning that is the
// record's (heap_orphan's thread also remembers it; a scanner's dead record has no thread).
void orphan_record(Heap* heap) {
    // [S4.93] as heap_give_back: nobody's clock ticks for an orphan, so a cache that holds
    // committed memory (a huge or one-block segment the call freed) goes back to the arena now.
    if (heap->cache_bytes + heap->cache_committed != 0) segment_cache_collect(heap, true);
    // [S4.105] Nor does the purge delay of the pages its calls released run out: once they pass
    // kOrphanDirtyBytes since the last such purge, the dirty pages go back now.
    if (heap->released_bytes > kOrphanDirtyBytes) {
        heap->released_bytes = 0;
        segment_purge(heap, true);
    }
    disown_record(heap);
    g_generation.fetch_add(1, std::memory_order_relaxed);
    g_orphans.fetch_add(1, std::memory_order_relaxed);
    heap->state.store(HeapState::orphaned, std::memory_order_release);   // [S4.97]
}

// The walk of orphan_dead_records; `held` gets the records in use (or lost) after it.
unsigned orphan_dead(uint32_t* held) {
    int saved = errno;
    pid_t pid = getpid();
    uint32_t me = kernel_tid();
    unsigned orphaned = 0;
    *held = 0;
    for (Heap* h = g_records.load(std::memory_order_acquire); h != nullptr; h = h->next_record) {
        uint64_t word = h->owner.load(std::memory_order_acquire);
        auto tid = static_cast<uint32_t>(word & kTidBits);
        HeapState state = h->state.load(std::memory_order_relaxed);
        bool dead = h != t_heap && tid != 0 && tid != me && state == HeapState::in_use &&
                    h->owner_pid.load(std::memory_order_relaxed) == pid &&
                    syscall(SYS_tgkill, pid, static_cast<pid_t>(tid), 0) != 0 && errno == ESRCH &&
                    h->owner.compare_exchange_strong(word, word & ~kTidBits, std::memory_order_acquire,
                                                     std::memory_order_relaxed);
        if (dead) {
            orphan_record(h);
            ++orphaned;
        } else if (state == HeapState::in_use || state == HeapState::lost) {
            ++*held;
        }
    }
    errno = saved;
    return orphaned;
}

// [S4.114] A record for a caller that found no orphan and no free one: a dead thread's, if the
// pool has doubled since the last walk and no other thread is walking, else a new one.
Heap* dead_or_new_record() {
    if (g_record_count.load(std::memory_order_relaxed) >= g_scan_at.load(std::memory_order_relaxed) &&
        !g_scanning.exchange(true, std::memory_order_acquire)) {
        uint32_t held = 0;
        unsigned found = orphan_dead(&held);
        g_scan_at.store(2 * (held + 1), std::memory_order_relaxed);   // the caller's record counts
        g_scanning.store(false, std::memory_order_release);
        if (found != 0)
            if (Heap* h = take_orphan(true)) return h;
    }
    return stage3::under_pressure(map_record, release_for_record);   // [S4.69]
}

Heap* take_record(HeapState from) {
    for (Heap* h = g_records.load(std::memory_order_acquire); h != nullptr; h = h->next_record)
        if (take(h, from)) return h;
    return nullptr;
}

// [S4.97] An orphan, if there is one: the caller's own first (the one it left on its last
// borrowed call), else, if `any`, any. Taken as it is, segments and all.
Heap* take_orphan(bool any) {
    Heap* h = nullptr;
    if (t_orphan != nullptr && take(t_orphan, HeapState::orphaned)) h = t_orphan;
    else if (any && g_orphans.load(std::memory_order_relaxed) != 0) h = take_record(HeapState::orphaned);
    if (h) g_orphans.fetch_sub(1, std::memory_order_relaxed);
    t_orphan = nullptr;
    return h;
}

// Pressure on the records ([S4.69]): the orphans' segments first, then the abandoned empty ones.
bool release_for_record() {
    bool any = orphans_abandon();
    return abandoned_release_empty() || any;
}

Heap* map_record() {
    void* memory = os_map(kRecordBytes);
    if (!memory) return nullptr;
    os_commit_bytes(static_cast<int64_t>(kRecordBytes));
    g_record_count.fetch_add(1, std::memory_order_relaxed);
    Heap* h = new (memory) Heap();
    h->arena_base = arena_base();
    h->state.store(HeapState::in_use, std::memory_order_relaxed);
    Heap* head = g_records.load(std::memory_order_relaxed);
    do {
        h->next_record = head;
    } while (!g_records.compare_exchange_weak(head, h, std::memory_order_release, std::memory_order_relaxed));
    return h;
}

bool g_child_of_busy_parent = false;   // set in a child forked while a record was being made

// In a child after fork(): a page of `heap` that a vanished thread left `pushing` goes back to
// to_page, or its owner would wait for it forever ([S4.30]).
void settle_pushing(Heap* heap) {
    for (PageQueue& q : heap->queues) {   // the empty heap's queues are empty
        for (Page* page = q.first; page != nullptr; page = page->next) {
            uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
            if (delay_of(word) == Delay::pushing)
                page->xthread_free.store((word & ~kDelayMask) | static_cast<uintptr_t>(Delay::to_page),
                                         std::memory_order_relaxed);
        }
    }
}

}  // namespace

Heap* heap_acquire() {
    if (!arena_ready()) return nullptr;
    pthread_once(&g_key_once, make_key);
    if (!g_key_made) return nullptr;
    g_acquiring.fetch_add(1, std::memory_order_relaxed);
    // [S4.106] A borrowed call takes its own orphan, else a free record before another thread's
    // orphan: threads past their hooks at once took each other's, and then freed their own
    // blocks remotely into records that others held or had orphaned, where nobody collects them
    // (abandon_test: 16 threads, each filling and freeing 8 MiB in a destructor, left 3.0 to 24
    // MiB of footprint from run to run, 8.8 MiB every run now: 16 records, each under its bound,
    // [S4.105]). Another's orphan still before a new record, so threads whose only calls come
    // after their hooks do not pile orphans up.
    bool borrowing = t_exit == ExitState::borrowing;
    Heap* h = take_orphan(!borrowing);
    if (!h) h = take_record(HeapState::free);
    if (!h && borrowing) h = take_orphan(true);
    if (!h) h = dead_or_new_record();   // [S4.114]
    g_acquiring.fetch_sub(1, std::memory_order_relaxed);
    if (!h) return nullptr;
    t_heap = h;   // first: pthread_setspecific may itself allocate, and must find this heap
    if (t_exit != ExitState::borrowing) {   // [S4.73]
        own_record(h);                      // [S4.113]
        pthread_setspecific(g_key, h);
    }
    g_generation.fetch_add(1, std::memory_order_relaxed);
    return h;
}

void heap_give_back(Heap* heap) {
    // [S4.93] A large pool, or a cache that holds committed memory: nobody purges an abandoned
    // segment, so what its pages hold stays until a heap takes it.
    if (abandoned_count() >= kCacheSegments || heap->cache_bytes + heap->cache_committed != 0) heap_shed_empty(heap);
    heap_abandon(heap);
    t_heap = &g_empty_heap;
    disown_record(heap);   // [S4.113]
    g_generation.fetch_add(1, std::memory_order_relaxed);
    heap->state.store(HeapState::free, std::memory_order_release);   // [S4.10]: give back
}

void heap_orphan(Heap* heap) {
    t_orphan = heap;
    t_heap = &g_empty_heap;
    orphan_record(heap);
}

unsigned orphan_dead_records() {
    uint32_t held = 0;
    return orphan_dead(&held);
}

uint32_t dead_scan_threshold() { return g_scan_at.load(std::memory_order_relaxed); }

void forget_exit_hook() {
    if (g_key_made) pthread_setspecific(g_key, nullptr);
}

bool orphans_abandon() {
    if (g_orphans.load(std::memory_order_relaxed) == 0) return false;
    bool any = false;
    for (Heap* h = first_record(); h != nullptr; h = h->next_record) {
        if (!take(h, HeapState::orphaned)) continue;
        g_orphans.fetch_sub(1, std::memory_order_relaxed);
        heap_shed_empty(h);   // [S4.93]: an orphan's empty segments go back, whatever the pool holds
        heap_abandon(h);
        g_generation.fetch_add(1, std::memory_order_relaxed);
        h->state.store(HeapState::free, std::memory_order_release);
        any = true;
    }
    return any;
}

Heap* first_record() { return g_records.load(std::memory_order_acquire); }
std::size_t record_bytes() { return kRecordBytes; }

uint64_t heap_generation() {
    return g_child_of_busy_parent ? ~uint64_t{0} : g_generation.load(std::memory_order_relaxed);
}

unsigned other_heaps_in_use() {
    unsigned n = g_child_of_busy_parent ? 1 : 0;
    for (Heap* h = first_record(); h != nullptr; h = h->next_record)
        if (h != t_heap && h->state.load(std::memory_order_relaxed) != HeapState::free) ++n;
    return n;
}

void prepare_fork() {}
void after_fork_parent() {}

void after_fork_child() {
    if (g_acquiring.load(std::memory_order_relaxed) != 0) g_child_of_busy_parent = true;
    uint32_t orphans = 0;   // [S4.97] the hint recounted: a vanished thread may have taken one
    for (Heap* h = first_record(); h != nullptr; h = h->next_record) {
        HeapState state = h->state.load(std::memory_order_relaxed);
        if (h != t_heap && state == HeapState::in_use) {
            h->state.store(HeapState::lost, std::memory_order_relaxed);
            disown_record(h);   // [S4.113] a lost record is never read, whatever its tid answers
        }
        if (state == HeapState::orphaned) {
            settle_pushing(h);   // an orphan's full pages take pushes as a live heap's do
            ++orphans;
        }
    }
    g_orphans.store(orphans, std::memory_order_relaxed);
    settle_pushing(t_heap);
    // [S4.113] This thread has a tid of its own in the child: its keyed record is asked about
    // under it, or the child's first walk would find the parent's tid gone and take the record.
    if ((t_heap->owner.load(std::memory_order_relaxed) & kTidBits) != 0) own_record(t_heap);
    g_scanning.store(false, std::memory_order_relaxed);   // a walker may have vanished mid-walk
    g_generation.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace edu::stage4
