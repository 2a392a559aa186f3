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
// record and its segments per thread. So thread_done marks the thread `exited`, and a free made
// there with no heap goes to free_after_exit (free.cc), which sets `borrowing`: heap_acquire then
// takes a record without the key, and heap_give_back abandons it again before the free returns.
// A malloc after the hook still takes a keyed record, and the next round of destructors gives it
// back (glibc makes at most PTHREAD_DESTRUCTOR_ITERATIONS = 4 rounds), unless it is the last
// round: [S4.92].
enum class ExitState : uint8_t { running, exited, borrowing, ended };
extern __thread ExitState t_exit __attribute__((tls_model("initial-exec")));
void heap_give_back(Heap* heap);

// [S4.92] The last round. A malloc in the last round of destructors took a keyed record too,
// for a round that never came: a destructor that re-armed its key in the first three rounds and
// used a scratch buffer in the fourth (a program that leaks nothing) kept a record and its
// segments for good, about 84 KiB a thread. So thread_done counts its rounds and sets the key to
// a mark (no heap) for the next one, which makes glibc call it in every round: at the fourth it
// knows no round follows, and marks the thread `ended`. A call that may need a heap, made there
// with none (a malloc, calloc, realloc or aligned_alloc, as S4.73's free in any round), runs in
// with_borrowed_heap: its record is borrowed (no key) and given back, abandoned with the block
// it served, before the call returns; the block lives on in its segment as an exited thread's
// does. Borrowing costs a record and an abandonment a call, so the rounds before the last keep
// their keyed record; the mark costs a thread with a heap the rounds glibc would have skipped
// (about 1,600 instructions a thread: chapter, section 8). Checked where a call would take a
// heap: free_generic (free.cc), malloc_generic (every malloc and calloc whose heap is the empty
// one gets there), realloc and aligned_alloc (stage4.cc). A thread that first allocates in a
// destructor is counted from the round its record was keyed in, so it may take one keyed record
// in the last round still.
inline bool past_exit_hook(const Heap* heap) {
    return heap == &g_empty_heap && (t_exit == ExitState::exited || t_exit == ExitState::ended);
}
inline bool past_last_round(const Heap* heap) { return heap == &g_empty_heap && t_exit == ExitState::ended; }

// heap_give_back for a borrowed heap: its empty segments go back to the arena first
// (heap_shed_empty, [S4.93]) rather than to the abandoned pool, whatever the pool holds. A
// heap reclaims abandoned segments one at a time, the newest first, and only what it lacks
// ([S4.42]), so the empty ones that borrowed calls left there, one or two a call, were never
// taken again: 2000 threads whose last round allocated and freed a 64-byte block and a 1
// MiB-aligned one left 1.7 GiB of empty segments abandoned.
void heap_give_back_borrowed(Heap* heap);

template <class Call>
[[gnu::noinline, gnu::cold]] auto with_borrowed_heap(Call call) {
    ExitState was = t_exit;
    t_exit = ExitState::borrowing;
    auto give_back = [was] {
        if (t_heap != &g_empty_heap) heap_give_back_borrowed(t_heap);
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
// `pushing` state goes back to to_page, or its owner would wait for it forever.
void prepare_fork();
void after_fork_parent();
void after_fork_child();

}  // namespace edu::stage4
