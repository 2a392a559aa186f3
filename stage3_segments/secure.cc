// stage3_segments/secure.cc: the key stream's one writer, per-page keys, and re-encoding every list when
// the secure option changes.
#include "stage3_segments/secure.h"

#include "stage3_segments/segment.h"

namespace edu::stage3 {
namespace {

bool g_secure = false;
KeyStream g_keys;   // one writer: every caller holds the stage's lock ([S3.37])

// Re-encodes one list from `old` keys to the page's current keys, and re-marks its blocks.
void reencode(const Page* page, const uint64_t old[2], Block* head) {
    uint32_t steps = 0;
    for (Block* b = head; b != nullptr && steps <= page->capacity; ++steps) {
        auto* next = reinterpret_cast<Block*>(decode_link(old, b->link));
        b->link = encode(page, reinterpret_cast<uintptr_t>(next));
        b->mark = freed_mark(page);
        b = next;
    }
}

}  // namespace

bool secure_mode() { return g_secure; }

void new_keys(Page* page, bool secure) {
    page->keys[0] = secure ? g_keys.next() : 0;
    page->keys[1] = secure ? g_keys.next() : 0;
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
