// contract/mapped.cc: over-aligned blocks in mappings of their own (see mapped.h). A mapping is
// reserved `alignment` bytes too long, then trimmed at both ends with munmap, so what stays is
// one page of record, then the block, at the first multiple of the alignment it can hold;
// mremap resizes it, record and block together.
#include "contract/mapped.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "contract/diagnostics.h"
#include "contract/fork_owner.h"
#include "contract/os.h"

namespace edu {
namespace {

// In the page in front of its block; the mapping is that page and the block's `usable` bytes.
struct Record {
    Record* next;
    Record* prev;
    uintptr_t block;
    std::size_t usable;   // bytes, whole pages
    std::size_t alignment;   // bytes, at least a page: what a move must keep (mapped_resize)
    int owner;            // Stage::number
};

// The live blocks, a doubly linked list under one lock: these calls are rare and each costs
// system calls anyway. g_count lets a pointer be turned away without the lock while none lives.
pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
ForkOwner g_fork_owner;   // the thread that holds g_lock across a fork (contract/fork_owner.h)

// g_lock, except for the thread that holds it across a fork: its calls from other libraries'
// fork handlers run as the holder (contract/locked.h, point 8), and their unlock does nothing.
void lock_table() {
    if (pthread_mutex_trylock(&g_lock) == 0 || g_fork_owner.is_me()) return;
    pthread_mutex_lock(&g_lock);
}
void unlock_table() {
    if (!g_fork_owner.is_me()) pthread_mutex_unlock(&g_lock);
}
Record* g_first = nullptr;
std::atomic<std::size_t> g_count{0};

// The live blocks' addresses again, for the lookups of free and usable_size, which must not
// read a record before they know it is one: an open-addressing table (linear probing, at most
// half full, deletion by backward shift) in a mapping of its own, doubled when it would pass
// half. The list keeps the walk's order; the table makes a lookup one or two probes however
// many blocks live (a stage that maps its large blocks under an address-space limit holds
// thousands: searching the list cost 148 us a free with 5,000 live). Under g_lock.
uintptr_t* g_table = nullptr;
std::size_t g_slots = 0;   // a power of two; 0 before the first block
constexpr std::size_t kFirstSlots = 512;   // one 4 KiB page of addresses

std::size_t home(uintptr_t block) {
    return static_cast<std::size_t>(((block >> 12) * 0x9E3779B97F4A7C15ull) >> 32) & (g_slots - 1);
}

void place(uintptr_t block) {
    std::size_t i = home(block);
    while (g_table[i] != 0) i = (i + 1) & (g_slots - 1);
    g_table[i] = block;
}

// System calls by owner (stage numbers 1..4; slot 0 takes any other) and kind, relaxed: each
// one is counted next to a system call, and Stats readers want a recent value only.
constexpr unsigned kOwners = 5;
std::atomic<uint64_t> g_calls[kOwners][static_cast<unsigned>(OsCall::count)];

unsigned row_of(int owner) {
    return owner > 0 && static_cast<unsigned>(owner) < kOwners ? static_cast<unsigned>(owner) : 0;
}

// The same counters as contract/os.h's OsCount, one function per owner's row.
template <unsigned Row>
void count_row(OsCall call) {
    g_calls[Row][static_cast<unsigned>(call)].fetch_add(1, std::memory_order_relaxed);
}
constexpr OsCount kCountRow[kOwners] = {count_row<0>, count_row<1>, count_row<2>, count_row<3>, count_row<4>};
static_assert(kOwners == 5, "one count_row per owner");

void count_call(int owner, OsCall call) { kCountRow[row_of(owner)](call); }

// munmap, counted; refused (stage 3's [S3.72]: at the map count's limit, a munmap that would
// cut a hole in a mapping merged with its neighbours), the range stays mapped and its pages go
// back, errno as it was: contract/os.h's os_unmap.
void unmap(int owner, uintptr_t start, std::size_t bytes) {
    os_unmap(reinterpret_cast<void*>(start), bytes, kCountRow[row_of(owner)]);
}

std::size_t page_size() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }

// Room in the table for one block more, with the lock held; false if the system refuses it.
bool make_room_locked(int owner) {
    if (g_count.load(std::memory_order_relaxed) + 1 <= g_slots / 2) return true;
    std::size_t slots = g_slots ? 2 * g_slots : kFirstSlots;
    count_call(owner, OsCall::mmap);
    void* got = mmap(nullptr, slots * sizeof(uintptr_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (got == MAP_FAILED) return false;
    uintptr_t* old = g_table;
    std::size_t old_slots = g_slots;
    g_table = static_cast<uintptr_t*>(got);
    g_slots = slots;
    for (std::size_t i = 0; i < old_slots; ++i)
        if (old[i] != 0) place(old[i]);
    if (old) unmap(owner, reinterpret_cast<uintptr_t>(old), old_slots * sizeof(uintptr_t));
    return true;
}

// The table's slot of `block` with the lock held, or g_slots if it is not a live block.
std::size_t slot_locked(uintptr_t block) {
    if (g_slots == 0) return 0;
    for (std::size_t i = home(block);; i = (i + 1) & (g_slots - 1)) {
        if (g_table[i] == block) return i;
        if (g_table[i] == 0) return g_slots;
    }
}

// Empties slot `i`, moving back each later entry of its run that may not sit past the hole
// (its home is not in the part of the run between the hole and it), so no probe stops early.
void erase_locked(std::size_t i) {
    std::size_t mask = g_slots - 1;
    for (std::size_t j = (i + 1) & mask; g_table[j] != 0; j = (j + 1) & mask) {
        if (((j - home(g_table[j])) & mask) >= ((j - i) & mask)) {
            g_table[i] = g_table[j];
            i = j;
        }
    }
    g_table[i] = 0;
}

// The owner's record of `p` with the lock held, or nullptr.
Record* find_locked(int owner, const void* p) {
    auto block = reinterpret_cast<uintptr_t>(p);
    if (slot_locked(block) == g_slots) return nullptr;
    auto* r = reinterpret_cast<Record*>(block - page_size());
    return r->owner == owner ? r : nullptr;
}

bool may_be_mapped(const void* p) {
    return g_count.load(std::memory_order_relaxed) != 0 && (reinterpret_cast<uintptr_t>(p) & (page_size() - 1)) == 0;
}

}  // namespace

void* mapped_aligned_alloc(int owner, std::size_t alignment, std::size_t size, std::size_t* usable_out) {
    std::size_t page = page_size();
    if (alignment < page) alignment = page;
    std::size_t usable, span;
    if (__builtin_add_overflow(size == 0 ? 1 : size, page - 1, &usable)) return enomem();
    usable &= ~(page - 1);
    if (__builtin_add_overflow(usable, page + alignment, &span)) return enomem();
    count_call(owner, OsCall::mmap);
    void* got = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (got == MAP_FAILED) return enomem();
    auto base = reinterpret_cast<uintptr_t>(got);
    uintptr_t block = (base + page + alignment - 1) & ~(alignment - 1);
    uintptr_t head = block - page, end = block + usable;
    if (head > base) unmap(owner, base, head - base);
    if (base + span > end) unmap(owner, end, base + span - end);
    auto* r = reinterpret_cast<Record*>(head);
    r->block = block;
    r->usable = usable;
    r->alignment = alignment;
    r->owner = owner;
    r->prev = nullptr;
    lock_table();
    if (!make_room_locked(owner)) {
        unlock_table();
        unmap(owner, head, page + usable);
        return enomem();
    }
    place(block);
    r->next = g_first;
    if (g_first) g_first->prev = r;
    g_first = r;
    g_count.fetch_add(1, std::memory_order_relaxed);
    unlock_table();
    *usable_out = usable;
    return reinterpret_cast<void*>(block);
}

std::size_t mapped_block_size(int owner, const void* p) {
    if (!may_be_mapped(p)) return 0;
    lock_table();
    Record* r = find_locked(owner, p);
    std::size_t usable = r ? r->usable : 0;
    unlock_table();
    return usable;
}

void* mapped_resize(int owner, void* p, std::size_t size, std::size_t* usable_out) {
    if (!may_be_mapped(p)) return nullptr;
    std::size_t page = page_size(), usable, span;
    if (__builtin_add_overflow(size == 0 ? 1 : size, page - 1, &usable)) return nullptr;
    usable &= ~(page - 1);
    if (__builtin_add_overflow(usable, page, &span)) return nullptr;
    int saved_errno = errno;
    lock_table();   // held across mremap: a move rewrites the neighbours' links
    Record* r = find_locked(owner, p);
    if (!r) {
        unlock_table();
        return nullptr;
    }
    if (usable != r->usable) {
        uintptr_t old_block = r->block;
        count_call(owner, OsCall::mremap);
        void* got = mremap(r, page + r->usable, span, r->alignment > page ? 0 : MREMAP_MAYMOVE);
        if (got == MAP_FAILED) {
            unlock_table();
            errno = saved_errno;
            return nullptr;
        }
        if (got != r) {   // moved, the record with it: its links, its block, its table entry
            r = static_cast<Record*>(got);
            r->block = reinterpret_cast<uintptr_t>(got) + page;
            (r->prev ? r->prev->next : g_first) = r;
            if (r->next) r->next->prev = r;
            erase_locked(slot_locked(old_block));
            place(r->block);
        }
        r->usable = usable;
    }
    auto* block = reinterpret_cast<void*>(r->block);
    unlock_table();
    *usable_out = usable;
    return block;
}

std::size_t mapped_free(int owner, void* p) {
    if (!may_be_mapped(p)) return 0;
    lock_table();
    Record* r = find_locked(owner, p);
    if (r) {
        erase_locked(slot_locked(r->block));
        if (r->prev) r->prev->next = r->next;
        else g_first = r->next;
        if (r->next) r->next->prev = r->prev;
        g_count.fetch_sub(1, std::memory_order_relaxed);
    }
    unlock_table();
    if (!r) return 0;
    std::size_t usable = r->usable;
    unmap(owner, reinterpret_cast<uintptr_t>(r), mapped_footprint(usable));
    return usable;
}

std::size_t mapped_footprint(std::size_t usable) { return usable + page_size(); }

MappedTotals mapped_totals(int owner) {
    MappedTotals t;
    lock_table();
    for (Record* r = g_first; r != nullptr; r = r->next) {
        if (r->owner != owner) continue;
        ++t.blocks;
        t.usable_bytes += r->usable;
        t.footprint += mapped_footprint(r->usable);
    }
    unlock_table();
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
        t.os_calls[k] = g_calls[row_of(owner)][k].load(std::memory_order_relaxed);
    return t;
}

bool mapped_walk(int owner, WalkFn visit, void* context) {
    if (g_count.load(std::memory_order_relaxed) == 0) return true;
    std::size_t page = page_size();
    bool go = true;
    lock_table();
    for (Record* r = g_first; r != nullptr && go; r = r->next) {
        if (r->owner != owner) continue;
        auto* block = reinterpret_cast<const void*>(r->block);
        go = visit(WalkEntry{"mapping", WalkState::meta, r, mapped_footprint(r->usable), 0}, context) &&
             visit(WalkEntry{"mapping record", WalkState::meta, r, page, 1}, context) &&
             visit(WalkEntry{"block", WalkState::used, block, r->usable, 1}, context);
    }
    unlock_table();
    return go;
}

void mapped_prepare_fork() {
    pthread_mutex_lock(&g_lock);
    g_fork_owner.set();
}
void mapped_after_fork_parent() {
    g_fork_owner.clear();
    pthread_mutex_unlock(&g_lock);
}
void mapped_after_fork_child() {
    g_fork_owner.clear();
    pthread_mutex_init(&g_lock, nullptr);
}

}  // namespace edu
