// stage4_threads/registry.h: one heap per thread: the thread-local pointer, the pool of heap
// records every thread's heap comes from, the thread-exit hook that abandons a heap, and the
// fork hooks. Entry points: t_heap, g_empty_heap, heap_acquire, first_record, the fork hooks.
// What abandoning does is abandon.h's; what a heap does is heap.h's.
#pragma once

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
// back (glibc makes at most PTHREAD_DESTRUCTOR_ITERATIONS = 4 rounds).
enum class ExitState : uint8_t { running, exited, borrowing };
extern __thread ExitState t_exit __attribute__((tls_model("initial-exec")));
void heap_give_back(Heap* heap);

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
