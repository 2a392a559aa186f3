// stage3_segments/secure.cc: the key stream's one writer, per-page keys, and re-encoding every
// list (lists.h) when the secure option changes.
#include "stage3_segments/secure.h"

#include "stage3_segments/page.h"
#include "stage3_segments/segment.h"

namespace edu::stage3 {
namespace {

bool g_secure = false;
KeyStream g_keys;   // one writer: every caller holds the stage's lock ([S3.37])

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
            Lists::reencode(page, old, page->free);
            Lists::reencode(page, old, page->local_free);
        }
    }
}

}  // namespace edu::stage3
