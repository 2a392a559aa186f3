// stage4_threads/registry.h: one heap per thread: the thread-local pointer, the pool of heap
// records every thread's heap comes from, the thread-exit hook that abandons a heap, and the
// fork hooks. Entry points: t_heap, g_empty_heap, heap_acquire, first_record, the fork hooks.
// What abandoning does is abandon.h's; what a heap does is heap.h's.
#pragma once

#include <type_traits>

#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.28] The calling thread's heap. `__thread` with the initial-exec model: one load at a fixed
// offset from %fs, no call, no allocation (a C++ thread_local declared in a header would go
// through a wrapper function; the general-dynamic model through __tls_get_addr, which may call
// malloc). Every thread starts at the empty heap, whose direct slots name the empty page and
// whose owned[] is all zero, so the first malloc and the first free of a thread fall through
// their fast paths to code that calls heap_acquire.
extern Heap g_empty_heap;
extern __thread Heap* t_heap __attribute__((tls_model("initial-exec")));

// [S4.29] A heap for the calling thread: a free record from the pool (a CAS from free to
// in_use), or a new one mapped and pushed on the registry list (a CAS on its head). The record
// becomes t_heap and the value of a pthread key whose destructor runs at thread exit and
// abandons the heap (abandon.h), then returns the record to the pool. Thread-safe, lock-free,
// usable before main; nullptr with errno = ENOMEM if the arena or a record cannot be had.
Heap* heap_acquire();

// [S4.73] After the exit hook. glibc frees the thread's own buffers (strerror's text for an
// unknown number, dlerror's, the resolver's) in __libc_thread_freeres, after the last round of
// key destructors: a record such a free takes (to count it, or to adopt an abandoned segment,
// [S4.47]) would be keyed for a destructor that never runs again, and stay in use for good, one
// record and its segments per thread. So thread_done marks the thread `exited`, and a call made
// there with no heap borrows one ([S4.92]): `borrowing` tells heap_acquire to take a record
// without the key.
enum class ExitState : uint8_t { running, exited, borrowing };
extern __thread ExitState t_exit __attribute__((tls_model("initial-exec")));
void heap_give_back(Heap* heap);

// [S4.92] Every call after the exit hook borrows. glibc makes up to PTHREAD_DESTRUCTOR_ITERATIONS
// (4) rounds of key destructors, and a destructor that stores a new value arms its key for one
// more round; a malloc made after thread_done, in any round, took a keyed record, which the next
// round gave back, unless no round came: a destructor that re-armed its key in the first three
// rounds and used a scratch buffer in the fourth (a program that leaks nothing) kept a record
// and its segments for good, about 84 KiB a thread. Counting thread_done's rounds did not close
// it: a thread whose first call came in a destructor was counted from the round its record was
// keyed in. So a call that may need a heap (a free, malloc, calloc, realloc or aligned_alloc),
// made past the hook with none, runs in with_borrowed_heap: the record it takes is not keyed, and
// it is orphaned ([S4.97]), not abandoned, before the call returns, so the thread's next call
// takes the same record back for two atomic operations. Checked where a call would take a heap:
// free_generic (free.cc), malloc_generic (every malloc and calloc whose heap is the empty one
// gets there), realloc and aligned_alloc (stage4.cc). A thread whose very first call comes in the
// last round of destructors still takes a keyed record that no round gives back (the allocator
// cannot tell that round from any first call): [S4.113] finds it once the thread is gone.
inline bool past_exit_hook(const Heap* heap) { return heap == &g_empty_heap && t_exit == ExitState::exited; }

// [S4.97] Orphaned records. A borrowed record was given back abandoned, its empty segments
// first returned to the arena ([S4.93]), and the next call of the same thread borrowed again:
// the reclaim ([S4.42]) adopted the segment the call before had abandoned, every page of it,
// and the give-back walked them all again, about 6,400 instructions a malloc where the heap's
// own path takes 100 (50 threads at a time, twice, 200 last-round mallocs each: 137 to 140
// million instructions; now 12.5 million, glibc 11.1). Now the record is orphaned: no thread's,
// its segments still its own. Its pages keep their Delay state, so other threads' frees land
// on their lists as for a live owner. Whoever takes an orphan owns it as it is: the thread that
// left it, on its next borrowed call (t_orphan, one CAS), or any thread taking a record
// (heap_acquire prefers an orphan to a free record, so orphans do not pile up; [S4.106]: a
// borrowed call prefers a free record to another thread's orphan). The checker,
// pressure ([S4.69]) and secure mode's switch abandon every orphan (orphans_abandon:
// heap_shed_empty and heap_abandon, as a thread's exit does) before they read or need its
// segments. An orphan's clock stands still, so heap_orphan gives back a cache that holds
// committed memory first, as heap_give_back sheds it ([S4.93]).
//
// [S4.105] Nor does an orphan's purge delay run out: the pages its last calls emptied stayed
// dirty until a thread took it (about a segment an orphan: 16 threads at once, each filling and
// freeing 20 MiB of 1 KiB blocks in a key destructor, grew the resident set by 66 MB). So
// heap_orphan purges once the pages its calls left dirty since its last such purge
// (Heap::released_bytes, counted where page_release leaves a page dirty) pass kOrphanDirtyBytes,
// 8 small pages or one medium page. Not at every orphaning: a thread's free(malloc(64)) pairs
// after the hook empty their page at every free, and purging at each orphaning made a page
// release and an madvise of every free (9.5 times the instructions). A purge now follows more
// than 512 KiB of pages the calls filled and emptied, so it costs in proportion to the work
// that made it, and the pairs' page, retired, not released, never counts. An orphan keeps less
// than the bound dirty from its own releases (what segments it adopted bring is not counted),
// and its retired pages, one per bin it used last. Nor could the purge wait for the thread's
// last call: no call knows it is the last (glibc frees its own buffers after the last round of
// destructors, where nobody may hook). Counting, not walking the purge list at each orphaning:
// the walk cost 8% more instructions on `exit_rounds last` (a popcount call per segment).
inline constexpr std::size_t kOrphanDirtyBytes = std::size_t{512} << 10;
void heap_orphan(Heap* heap);
extern __thread Heap* t_orphan __attribute__((tls_model("initial-exec")));   // the caller's last
bool orphans_abandon();   // true if any orphan was abandoned

template <class Call>
[[gnu::noinline, gnu::cold]] auto with_borrowed_heap(Call call) {
    ExitState was = t_exit;
    t_exit = ExitState::borrowing;
    auto give_back = [was] {
        if (t_heap != &g_empty_heap) heap_orphan(t_heap);
        t_exit = was;
    };
    if constexpr (std::is_void_v<decltype(call())>) {
        call();
        give_back();
    } else {
        auto result = call();
        give_back();
        return result;
    }
}

// [S4.113] Records whose thread is gone. A thread whose first call into the stage comes in the
// last round of pthread key destructors takes a record keyed for a round that never comes
// (glibc makes at most PTHREAD_DESTRUCTOR_ITERATIONS rounds, then clears the values): nothing
// gives it back, and 2000 such threads kept 2000 records and their segments (72 MiB resident).
// The allocator cannot tell that round from any first call, but it can tell afterwards that the
// thread is gone. A keyed record holds its thread's kernel tid (Heap::owner, with a count of the
// record's uses above it, so that a compare-and-swap cannot mistake a later use for the one it
// read); orphan_dead_records walks the records and asks the kernel, tgkill(getpid(), tid, 0),
// about each keyed one: ESRCH means no thread of this process has that tid, so the holder has
// made its exit system call, after every destructor and __libc_thread_freeres, and will make no
// call again. The record becomes an orphan ([S4.97]), which the next thread that needs one takes
// as it is. Any other answer leaves the record: the thread may still be in its last
// destructors, or a new thread has its tid (a record kept longer, never one taken from a live
// thread, since a live thread's tid always answers). The kernel reaps the tid (unhashes it)
// after the thread's last user-mode store, and x86-64 keeps stores in order, so the scanner
// sees everything the thread wrote. The caller's own record, lost records (a fork's), borrowed
// ones (no tid: their thread is inside a call) and records keyed in another process are never
// read: a child forked without the fork hooks (in-process use) still holds its parent's tids,
// all of them gone in the child, the survivor's own among them. after_fork_child writes the
// survivor's new tid. Returns the number of records orphaned; errno is kept.
unsigned orphan_dead_records();

// [S4.114] When heap_acquire looks: only when it would otherwise map a new record, and only once
// the pool has doubled since the last walk (kept records counted then): a walk costs a system call
// per keyed record, at most two per record that the process made or reused since the walk
// before, and nothing on any path but a thread's first call.
uint32_t dead_scan_threshold();   // for tests: the pool size that allows the next walk

// For tests: forgets the calling thread's exit hook (its key value cleared, as glibc clears it
// after the last round of destructors), so that the thread exits holding its record.
void forget_exit_hook();

// Every heap record ever made, in the order they were listed (newest first); walking the list
// is safe at any time, records are never unmapped.
Heap* first_record();

// Bytes of one heap record (what the footprint counts for it).
std::size_t record_bytes();

// Heap acquisitions and releases so far, and the number of records in use by a thread other
// than the caller's: the checker cross-checks global totals only when both stand still.
uint64_t heap_generation();
unsigned other_heaps_in_use();

// [S4.30] fork(2). Nothing is locked, so there is nothing to take before a fork or release
// after it in the parent. In the child only the forking thread lives on: the records of all
// other threads become lost (their segments are never reclaimed nor read: a thread may have
// been half-way through its fast path when the copy was taken, and its leftovers are leaked,
// as in mimalloc), and any page of the surviving heap that a vanished thread left in the
// `pushing` state goes back to to_page, or its owner would wait for it forever; so does any such
// page of an orphaned record ([S4.97]), which a thread of the child may take.
void prepare_fork();
void after_fork_parent();
void after_fork_child();

}  // namespace edu::stage4
