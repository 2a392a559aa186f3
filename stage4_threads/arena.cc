// stage4_threads/arena.cc: the reservation, the claimed and abandoned bitmaps, start markers.
// Every shared word here is an atomic; every ordering is explained at its use and in [S4.10].
#include "stage4_threads/arena.h"

#include <pthread.h>
#include <sys/resource.h>

#include <cerrno>

#include "contract/diagnostics.h"
#include "stage4_threads/os.h"

namespace edu::stage4 {

uint64_t g_mark_key = 0;   // drawn by reserve(), before the first block exists

namespace arena_internal {
std::atomic<uintptr_t> g_base{0};
std::atomic<uint64_t> g_bytes{0};                 // 0 until reserved
std::atomic<uint32_t> g_starts[kArenaSlots];      // [S4.12]
}  // namespace arena_internal

namespace {

using arena_internal::g_base;
using arena_internal::g_bytes;
using arena_internal::g_starts;

std::atomic<uint64_t> g_claimed[kArenaWords];     // bit s: slot s belongs to a segment
std::atomic<uint64_t> g_abandoned[kArenaWords];   // bit s: the segment at s has no owner
std::atomic<uint64_t> g_abandoned_count{0};
std::atomic<uint32_t> g_recent[kRecentAbandoned];   // slot + 1 of a recent abandon; 0: none
std::atomic<uint32_t> g_recent_next{0};
static_assert((kRecentAbandoned & (kRecentAbandoned - 1)) == 0, "the ring index wraps with its counter");
pthread_once_t g_once = PTHREAD_ONCE_INIT;
bool g_lazy = false;   // [S4.67] written by reserve() before g_bytes is published

constexpr uint64_t low_bits(uint32_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// [S4.15] The reservation: 64 GiB, or as much of it as the system grants (halving down to one
// segment), address space only (os_reserve), trimmed to a 4 MiB boundary. It is made once, by
// pthread_once, from the first thread that needs memory; that may be before main, from a
// constructor of another library. It draws the key of the freed mark (S4.48) first: no block
// exists before the arena does. Under an address-space limit (RLIMIT_AS: `ulimit -v`,
// containers) nothing is reserved ([S4.67]); only when no room is found for that, half of the
// limit is, in whole segments, so that thread stacks, libraries and the rest of the process
// keep room ([S4.65]).
std::size_t first_size_to_try(const rlimit& limit) {
    if (limit.rlim_cur == RLIM_INFINITY) return kArenaMaxBytes;
    std::size_t half = (limit.rlim_cur / 2) & ~kSegmentMask;   // [S4.65] not a power of two
    return half < kArenaMinBytes ? kArenaMinBytes : half < kArenaMaxBytes ? half : kArenaMaxBytes;
}

// [S4.67] A lazy arena: under an address-space limit every byte reserved counts against it,
// used or not, so the range is only chosen, never reserved. A segment's slots are mapped piece
// by piece as it commits them (arena_commit, with MAP_FIXED_NOREPLACE), and unmapped when it
// goes back, so the limit is charged what the heaps have made writable, as a data limit is
// (S4.39). The range lies halfway between address zero and a page the kernel maps now, tens
// of terabytes below it: the kernel hands out address space from the top down (in the legacy
// layout, upward from a base above the range), and a process that holds at most the limit
// does not come near. An executable and its brk heap lie above the range (a PIE) or far
// below. Should something land there after all, arena_commit refuses to map over it. False
// when the space below that page is too small for the range or the limit is an eighth of it or
// more: reserve() then reserves half the limit ([S4.65]).
bool place_lazily(const rlimit& limit) {
    void* probe = os_reserve(kOsPage);
    if (!probe) return false;
    os_unmap(probe, kOsPage);
    uintptr_t half = reinterpret_cast<uintptr_t>(probe) / 2;
    if (limit.rlim_cur >= half / 8 || half < 2 * kArenaMaxBytes) return false;
    g_lazy = true;
    g_base.store(half & ~kSegmentMask, std::memory_order_relaxed);
    g_bytes.store(kArenaMaxBytes, std::memory_order_release);   // pairs with arena_ready's acquire
    return true;
}

void reserve() {
    g_mark_key = edu::draw_mark_key();
    rlimit limit{RLIM_INFINITY, RLIM_INFINITY};
    getrlimit(RLIMIT_AS, &limit);
    if (limit.rlim_cur != RLIM_INFINITY && place_lazily(limit)) return;
    for (std::size_t size = first_size_to_try(limit); size >= kArenaMinBytes; size = (size / 2) & ~kSegmentMask) {
        void* memory = os_reserve(size + kSegmentSize);
        if (!memory) continue;
        auto at = reinterpret_cast<uintptr_t>(memory);
        uintptr_t aligned = (at + kSegmentMask) & ~kSegmentMask;
        std::size_t head = aligned - at, tail = kSegmentSize - head;
        if (head) os_unmap(memory, head);
        if (tail) os_unmap(reinterpret_cast<void*>(aligned + size), tail);
        g_base.store(aligned, std::memory_order_relaxed);
        g_bytes.store(size, std::memory_order_release);   // pairs with arena_ready's acquire
        return;
    }
}

// The bits of word `w` that exist in a bitmap of `bits` bits.
uint64_t valid_bits(uint32_t bits, uint32_t w) {
    uint32_t first = w * 64;
    return bits - first >= 64 ? ~uint64_t{0} : low_bits(bits - first);
}

// Positions where a run of `count` (1..64) zero bits of `value` begins, among `valid` bits.
// `starts` holds runs of length `have`; ANDing it with itself shifted by `step` <= `have`
// leaves the runs of length have + step, so 64 takes six rounds.
uint64_t run_starts(uint64_t value, uint64_t valid, uint32_t count) {
    uint64_t starts = ~value & valid;
    for (uint32_t have = 1; have < count && starts != 0;) {
        uint32_t step = have < count - have ? have : count - have;
        starts &= starts >> step;
        have += step;
    }
    return starts;
}

int64_t claim_in_word(std::atomic<uint64_t>* words, uint32_t bits, uint32_t w, uint32_t count) {
    uint64_t valid = valid_bits(bits, w);
    uint64_t value = words[w].load(std::memory_order_relaxed);
    for (;;) {
        uint64_t starts = run_starts(value, valid, count);
        if (starts == 0) return -1;
        unsigned bit = static_cast<unsigned>(__builtin_ctzll(starts));
        uint64_t mask = low_bits(count) << bit;
        // acquire: pairs with the release in bitmap_release, so whatever the slots' last user
        // wrote happens before what we write into them. On failure `value` is the new word.
        if (words[w].compare_exchange_weak(value, value | mask, std::memory_order_acquire,
                                           std::memory_order_relaxed))
            return int64_t{w} * 64 + bit;
    }
}

// A run of more than 64 bits, from bit 0 of word w: whole words, then the low bits of one more.
int64_t claim_across(std::atomic<uint64_t>* words, uint32_t bits, uint32_t w, uint32_t count) {
    uint32_t first = w * 64;
    if (count > bits - first) return -1;
    uint32_t n = (count + 63) / 64;
    for (uint32_t k = 0; k < n; ++k) {
        uint64_t mask = low_bits(count - 64 * k);
        uint64_t value = words[w + k].load(std::memory_order_relaxed);
        bool claimed = false;
        while ((value & mask) == 0) {
            if (words[w + k].compare_exchange_weak(value, value | mask, std::memory_order_acquire,
                                                   std::memory_order_relaxed)) {
                claimed = true;
                break;
            }
        }
        if (!claimed) {   // word k is partly taken: give back words 0..k-1, which are whole
            for (uint32_t j = 0; j < k; ++j) words[w + j].fetch_and(0, std::memory_order_release);
            return -1;
        }
    }
    return first;
}

}  // namespace

int64_t bitmap_claim(std::atomic<uint64_t>* words, uint32_t bits, uint32_t count, uint32_t hint) {
    if (count == 0 || count > bits) return -1;
    uint32_t nwords = (bits + 63) / 64;
    if (hint >= nwords) hint = 0;
    for (uint32_t i = 0; i < nwords; ++i) {
        uint32_t w = (hint + i) % nwords;
        int64_t got = count <= 64 ? claim_in_word(words, bits, w, count) : claim_across(words, bits, w, count);
        if (got >= 0) return got;
    }
    return -1;
}

void bitmap_release(std::atomic<uint64_t>* words, uint32_t first, uint32_t count) {
    while (count > 0) {
        uint32_t w = first / 64, bit = first % 64;
        uint32_t take = 64 - bit < count ? 64 - bit : count;
        // release: everything written into these slots happens before their next claim.
        words[w].fetch_and(~(low_bits(take) << bit), std::memory_order_release);
        first += take;
        count -= take;
    }
}

bool bitmap_all_set(const std::atomic<uint64_t>* words, uint32_t first, uint32_t count) {
    for (uint32_t i = first; i < first + count; ++i)
        if (!((words[i / 64].load(std::memory_order_relaxed) >> (i % 64)) & 1)) return false;
    return true;
}

bool arena_ready() {
    if (g_bytes.load(std::memory_order_acquire) != 0) return true;
    pthread_once(&g_once, reserve);
    return g_bytes.load(std::memory_order_acquire) != 0;
}


Segment* arena_claim(uint32_t blocks, uint32_t* hint) {
    if (!arena_ready()) return nullptr;
    int64_t first = bitmap_claim(g_claimed, arena_slots(), blocks, *hint);
    if (first < 0) return nullptr;
    auto slot = static_cast<uint32_t>(first);
    *hint = slot / 64;
    return arena_segment(slot);   // PROT_NONE: segment.cc commits what it uses ([S4.39])
}

bool arena_lazy() { return g_lazy; }

// [S4.67] In a lazy arena the slots come unmapped: the range is mapped where nothing is. One
// range is already partly mapped by us: a segment whose claim could make its header alone
// writable (S3.48) and now asks for its first slot; its header is ours once its start marker is
// published, and only the rest is mapped. Anything else in the way is not ours, and stays.
bool arena_commit(void* address, std::size_t size) {
    if (!g_lazy) return os_commit_range(address, size);
    if (os_map_writable_at(address, size)) return true;
    uint32_t slot = arena_slot_of(address);
    if (errno != EEXIST || size <= kMetaSize || address != arena_segment(slot) || arena_blocks_at(slot) == 0) return false;
    return os_map_writable_at(static_cast<char*>(address) + kMetaSize, size - kMetaSize);
}

void arena_release(uint32_t slot, uint32_t blocks, std::size_t mapped) {
    if (!g_lazy) os_release_range(arena_segment(slot), std::size_t{blocks} << kSegmentShift);
    else if (mapped) os_unmap(arena_segment(slot), mapped);   // what this segment mapped, no more
    bitmap_release(g_claimed, slot, blocks);
}

bool arena_refused(uint32_t slot, uint32_t blocks) {
    if (g_lazy && errno == EEXIST) return true;   // not ours: the slots stay claimed, unused
    bitmap_release(g_claimed, slot, blocks);
    return false;
}

bool arena_claimed(uint32_t slot, uint32_t blocks) { return bitmap_all_set(g_claimed, slot, blocks); }

void arena_publish(const Segment* segment) {
    // release: the formatted header happens before any read that found this marker.
    g_starts[segment->slot].store(segment->blocks, std::memory_order_release);
}

void arena_unpublish(const Segment* segment) {
    g_starts[segment->slot].store(0, std::memory_order_relaxed);   // the bits' release follows
}


void abandoned_publish(uint32_t slot) {
    g_abandoned_count.fetch_add(1, std::memory_order_relaxed);   // before the bit: never below 0
    g_abandoned[slot / 64].fetch_or(uint64_t{1} << (slot % 64), std::memory_order_release);
    uint32_t at = g_recent_next.fetch_add(1, std::memory_order_relaxed);
    g_recent[at % kRecentAbandoned].store(slot + 1, std::memory_order_relaxed);
}

uint32_t abandoned_recent(unsigned k) {
    uint32_t newest = g_recent_next.load(std::memory_order_relaxed) - 1;
    uint32_t v = g_recent[(newest - k) % kRecentAbandoned].load(std::memory_order_relaxed);
    return v == 0 ? kArenaSlots : v - 1;
}

bool abandoned_take(uint32_t slot) {
    uint64_t bit = uint64_t{1} << (slot % 64);
    if (!(g_abandoned[slot / 64].fetch_and(~bit, std::memory_order_acquire) & bit)) return false;
    g_abandoned_count.fetch_sub(1, std::memory_order_relaxed);
    return true;
}

uint64_t abandoned_word(uint32_t word) { return g_abandoned[word].load(std::memory_order_relaxed); }
uint64_t abandoned_count() { return g_abandoned_count.load(std::memory_order_relaxed); }

}  // namespace edu::stage4
