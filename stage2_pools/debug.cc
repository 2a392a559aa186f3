// stage2_pools/debug.cc: dressing blocks with fences and fills, checking them at free, the
// quarantine ring, and the one-line reports. The blocks themselves: pool.h and raw.h.
#include "stage2_pools/debug.h"

#include <cstring>

#include "contract/debug.h"
#include "contract/diagnostics.h"
#include "stage2_pools/arena.h"
#include "stage2_pools/pool.h"
#include "stage2_pools/radix.h"
#include "stage2_pools/raw.h"
#include "stage2_pools/stats.h"

namespace edu::stage2 {
namespace {

// A debug block located: where its inner block starts and ends, and which domain holds it.
struct DebugRef {
    uintptr_t user;
    uintptr_t inner;
    uintptr_t inner_end;
    SmallRef small;  // small.pool == nullptr: a raw block
    RawEntry* raw;
};

// What a scan found wrong, if anything.
struct Damage {
    const char* kind;  // "buffer overflow", ...
    uintptr_t at;      // first damaged byte
    uintptr_t end;     // end of the region scanned (bytes shown stop there)
    uint8_t expected;
};

void fill(uintptr_t from, uintptr_t to, uint8_t byte) {
    if (to > from) std::memset(reinterpret_cast<void*>(from), byte, to - from);
}

DebugRef find(const void* user_ptr, const char* call) {
    uintptr_t user = reinterpret_cast<uintptr_t>(user_ptr);
    uintptr_t inner = user - kFrontBytes;
    if (user >= kFrontBytes && radix_lookup(inner)) {
        SmallRef ref = small_find(inner, user_ptr, call);
        return DebugRef{user, inner, inner + ref.pool->block_size, ref, nullptr};
    }
    RawEntry* entry = raw_find(user);
    if (entry && raw_is_pool(*entry)) entry = nullptr;   // a pool's address is no user pointer
    if (!entry && user >= kFrontBytes && stage1_pool_of(inner)) {   // [S2.35]
        SmallRef ref = small_find(inner, user_ptr, call);
        return DebugRef{user, inner, inner + ref.pool->block_size, ref, nullptr};
    }
    if (!entry)
        die(kStageName, call, user_ptr,
            "not a block of this heap: foreign, interior, or already freed");
    uintptr_t block = entry->block & ~kQuarantined;
    uintptr_t end = block + raw_block_usable(reinterpret_cast<void*>(block));
    return DebugRef{user, block, end, SmallRef{}, entry};
}

bool in_quarantine(const DebugRef& ref) {
    if (ref.raw) return ref.raw->block & kQuarantined;
    return load_word(ref.user - 8) == kDeadWord;
}

// Fences of a live block: front (the 8 bytes before the payload, then any extra alignment
// front), the size word, then the tail. Returns false when all are intact. Sets `n` to the
// size word, or 0 when the size word itself is implausible.
bool live_damage(const DebugRef& ref, uint64_t& n, Damage& damage) {
    n = load_word(ref.user - kFrontBytes);
    bool size_ok = n <= ref.inner_end - ref.user - kTailBytes;
    if (!size_ok) n = 0;
    uintptr_t bad = first_byte_not(ref.user - 8, ref.user, kForbiddenByte);
    if (!bad) bad = first_byte_not(ref.inner, ref.user - kFrontBytes, kForbiddenByte);
    if (bad) {
        damage = Damage{"buffer underflow", bad, ref.user, kForbiddenByte};
        return true;
    }
    if (!size_ok) {
        damage = Damage{"buffer underflow (size word overwritten)", ref.user - kFrontBytes,
                        ref.user - 8, 0};
        return true;
    }
    bad = first_byte_not(ref.user + n, ref.inner_end, kForbiddenByte);
    if (bad) {
        damage = Damage{"buffer overflow", bad, ref.inner_end, kForbiddenByte};
        return true;
    }
    return false;
}

// A quarantined block must still read DD from its front fence to its end.
bool dead_damage(const DebugRef& ref, Damage& damage) {
    uintptr_t bad = first_byte_not(ref.user - 8, ref.inner_end, kDeadByte);
    if (!bad) return false;
    damage = Damage{"use after free", bad, ref.inner_end, kDeadByte};
    return true;
}

void hex2(LineWriter& w, uint8_t byte) {
    char text[3] = {"0123456789abcdef"[byte >> 4], "0123456789abcdef"[byte & 15], 0};
    w.str(text);
}

// "<kind>: block 0x.. of N bytes, byte +K is 0x41 not 0xfd; found 41 41 fd fd ..."
void describe(LineWriter& w, const Damage& damage, uintptr_t user, uint64_t n) {
    w.str(damage.kind).str(": block ").hex(user).str(" of ").dec(n).str(" bytes, byte ");
    if (damage.at < user)
        w.str("-").dec(user - damage.at);
    else
        w.str("+").dec(damage.at - user);
    uint8_t found = *reinterpret_cast<const uint8_t*>(damage.at);
    if (damage.expected) {
        w.str(" is 0x");
        hex2(w, found);
        w.str(" not 0x");
        hex2(w, damage.expected);
    }
    w.str("; found");
    for (uintptr_t p = damage.at; p < damage.end && p < damage.at + 8; ++p) {
        w.str(" ");
        hex2(w, *reinterpret_cast<const uint8_t*>(p));
    }
}

[[noreturn]] void report(const char* call, const void* passed, const Damage& damage, uintptr_t user,
                         uint64_t n) {
    char what[200];
    LineWriter w(what, sizeof what);
    describe(w, damage, user, n);
    die(kStageName, call, passed, what);
}

// The inner block goes back to its domain: its pool, or stage 1 (and out of the raw table).
void release_inner(const DebugRef& ref) {
    if (ref.raw) {
        raw_untrack(ref.raw);
        raw_release(reinterpret_cast<void*>(ref.inner));
    } else {
        pool_free(ref.small);
    }
}

// The quarantine: a ring of user pointers and their inner block sizes, oldest first.
uintptr_t g_ring[kQuarantineSlots];
std::size_t g_ring_bytes_of[kQuarantineSlots];
std::size_t g_ring_head = 0;
std::size_t g_ring_count = 0;
std::size_t g_ring_bytes = 0;   // inner bytes held

// The oldest quarantined block leaves: it must still be all DD; then its inner block goes back.
void evict(const char* call, const void* passed) {
    uintptr_t user = g_ring[g_ring_head];
    g_ring_bytes -= g_ring_bytes_of[g_ring_head];
    g_ring_head = (g_ring_head + 1) % kQuarantineSlots;
    --g_ring_count;
    DebugRef ref = find(reinterpret_cast<const void*>(user), call);
    Damage damage;
    if (dead_damage(ref, damage)) report(call, passed, damage, user, load_word(user - kFrontBytes));
    release_inner(ref);
}

}  // namespace

void* debug_malloc(std::size_t n, std::size_t alignment) {
    std::size_t front = alignment > kFrontBytes ? alignment : kFrontBytes;
    if (n > (SIZE_MAX >> 2)) return enomem();
    std::size_t inner_bytes = front + n + kTailBytes;
    uintptr_t inner = 0, end = 0;
    if (front == kFrontBytes && inner_bytes <= kSmallMax) {
        unsigned c = class_of(inner_bytes);
        void* block = pool_malloc(c);   // NULL, errno untouched: no arena, stage 1 serves it ([S2.31])
        inner = reinterpret_cast<uintptr_t>(block);
        end = inner + class_size(c);
    }
    if (!inner) {
        void* block = raw_alloc(inner_bytes, front);
        if (!block) return nullptr;
        inner = reinterpret_cast<uintptr_t>(block);
        end = inner + raw_block_usable(block);
        if (!raw_track(inner + front, inner, n)) {
            raw_release(block);
            return enomem();
        }
    }
    uintptr_t user = inner + front;
    fill(inner, user - kFrontBytes, kForbiddenByte);
    uint64_t size_word = n;
    std::memcpy(reinterpret_cast<void*>(user - kFrontBytes), &size_word, sizeof size_word);
    fill(user - 8, user, kForbiddenByte);
    fill(user, user + n, kCleanByte);
    fill(user + n, end, kForbiddenByte);
    note_alloc(n, n);
    return reinterpret_cast<void*>(user);
}

void debug_free(void* user_ptr, const char* call) {
    DebugRef ref = find(user_ptr, call);
    if (in_quarantine(ref))
        die(kStageName, call, user_ptr,
            "double free: the block was already freed (it waits in quarantine)");
    uint64_t n;
    Damage damage;
    if (live_damage(ref, n, damage)) report(call, user_ptr, damage, ref.user, n);
    fill(ref.user - 8, ref.inner_end, kDeadByte);
    note_free(n);
    std::size_t bytes = ref.inner_end - ref.inner;
    if (bytes > kQuarantineBytes) return release_inner(ref);  // too big to wait: it was just filled
    if (ref.raw) ref.raw->block |= kQuarantined;
    if (g_ring_count == kQuarantineSlots) evict(call, user_ptr);
    while (g_ring_count && g_ring_bytes + bytes > kQuarantineBytes) evict(call, user_ptr);
    std::size_t slot = (g_ring_head + g_ring_count) % kQuarantineSlots;
    g_ring[slot] = ref.user;
    g_ring_bytes_of[slot] = bytes;
    g_ring_bytes += bytes;
    ++g_ring_count;
}

void* debug_realloc(void* user_ptr, std::size_t n) {
    if (!user_ptr) return debug_malloc(n, kAlignment);
    DebugRef ref = find(user_ptr, "realloc");
    if (in_quarantine(ref))
        die(kStageName, "realloc", user_ptr, "use after free: the block was freed");
    uint64_t old = load_word(ref.user - kFrontBytes);
    uint64_t peak = g_heap.counters.peak_live_bytes;
    void* moved = debug_malloc(n, kAlignment);
    if (!moved) return nullptr;
    std::memcpy(moved, user_ptr, old < n ? old : n);
    debug_free(user_ptr, "realloc");
    note_move_was_resize(peak);
    return moved;
}

std::size_t debug_usable(const void* user_ptr) {
    DebugRef ref = find(user_ptr, "usable_size");
    if (in_quarantine(ref))
        die(kStageName, "usable_size", user_ptr, "use after free: the block was freed");
    return load_word(ref.user - kFrontBytes);
}

void debug_drain() {
    while (g_ring_count) evict("set_option", reinterpret_cast<const void*>(g_ring[g_ring_head]));
}

uint64_t debug_quarantined() { return g_ring_count; }

bool debug_inspect(uintptr_t inner, uintptr_t user, uintptr_t inner_end, bool* quarantined,
                   char* why, std::size_t why_size) {
    DebugRef ref{user, inner, inner_end, SmallRef{}, nullptr};
    Damage damage;
    uint64_t n = 0;
    *quarantined = load_word(user - 8) == kDeadWord;
    bool damaged = *quarantined ? dead_damage(ref, damage) : live_damage(ref, n, damage);
    if (!damaged) return true;
    if (*quarantined) n = load_word(user - kFrontBytes);
    LineWriter w(why, why_size);
    describe(w, damage, user, n);
    return false;
}

}  // namespace edu::stage2
