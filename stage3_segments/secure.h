// stage3_segments/secure.h: free-list encoding with per-page keys, the freed mark, and the
// key source. Entry points: encode, decode, freed_mark, new_keys, rekey_all_pages.
// With keys {0, 0} encoding is the identity, so code off the fast path never needs to know
// whether secure mode is on; only alloc.h's fast paths skip the arithmetic when it is off.
#pragma once

#include <cstdint>

#include "stage3_segments/types.h"

namespace edu::stage3 {

// [S3.10] The encoding of a free-list link, with k0, k1 the page's keys:
//    encode(x) = rotl(x ^ k1, k0 mod 64) + k0        decode(y) = rotr(y - k0, k0 mod 64) ^ k1
// An overflow that writes a plain address into a free block decodes to garbage, which the
// decoder's caller rejects unless it lands on a carved block of the same page ([S3.6]); the
// end of a list (0) encodes to a non-zero word, so a zeroed block is not a valid list end.
inline uint64_t rotl(uint64_t x, unsigned r) { return (x << (r & 63)) | (x >> ((64 - r) & 63)); }
inline uint64_t rotr(uint64_t x, unsigned r) { return (x >> (r & 63)) | (x << ((64 - r) & 63)); }

inline uintptr_t encode(const Page* page, uintptr_t next) {
    return rotl(next ^ page->keys[1], static_cast<unsigned>(page->keys[0])) + page->keys[0];
}
inline uintptr_t decode(const Page* page, uintptr_t link) {
    return rotr(link - page->keys[0], static_cast<unsigned>(page->keys[0])) ^ page->keys[1];
}
inline Block* decode_block(const Page* page, const Block* b) {
    return reinterpret_cast<Block*>(decode(page, b->link));
}

// The word a free block carries in its second slot ([S3.4]).
inline uint64_t freed_mark(const Page* page) { return kFreedMark ^ page->keys[1]; }

// [S3.11] Keys: a fresh pair for each page while secure mode is on (a splitmix64 stream seeded
// once from getrandom(2)), {0, 0} while it is off. Switching the mode re-encodes every list of
// every page in use with the new keys (rekey_all_pages), so the option can change at any time.
void new_keys(Page* page, bool secure);
void rekey_all_pages(bool secure);
bool secure_mode();                 // the current setting, for code off the fast path

}  // namespace edu::stage3
