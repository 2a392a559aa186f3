// stage3_segments/secure.h: free lists encoded with per-page keys, the freed mark, and the
// mode switch. Entry points: encode, decode, freed_mark, new_keys, rekey_all_pages.
// The encoding and the key stream are encoding.h's, shared with stage 4; this file keeps the
// keys of stage 3's pages and switches the mode. Only alloc.h's fast paths depend on it.
#pragma once

#include <cstdint>

#include "stage3_segments/encoding.h"
#include "stage3_segments/types.h"

namespace edu::stage3 {

// The encoding of a link with the page's keys ([S3.10], encoding.h, shared with stage 4).
inline uintptr_t encode(const Page* page, uintptr_t next) { return encode_link(page->keys, next); }
inline uintptr_t decode(const Page* page, uintptr_t link) { return decode_link(page->keys, link); }
inline Block* decode_block(const Page* page, const Block* b) {
    return reinterpret_cast<Block*>(decode(page, b->link));
}

// The word a free block carries in its second slot ([S3.4]).
inline uint64_t freed_mark(const Page* page) { return kFreedMark ^ page->keys[1]; }

// Keys: a fresh pair for each page while secure mode is on (from the stream of [S3.11]),
// {0, 0} while it is off. Switching the mode re-encodes every list of every page in use with
// the new keys (rekey_all_pages), so the option can change at any time.
void new_keys(Page* page, bool secure);
void rekey_all_pages(bool secure);
bool secure_mode();                 // the current setting, for code off the fast path

}  // namespace edu::stage3
