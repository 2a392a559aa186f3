// stage3_segments/secure.cc: the key stream, per-page keys, and re-encoding every list when
// the secure option changes.
#include "stage3_segments/secure.h"

#include <sys/random.h>

#include <ctime>

#include "stage3_segments/segment.h"

namespace edu::stage3 {
namespace {

bool g_secure = false;
uint64_t g_key_state = 0;

// splitmix64: each call returns a new, well-mixed 64-bit value.
uint64_t next_key() {
    if (g_key_state == 0) {
        uint64_t seed = 0;
        if (::getrandom(&seed, sizeof seed, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof seed)) {
            timespec ts;
            ::clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 32) ^
                   reinterpret_cast<uintptr_t>(&seed);
        }
        g_key_state = seed | 1;
    }
    uint64_t z = (g_key_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Re-encodes one list from `old` keys to the page's current keys, and re-marks its blocks.
void reencode(const Page* page, const uint64_t old[2], Block* head) {
    Page before = *page;
    before.keys[0] = old[0];
    before.keys[1] = old[1];
    uint32_t steps = 0;
    for (Block* b = head; b != nullptr && steps <= page->capacity; ++steps) {
        auto* next = reinterpret_cast<Block*>(decode(&before, b->link));
        b->link = encode(page, reinterpret_cast<uintptr_t>(next));
        b->mark = freed_mark(page);
        b = next;
    }
}

}  // namespace

bool secure_mode() { return g_secure; }

void new_keys(Page* page, bool secure) {
    page->keys[0] = secure ? next_key() : 0;
    page->keys[1] = secure ? next_key() : 0;
}

void rekey_all_pages(bool secure) {
    g_secure = secure;
    for (Segment* s = first_segment(); s; s = s->next) {
        for (uint32_t i = 0; i < s->page_count; ++i) {
            Page* page = &s->pages()[i];
            if (!page->in_use || page->capacity == 1) continue;   // one-block pages: no lists
            uint64_t old[2] = {page->keys[0], page->keys[1]};
            new_keys(page, secure);
            reencode(page, old, page->free);
            reencode(page, old, page->local_free);
        }
    }
}

}  // namespace edu::stage3
