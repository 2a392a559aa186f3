// stage4_threads/free.h: checking a pointer handed back by the program (free, realloc,
// usable_size), whichever thread hands it back, and the two later checks that catch a double
// free the local fast path lets through. Entry points: find_block, free_generic, freed_twice,
// page_verify_empty.
// The fast path's version is in alloc.h; what a remote free does after the check is remote.h's.
#pragma once

#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.31] Where a live block is, and whether the caller owns its page. Otherwise edu::die
// prints "edu-alloc stage4_threads: <call>(<p>): <what is wrong>" and aborts. The caller's own
// blocks get stage 3's exact checks (S3.27): carved, and a block carrying the freed mark is
// searched on all four lists that may hold it (free, local_free, xthread_free and the heap's
// delayed list) before it is called a double free. Another thread's blocks get every check
// that reads only what cannot change while the block is live: arena, start marker, page in use,
// start and size, capacity (an uncarved block is caught later, when the owner collects it,
// S4.21); a block carrying the mark is not judged here, because the lists that would confirm a
// double free are the owner's to read: a free pushes it as a suspect for the owner to settle
// (S4.46); realloc and usable_size, which cannot wait, report it (the keyed mark, S4.48, is
// one no data writes by chance).
struct Found {
    Page* page;
    bool local;     // the caller's heap owns the page
};
Found find_block(const void* p, const char* call);

// The cold side of free: null, foreign, bad, full pages, and every free of a block the calling
// thread does not own.
[[gnu::noinline]] void free_generic(void* p);

// A block malloc was about to hand out lacks the freed mark: it was on its free list twice.
// "edu-alloc stage4_threads: malloc(<b>): double free ...", then abort.
[[noreturn, gnu::cold, gnu::noinline]] void freed_twice(const Block* b);

// [S4.43] The last word on a page's lists, when the page is given back to its segment (its
// `used` count reached 0): xthread_free must be empty and every carved block must carry its
// freed mark. A block freed twice that malloc never reached makes `used` reach 0 one free early,
// while a block of the page is still live, without the mark; this pass finds it before the page
// can be reformatted under that block, and then walks the lists to name the block freed twice.
// Cold: it runs once per page given back and reads one word per carved block, in address
// order (following the lists cost six times the instructions: see the chapter).
void page_verify_empty(const Page* page);

}  // namespace edu::stage4
