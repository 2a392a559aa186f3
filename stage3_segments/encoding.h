// stage3_segments/encoding.h: what stages 3 and 4 share of secure mode: a free-list link
// encoded with two keys, the key stream, and the one line that reports a link that does not
// decode to a block of its page. Entry points: encode_link, decode_link, KeyStream,
// die_corrupted_link. Where keys live and who may change them is each stage's (secure.h, S4.56).
#pragma once

#include <sys/random.h>

#include <cstdint>
#include <ctime>

#include "contract/diagnostics.h"

namespace edu::stage3 {

// [S3.10] The encoding of a free-list link, with k0, k1 the page's keys:
//    encode(x) = rotl(x ^ k1, k0 mod 64) + k0        decode(y) = rotr(y - k0, k0 mod 64) ^ k1
// An overflow that writes a plain address into a free block decodes to garbage, which the
// decoder's caller rejects unless it lands on a carved block of the same page ([S3.6]); the
// end of a list (0) encodes to a non-zero word, so a zeroed block is not a valid list end.
// With keys {0, 0} both are the identity, so code off the fast paths encodes and decodes
// always, whatever the mode; only the fast paths skip the arithmetic when it is off.
inline uint64_t rotl(uint64_t x, unsigned r) { return (x << (r & 63)) | (x >> ((64 - r) & 63)); }
inline uint64_t rotr(uint64_t x, unsigned r) { return (x >> (r & 63)) | (x << ((64 - r) & 63)); }

inline uintptr_t encode_link(const uint64_t keys[2], uintptr_t next) {
    return rotl(next ^ keys[1], static_cast<unsigned>(keys[0])) + keys[0];
}
inline uintptr_t decode_link(const uint64_t keys[2], uintptr_t link) {
    return rotr(link - keys[0], static_cast<unsigned>(keys[0])) ^ keys[1];
}

// [S3.11] Keys come from a splitmix64 stream, seeded once from getrandom(2) (the clock and an
// address if that fails). Each stream has one writer: stage 3's is global (under its lock),
// each of stage 4's heaps has its own.
struct KeyStream {
    uint64_t state = 0;   // 0: not seeded yet

    uint64_t next() {
        if (state == 0) {
            uint64_t seed = 0;
            if (::getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
                timespec ts;
                ::clock_gettime(CLOCK_MONOTONIC, &ts);
                seed = static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 32) ^
                       reinterpret_cast<uintptr_t>(&seed);
            }
            state = seed | 1;
        }
        uint64_t z = (state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
};

// A link that decodes to no block of its page: an overflow or a write after free reached a
// free block. One line naming the stage, the call and the block whose link is bad.
[[gnu::cold, noreturn]] inline void die_corrupted_link(const char* stage, const char* call, const void* block) {
    die(stage, call, block, "free list corrupted: a block's link leaves its page (overflow or use after free?)");
}

// A free list whose head lies outside its page's 4 MiB chunk ([S3.65]): the link of the block
// popped before it was rewritten, and nothing is read through it.
[[gnu::cold, noreturn]] inline void die_wild_head(const char* stage, const char* call, const void* block) {
    die(stage, call, block,
        "free list corrupted: the next free block's address leaves its page's segment (a free block's "
        "link overwritten: an overflow from the block below it, or a write after free)");
}

}  // namespace edu::stage3
