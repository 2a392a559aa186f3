// stage4_threads/arena.cc: the reservation and its give-back, the claimed, unheld and abandoned
// bitmaps, start markers.
// Every shared word here is an atomic; every ordering is explained at its use and in [S4.10].
#include "stage4_threads/arena.h"

#include <pthread.h>
#include <sys/resource.h>

#include <cerrno>

#include "contract/diagnostics.h"
#include "contract/futex_mutex.h"
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
// [S4.67] [S4.68] The arena is lazy: set by reserve() before g_bytes is published, or by
// go_lazy() when a limit appears later. Bit s of g_unheld: slot s is not held by a reservation
// (mapped only where a segment committed): set for every free slot of a lazy arena, but for a
// slot given back while the switch ran, which its next claim unholds.
std::atomic<bool> g_lazy{false};
std::atomic<uint64_t> g_unheld[kArenaWords];
pthread_once_t g_lazy_once = PTHREAD_ONCE_INIT;
std::atomic<bool> g_unhold_refused{false};   // [S4.79] a run of slots stayed held: free ones wait

constexpr uint64_t low_bits(uint32_t n) { return n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1; }

// [S4.15] The reservation: 64 GiB, or as much of it as the system grants (halving down to one
// segment), address space only (os_reserve), trimmed to a 4 MiB boundary. It is made once, by
// pthread_once, from the first thread that needs memory; that may be before main, from a
// constructor of another library. It draws the key of the freed mark (S4.48) first: no block
// exists before the arena does. Under an address-space limit (RLIMIT_AS: `ulimit -v`,
// containers) nothing is reserved ([S4.67]); only when no room is found for that, half of the
// limit is, in whole segments, so that thread stacks, libraries and the rest of the process
// keep room ([S4.65]), and the first claim gives it back ([S4.68]): it only chose the range.
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
    for (auto& word : g_unheld) word.store(~uint64_t{0}, std::memory_order_relaxed);
    g_lazy.store(true, std::memory_order_relaxed);
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

// fn(w, mask) for each word w that bits [first, first + count) touch, mask their bits in it.
template <class Fn>
void each_word(uint32_t first, uint32_t count, Fn fn) {
    while (count > 0) {
        uint32_t w = first / 64, bit = first % 64;
        uint32_t take = 64 - bit < count ? 64 - bit : count;
        fn(w, low_bits(take) << bit);
        first += take;
        count -= take;
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
    // release: everything written into these slots happens before their next claim.
    each_word(first, count, [words](uint32_t w, uint64_t mask) { words[w].fetch_and(~mask, std::memory_order_release); });
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

namespace {

bool held(uint32_t slot) { return !((g_unheld[slot / 64].load(std::memory_order_relaxed) >> (slot % 64)) & 1); }

// The slots of word `w` in `mask`, which the caller has claimed: the parts a reservation still
// holds are unmapped, run by run, and marked unheld. [S4.79] A run whose munmap is refused (at
// the map count's limit: it cuts a hole in the reservation) stays held, PROT_NONE and reserved,
// and is tried again when next claimed or given back; a held slot serves a segment by mprotect.
void unhold_word(uint32_t w, uint64_t mask) {
    for (uint64_t left = mask & ~g_unheld[w].load(std::memory_order_relaxed); left != 0;) {
        unsigned first = static_cast<unsigned>(__builtin_ctzll(left));
        uint64_t above = ~(left >> first);
        unsigned run = above == 0 ? 64 - first : static_cast<unsigned>(__builtin_ctzll(above));
        if (!os_unmap(arena_segment(w * 64 + first), std::size_t{run} << kSegmentShift)) {
            mask &= ~(low_bits(run) << first);
            g_unhold_refused.store(true, std::memory_order_relaxed);
        }
        left &= ~(low_bits(run) << first);
    }
    g_unheld[w].fetch_or(mask, std::memory_order_relaxed);
}

void unhold(uint32_t first, uint32_t count) { each_word(first, count, unhold_word); }

// [S4.68] The switch, made once (pthread_once) when a limit is first seen in a reserved arena.
// Word by word, every free slot is claimed with one fetch_or, unmapped, marked unheld, and
// released: while its word is taken no claim can get a slot that is being unmapped, and a
// claim that finds it free afterwards reads (acquire, from the release here) g_lazy set and
// the slot unheld. Claimed slots are left alone: their segments keep what their reservation
// holds and go on with mprotect (arena_commit asks `held`), until they are given back. A claim
// whose compare-and-swap came first, or that reads g_lazy still clear, gets held slots, as
// before the switch; one that reads it set unholds what it claimed (arena_claim), so a run
// claimed across two words half before and half after is made all unheld.
void go_lazy() {
    if (g_lazy.exchange(true, std::memory_order_seq_cst)) return;   // lazy from the start
    uint32_t slots = arena_slots();
    for (uint32_t w = 0; w < (slots + 63) / 64; ++w) {
        uint64_t valid = valid_bits(slots, w);
        uint64_t free = ~g_claimed[w].fetch_or(valid, std::memory_order_acquire) & valid;
        unhold_word(w, free);
        g_claimed[w].fetch_and(~free, std::memory_order_release);
    }
}

// [S4.79] After a switch whose munmaps were refused: the free slots still held, claimed bit by
// bit (only those, so that a claim running meanwhile finds every other free slot), unheld and
// released, as go_lazy does. Asked by the next fresh segment's claim, until none is refused.
void unhold_free_held() {
    uint32_t slots = arena_slots();
    for (uint32_t w = 0; w < (slots + 63) / 64; ++w) {
        uint64_t want = valid_bits(slots, w) & ~g_unheld[w].load(std::memory_order_relaxed) &
                        ~g_claimed[w].load(std::memory_order_relaxed);
        if (want == 0) continue;
        uint64_t got = want & ~g_claimed[w].fetch_or(want, std::memory_order_acquire);
        unhold_word(w, got);
        g_claimed[w].fetch_and(~got, std::memory_order_release);
    }
}

// [S4.86] A lazy segment's own mapping whose munmap is refused (at the map count's limit, when
// it lies between two other mappings) stays behind, its pages given back (contract/os.h). Its
// slots stay claimed while it stands, so that no claim meets it (EEXIST, taken for a mapping not
// ours, kept the slots claimed for good); each claim while any is remembered unmaps it first,
// exactly what the segment mapped, and gives the slots back once it goes. Sixteen at most:
// past that a slot goes back at once, its leftover not remembered. try_lock only: a cold path that may skip a turn, never
// wait (and a fork child finds no mutex held for good).
struct Leftover {
    uint32_t slot;
    uint32_t blocks;
    std::size_t mapped;   // bytes from the segment's start: what to unmap
};
constexpr unsigned kLeftoverMax = 16;
Leftover g_leftovers[kLeftoverMax];
std::atomic<unsigned> g_leftover_count{0};
FutexMutex g_leftover_lock;

bool keep_leftover(uint32_t slot, uint32_t blocks, std::size_t mapped) {
    if (!g_leftover_lock.try_lock()) return false;
    unsigned n = g_leftover_count.load(std::memory_order_relaxed);
    bool kept = n < kLeftoverMax;
    if (kept) {
        g_leftovers[n] = Leftover{slot, blocks, mapped};
        g_leftover_count.store(n + 1, std::memory_order_relaxed);
    }
    g_leftover_lock.unlock();
    return kept;
}

void unmap_leftovers() {
    if (!g_leftover_lock.try_lock()) return;
    unsigned n = g_leftover_count.load(std::memory_order_relaxed);
    for (unsigned i = 0; i < n;) {
        Leftover& l = g_leftovers[i];
        if (!os_unmap(arena_segment(l.slot), l.mapped)) {
            ++i;
            continue;
        }
        bitmap_release(g_claimed, l.slot, l.blocks);
        l = g_leftovers[--n];
    }
    g_leftover_count.store(n, std::memory_order_relaxed);
    g_leftover_lock.unlock();
}

}  // namespace

// [S4.68] A limit set after the arena was reserved (by the program, `setrlimit` in main, or from
// outside, `prlimit --pid`) cannot shrink the 64 GiB the process holds, and every new mapping
// of anybody (a thread's stack, a file, [S4.66]'s blocks) is refused while they stand. The arena
// then goes lazy ([S4.67]): it gives back every slot no segment holds and continues as an arena
// chosen under a limit. Two ways in. This function, asked by the drop-in library right after
// the program lowered its own RLIMIT_AS (contract/preload.cc's setrlimit, Stage::limit_set), so
// that a pthread_create that follows finds room; and by the cold paths that ask about the
// limit anyway ([S4.66]'s large block, and arena_claim below), which also catch a limit set from
// outside, at the next fresh segment. The fast paths never look: the range stays the range.
// [S4.84] A data limit too: it does not count the reservation, but it counts what a reserved
// arena makes writable ahead of the blocks (a small page's 64 KiB at once), where a lazy one maps
// what its pages carve (the smallest data limits either way are chapter 3's, under S3.77).
bool arena_limited() {
    if (!os_address_space_limited() && !os_data_limited()) return false;
    if (!g_lazy.load(std::memory_order_relaxed) && g_bytes.load(std::memory_order_acquire) != 0)
        pthread_once(&g_lazy_once, go_lazy);
    return true;
}

Segment* arena_claim(uint32_t blocks, uint32_t* hint) {
    if (!arena_ready()) return nullptr;
    if (g_leftover_count.load(std::memory_order_relaxed) != 0) unmap_leftovers();   // [S4.86]
    if (!g_lazy.load(std::memory_order_relaxed)) arena_limited();   // one getrlimit per fresh segment
    int64_t first = bitmap_claim(g_claimed, arena_slots(), blocks, *hint);
    if (first < 0 && g_lazy.load(std::memory_order_relaxed)) {   // a switch may hold a word: wait for it
        pthread_once(&g_lazy_once, go_lazy);
        first = bitmap_claim(g_claimed, arena_slots(), blocks, *hint);
    }
    if (first < 0) return nullptr;
    if (g_unhold_refused.load(std::memory_order_relaxed) && g_unhold_refused.exchange(false, std::memory_order_relaxed))
        unhold_free_held();   // [S4.79] refused again: the flag is set again, for the next claim
    auto slot = static_cast<uint32_t>(first);
    *hint = slot / 64;
    if (g_lazy.load(std::memory_order_relaxed)) unhold(slot, blocks);   // [S4.68] held ones too
    return arena_segment(slot);   // PROT_NONE or unmapped: segment.cc commits what it uses ([S4.39])
}

bool arena_lazy() { return g_lazy.load(std::memory_order_relaxed); }

bool arena_unheld(uint32_t slot) { return !held(slot); }

// [S4.67] In a lazy arena the slots come unmapped: the range is mapped where nothing is, and
// anything in the way is not ours, and stays. (A segment whose claim made its header alone
// writable, S3.48, asks for the rest of its first slot from the header's end: S3.58.)
// [S4.68] A segment claimed before the switch keeps its reservation: mprotect, as before.
bool arena_commit(void* address, std::size_t size) {
    if (held(arena_slot_of(address))) return os_commit_range(address, size);
    return os_map_writable_at(address, size);
}

// [S4.68] A held segment given back after the switch is unmapped whole (its slots are ours); one
// given back while the switch runs may still be mapped PROT_NONE again, and stays held until
// the next claim of its slots unholds them.
void arena_release(uint32_t slot, uint32_t blocks, std::size_t mapped) {
    if (!held(slot)) {   // what this segment mapped, no more; refused, kept claimed ([S4.86])
        if (mapped && !os_unmap(arena_segment(slot), mapped) && keep_leftover(slot, blocks, mapped)) return;
    } else if (g_lazy.load(std::memory_order_acquire)) {
        unhold(slot, blocks);
    } else {
        os_release_range(arena_segment(slot), std::size_t{blocks} << kSegmentShift);
    }
    bitmap_release(g_claimed, slot, blocks);
}

void arena_trim(uint32_t slot, uint32_t blocks, std::size_t mapped) {
    if (!g_lazy.load(std::memory_order_acquire) || !held(slot)) return;
    std::size_t size = std::size_t{blocks} << kSegmentShift;
    if (size > mapped && !os_unmap(reinterpret_cast<char*>(arena_segment(slot)) + mapped, size - mapped))
        return;   // [S4.79] refused: held still
    each_word(slot, blocks, [](uint32_t w, uint64_t mask) { g_unheld[w].fetch_or(mask, std::memory_order_relaxed); });
}

bool arena_uncommit(void* address, std::size_t size) {
    if (held(arena_slot_of(address))) return os_release_range(address, size);   // PROT_NONE again, still reserved
    return os_unmap(address, size);
}

bool arena_refused(uint32_t slot, uint32_t blocks) {
    if (!held(slot) && errno == EEXIST) return true;   // not ours: the slots stay claimed, unused
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
