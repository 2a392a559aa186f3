// stage3_segments/drop_in.h: malloc and free of the drop-in library's usual mode (statistics and
// secure mode off), thread-safe entry, inline, so that contract/preload.cc's exported malloc and
// free are the fast paths themselves rather than a jump to them. Entry point: DropIn.
#pragma once

#include <sys/single_threaded.h>

#include <cstddef>

#include "stage3_segments/alloc.h"

namespace edu::stage3 {

// The locked paths of this mode's thread-safe entry (stage3.cc), out of line.
[[gnu::noinline]] void* drop_in_malloc_locked(std::size_t size);
[[gnu::noinline]] void drop_in_free_locked(void* p);

// [S3.57] The thread-safe entry of Mode<false, false> (S3.50) as contract/locked.h's `call`
// builds it: the flag test, then this mode's fast path, or the lock. The entry's table in
// stage3.cc holds these two functions, so contract/preload.cc can tell that the entry it chose
// is this one and compile them into its exported malloc and free: no jump between the program's
// call and the fast path.
struct DropIn {
    static void* malloc(std::size_t size) {
        if (__libc_single_threaded) [[likely]] return heap_alloc<Mode<false, false>>(&g_default_heap, size, size);
        return drop_in_malloc_locked(size);
    }
    static void free(void* p) {
        if (__libc_single_threaded) [[likely]] return heap_free<Mode<false, false>>(p);
        drop_in_free_locked(p);
    }
};

}  // namespace edu::stage3
