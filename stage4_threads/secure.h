// stage4_threads/secure.h: secure mode: stage 3's link encoding (encoding.h) on every list of
// a page, the shared one included, and on the heap's delayed list; per-page keys and the mode
// switch. Entry points: encode, decode, next_of, chain_next, new_keys, secure_mode,
// secure_switch. The fast paths' use of it is alloc.h's (a Mode parameter, as stats).
#pragma once

#include <cstdint>

#include "stage3_segments/encoding.h"
#include "stage4_threads/types.h"

namespace edu::stage4 {

// [S4.56] Secure mode, stage 3's (S3.10) made safe for threads. Links are encoded with two keys
// of the block's page, on all three lists: `free` and `local_free`, which only the owner
// touches, and `xthread_free`, on which other threads push. A remote free must encode its link
// with keys it may read without a race: a page's keys are written by its owner when it
// formats the page, before any block of it is handed out (the same hand-off that publishes
// start and block_size, S4.31), and never change while the page is in use, so a remote free
// reads them beside the fields it reads anyway (line 1 of the record). The delayed list chains
// blocks of several pages: each of its links is encoded with the keys of its own block's page.
// Keys change only when the mode does, and only by the pages' owner: set_option("secure")
// re-keys the caller's heap (and first adopts every abandoned segment, whose pages then become
// its own), and is refused while another thread's heap is in use, whose pages only that thread
// may rewrite. The freed mark is S4.48's, keyed already; its key is not per page.
inline uintptr_t encode(const Page* page, uintptr_t next) { return stage3::encode_link(page->keys, next); }
inline uintptr_t decode(const Page* page, uintptr_t link) { return stage3::decode_link(page->keys, link); }
inline Block* next_of(const Page* page, const Block* b) { return reinterpret_cast<Block*>(decode(page, b->link)); }
// The next block of a chain of blocks of several pages (the delayed list): b's own page's keys.
inline Block* chain_next(const Block* b) { return next_of(stage4::page_of(b), b); }

// Fresh keys from the heap's stream in secure mode, {0, 0} otherwise (the owner, formatting).
void new_keys(Page* page, Heap* heap);
bool secure_mode();
// Sets the mode and re-keys the caller's heap; false (nothing changed) while another thread's
// heap is in use, or when the caller cannot have a heap.
bool secure_switch(bool on);

}  // namespace edu::stage4
