// stage4_threads/registry.cc: the empty heap, the thread-local heap pointer, heap records (a
// lock-free pool that never shrinks), the thread-exit hook, and the fork hooks.
#include "stage4_threads/registry.h"

#include <limits.h>
#include <pthread.h>

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
__thread uint8_t t_exit_rounds __attribute__((tls_model("initial-exec"))) = 0;   // [S4.92]

namespace {

constexpr std::size_t kRecordBytes = (sizeof(Heap) + kOsPage - 1) & ~(kOsPage - 1);

std::atomic<Heap*> g_records{nullptr};
std::atomic<uint64_t> g_generation{0};
std::atomic<uint32_t> g_acquiring{0};     // threads inside heap_acquire right now
pthread_key_t g_key;
bool g_key_made = false;                  // written once, under g_key_once
pthread_once_t g_key_once = PTHREAD_ONCE_INIT;

// The key's value between rounds of destructors when the thread has no heap: a mark, so that
// glibc calls thread_done in every round ([S4.92]).
char g_next_round;

// The pthread key's destructor: runs when a thread that has a heap exits (after its C++
// thread_local destructors, which may still free). If a later destructor allocates again, the
// thread gets a record again, sets the key again, and glibc calls this once more.
void thread_done(void* value) {
    if (value != &g_next_round) heap_give_back(static_cast<Heap*>(value));
    t_exit = ExitState::exited;   // [S4.73]
    if (++t_exit_rounds < PTHREAD_DESTRUCTOR_ITERATIONS) pthread_setspecific(g_key, &g_next_round);
    else t_exit = ExitState::ended;   // [S4.92]
}

void make_key() { g_key_made = pthread_key_create(&g_key, &thread_done) == 0; }

Heap* take_free_record() {
    for (Heap* h = g_records.load(std::memory_order_acquire); h != nullptr; h = h->next_record) {
        HeapState expected = HeapState::free;
        if (h->state.load(std::memory_order_relaxed) == HeapState::free &&
            h->state.compare_exchange_strong(expected, HeapState::in_use, std::memory_order_acquire,
                                             std::memory_order_relaxed))
            return h;
    }
    return nullptr;
}

Heap* map_record() {
    void* memory = os_map(kRecordBytes);
    if (!memory) return nullptr;
    os_commit_bytes(static_cast<int64_t>(kRecordBytes));
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

}  // namespace

Heap* heap_acquire() {
    if (!arena_ready()) return nullptr;
    pthread_once(&g_key_once, make_key);
    if (!g_key_made) return nullptr;
    g_acquiring.fetch_add(1, std::memory_order_relaxed);
    Heap* h = take_free_record();
    if (!h) h = stage3::under_pressure(map_record, abandoned_release_empty);   // [S4.69]
    g_acquiring.fetch_sub(1, std::memory_order_relaxed);
    if (!h) return nullptr;
    t_heap = h;   // first: pthread_setspecific may itself allocate, and must find this heap
    if (t_exit != ExitState::borrowing) pthread_setspecific(g_key, h);   // [S4.73]
    g_generation.fetch_add(1, std::memory_order_relaxed);
    return h;
}

void heap_give_back(Heap* heap) {
    if (abandoned_count() >= kCacheSegments) heap_shed_empty(heap);   // [S4.93]
    heap_abandon(heap);
    t_heap = &g_empty_heap;
    g_generation.fetch_add(1, std::memory_order_relaxed);
    heap->state.store(HeapState::free, std::memory_order_release);   // [S4.10]: give back
}

void heap_give_back_borrowed(Heap* heap) {
    heap_shed_empty(heap);
    heap_give_back(heap);
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
    for (Heap* h = first_record(); h != nullptr; h = h->next_record)
        if (h != t_heap && h->state.load(std::memory_order_relaxed) == HeapState::in_use)
            h->state.store(HeapState::lost, std::memory_order_relaxed);
    Heap* heap = t_heap;
    for (PageQueue& q : heap->queues) {   // the empty heap's queues are empty
        for (Page* page = q.first; page != nullptr; page = page->next) {
            uintptr_t word = page->xthread_free.load(std::memory_order_relaxed);
            if (delay_of(word) == Delay::pushing)
                page->xthread_free.store((word & ~kDelayMask) | static_cast<uintptr_t>(Delay::to_page),
                                         std::memory_order_relaxed);
        }
    }
    g_generation.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace edu::stage4
