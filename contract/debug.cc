// contract/debug.cc: the debug layer: the side table of blocks, fences and fills, the
// quarantine ring, the reports, and the Api trampolines that bind a layer to a stage's entry.
// Runs inside malloc, possibly as the process's malloc: it takes memory from mmap only.
#include "contract/debug.h"

#include <pthread.h>
#include <sys/mman.h>

#include <cstring>

#include "contract/diagnostics.h"
#include "contract/fork_owner.h"

namespace edu {
namespace {

// ---- The side table: every block the layer handed out and has not yet given back ----------
struct Entry {
    uintptr_t user;    // the program's pointer; 0 marks an empty slot
    uintptr_t inner;   // the stage's block around it
    uintptr_t end;     // inner + the stage's usable size: the tail fence runs up to here
    uint64_t size;     // bytes the program asked for
    uint64_t serial;   // allocation number (1, 2, ...); kFreed set while in quarantine
};
constexpr uint64_t kFreed = uint64_t{1} << 63;

// Open addressing with linear probing, at most half full; grows by doubling into a fresh
// mapping. Erasing shifts the rest of a probe run back, so there are no tombstones.
class Table {
public:
    Entry* find(uintptr_t user) const {
        if (capacity_ == 0 || user == 0) return nullptr;
        for (uint64_t i = home(user);; i = next(i)) {
            if (slots_[i].user == user) return &slots_[i];
            if (slots_[i].user == 0) return nullptr;
        }
    }

    bool insert(const Entry& entry) {
        if (2 * (count_ + 1) > capacity_ && !grow()) return false;
        place(entry);
        ++count_;
        return true;
    }

    void erase(Entry* entry) {
        uint64_t hole = static_cast<uint64_t>(entry - slots_);
        for (uint64_t i = next(hole); slots_[i].user; i = next(i)) {
            // An entry may fill the hole if its home is not in (hole, i] (cyclically).
            uint64_t mask = capacity_ - 1;
            if (((i - home(slots_[i].user)) & mask) >= ((i - hole) & mask)) {
                slots_[hole] = slots_[i];
                hole = i;
            }
        }
        slots_[hole] = Entry{};
        --count_;
    }

    template <typename Visit>
    void each(Visit visit) const {
        for (uint64_t i = 0; i < capacity_; ++i)
            if (slots_[i].user) visit(slots_[i]);
    }

private:
    uint64_t home(uintptr_t user) const {
        return ((user >> 4) * 0x9e3779b97f4a7c15ull) >> (64 - __builtin_ctzll(capacity_));
    }
    uint64_t next(uint64_t i) const { return (i + 1) & (capacity_ - 1); }

    void place(const Entry& entry) {
        uint64_t i = home(entry.user);
        while (slots_[i].user) i = next(i);
        slots_[i] = entry;
    }

    bool grow() {
        uint64_t capacity = capacity_ ? 2 * capacity_ : 1024;
        std::size_t bytes = capacity * sizeof(Entry);
        void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) return false;
        Entry* old = slots_;
        uint64_t old_capacity = capacity_;
        slots_ = static_cast<Entry*>(map);
        capacity_ = capacity;
        for (uint64_t i = 0; i < old_capacity; ++i)
            if (old[i].user) place(old[i]);
        if (old) munmap(old, old_capacity * sizeof(Entry));
        return true;
    }

    Entry* slots_ = nullptr;
    uint64_t capacity_ = 0;  // a power of two, or 0 before the first block
    uint64_t count_ = 0;
};

// ---- Scanning and reporting -----------------------------------------------------------------
void fill(uintptr_t from, uintptr_t to, uint8_t byte) {
    if (to > from) std::memset(reinterpret_cast<void*>(from), byte, to - from);
}

}  // namespace

uintptr_t first_byte_not(uintptr_t from, uintptr_t to, uint8_t byte) {
    const uint64_t pattern = 0x0101010101010101ull * byte;
    uintptr_t p = from;
    for (; p < to && (p & 7); ++p)
        if (*reinterpret_cast<const uint8_t*>(p) != byte) return p;
    for (; p + 8 <= to; p += 8) {
        uint64_t word;
        std::memcpy(&word, reinterpret_cast<const void*>(p), sizeof word);
        if (word != pattern) break;
    }
    for (; p < to; ++p)
        if (*reinterpret_cast<const uint8_t*>(p) != byte) return p;
    return 0;
}

namespace {

// What a scan found: the kind of misuse, the first changed byte and what it should have been.
struct Damage {
    const char* kind = nullptr;  // nullptr: intact
    uintptr_t at = 0;
    uint8_t expected = 0;
};

// A live block: front fence, then tail fence (slack included).
Damage live_damage(const Entry& e) {
    if (uintptr_t at = first_byte_not(e.inner, e.user, kDebugFenceByte))
        return {"buffer underflow (a write before the block)", at, kDebugFenceByte};
    if (uintptr_t at = first_byte_not(e.user + e.size, e.end, kDebugFenceByte))
        return {"buffer overflow (a write past the end of the block)", at, kDebugFenceByte};
    return {};
}

// A quarantined block: payload still DD, fences still FD.
Damage dead_damage(const Entry& e) {
    if (uintptr_t at = first_byte_not(e.user, e.user + e.size, kDebugDeadByte))
        return {"write after free", at, kDebugDeadByte};
    Damage fences = live_damage(e);
    if (fences.kind) fences.kind = "write after free (into the fence of a freed block)";
    return fences;
}

void hex2(LineWriter& w, uint8_t byte) {
    const char text[3] = {"0123456789abcdef"[byte >> 4], "0123456789abcdef"[byte & 15], 0};
    w.str(text);
}

// "<kind>: block 0x.. of N bytes (allocation #k)"
void describe(LineWriter& w, const char* kind, const Entry& e) {
    w.str(kind).str(": block ").hex(e.user).str(" of ").dec(e.size).str(" bytes (allocation #")
        .dec(e.serial & ~kFreed).str(")");
}

// describe(), then ", byte +N is 0x41 not 0xfd<when>", and abort.
[[noreturn]] void report(const Stage& stage, const char* call, const void* passed, const Entry& e,
                         const Damage& d, const char* when) {
    char what[224];
    LineWriter w(what, sizeof what);
    describe(w, d.kind, e);
    w.str(", byte ");
    if (d.at < e.user) w.str("-").dec(e.user - d.at);
    else w.str("+").dec(d.at - e.user);
    w.str(" is 0x");
    hex2(w, *reinterpret_cast<const uint8_t*>(d.at));
    w.str(" not 0x");
    hex2(w, d.expected);
    w.str(when);
    die(stage.name, call, passed, what);
}

// ---- One layer: a stage's entry wrapped -----------------------------------------------------
// The thread that holds every layer's mutex across a fork (contract/fork_owner.h).
ForkOwner g_fork_owner;

class Layer {
public:
    const Stage* stage = nullptr;
    const Api* inner = nullptr;
    pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;

    // The layer's mutex, except for the thread that holds it across a fork: its calls from
    // other libraries' fork handlers run as the holder (contract/locked.h, point 8).
    // As Locked's guard, it remembers whether it took the mutex, so only a call that found the
    // mutex taken asks whose it is, and the release asks nothing.
    struct Guard {
        explicit Guard(Layer& layer) : m(&layer.mutex) {
            if (pthread_mutex_trylock(m) == 0) [[likely]] return;
            if (g_fork_owner.is_me()) held = false;
            else pthread_mutex_lock(m);
        }
        ~Guard() {
            if (held) pthread_mutex_unlock(m);
        }
        pthread_mutex_t* m;
        bool held = true;
    };

    void* malloc(std::size_t n) { Guard g(*this); return counted(allocate(16, n), n); }

    void* calloc(std::size_t count, std::size_t size) {
        std::size_t total;
        if (__builtin_mul_overflow(count, size, &total)) return enomem();
        Guard g(*this);
        void* p = counted(allocate(16, total), total);
        if (p) std::memset(p, 0, total);
        return p;
    }

    void* aligned_alloc(std::size_t alignment, std::size_t n) {
        Guard g(*this);
        return counted(allocate(alignment, n), n);
    }

    void free(void* p) {
        if (!p) return;
        Guard g(*this);
        Entry* e = live_entry("free", p);
        ++counts_.frees;
        --counts_.live_blocks;
        counts_.live_bytes -= e->size;
        release(e, "free", p);
    }

    // Always moves, so a stale copy of the old pointer lands in quarantine where it is seen.
    void* realloc(void* p, std::size_t n) {
        Guard g(*this);
        if (!p) return counted(allocate(16, n), n);
        uint64_t old = live_entry("realloc", p)->size;
        void* moved = allocate(16, n);
        if (!moved) return nullptr;  // p untouched
        std::memcpy(moved, p, old < n ? old : n);
        counts_.bytes_requested += n;  // a resize: neither a malloc nor a free
        note_live(counts_.live_bytes - old + n);
        release(table.find(reinterpret_cast<uintptr_t>(p)), "realloc", p);  // may have moved
        return moved;
    }

    // The program may use exactly what it asked for: the rest is fence.
    std::size_t usable_size(const void* p) {
        Guard g(*this);
        return live_entry("usable_size", p)->size;
    }

    CheckResult check() {
        Guard g(*this);
        CheckResult mine;
        table.each([&](const Entry& e) {
            Damage d = e.serial & kFreed ? dead_damage(e) : live_damage(e);
            if (d.kind) violation(&mine, d.kind, d.at, e.user, e.size);
        });
        CheckResult theirs = inner->check();
        CheckResult& verdict = mine.ok ? theirs : mine;
        verdict.live_blocks = counts_.live_blocks;  // the program's blocks, not the stage's
        verdict.live_bytes = counts_.live_bytes;
        verdict.free_blocks = theirs.free_blocks;
        return verdict;
    }

    void walk(WalkFn visit, void* context) { Guard g(*this); inner->walk(visit, context); }

    // The program's requests and blocks as the layer counts them; the stage's memory and
    // system calls (fences and quarantine included) as the stage counts them.
    Stats stats() {
        Guard g(*this);
        Stats s = inner->stats();
        s.mallocs = counts_.mallocs;
        s.frees = counts_.frees;
        s.bytes_requested = counts_.bytes_requested;
        s.live_blocks = counts_.live_blocks;
        s.live_bytes = counts_.live_bytes;
        s.peak_live_bytes = counts_.peak_live_bytes;
        return s;
    }

    uint64_t finish(unsigned max_lines) {
        Guard g(*this);
        uint64_t live = 0, bytes = 0;
        table.each([&](const Entry& e) {
            Damage d = e.serial & kFreed ? dead_damage(e) : live_damage(e);
            if (d.kind) report(*stage, "exit", reinterpret_cast<const void*>(e.user), e, d, ", found at exit");
            if (!(e.serial & kFreed)) {
                ++live;
                bytes += e.size;
            }
        });
        // The oldest leaks first: one pass per line finds the next allocation number.
        char line[200];
        uint64_t after = 0;
        for (unsigned shown = 0; shown < max_lines && shown < live; ++shown) {
            const Entry* oldest = nullptr;
            table.each([&](const Entry& e) {
                if (!(e.serial & kFreed) && e.serial > after && (!oldest || e.serial < oldest->serial))
                    oldest = &e;
            });
            after = oldest->serial;
            LineWriter w(line, sizeof line);
            w.str("edu-alloc ").str(stage->name).str(": ");
            describe(w, "leak", *oldest);
            write_stderr(w.str(" still live at exit\n").c_str());
        }
        LineWriter w(line, sizeof line);
        w.str("edu-alloc ").str(stage->name).str(": debug mode: ").dec(live).str(" blocks (").dec(bytes)
            .str(" bytes) live at exit");
        if (live > max_lines) w.str(", ").dec(live - max_lines).str(" not listed");
        write_stderr(w.str("; every fence and freed block intact\n").c_str());
        return live;
    }

    void drain() {
        Guard g(*this);
        while (ring_count_) evict("drain", reinterpret_cast<const void*>(ring_[ring_head_]));
    }

private:
    // A successful malloc-like call, counted as the contract counts it.
    void* counted(void* p, std::size_t n) {
        if (!p) return nullptr;
        ++counts_.mallocs;
        ++counts_.live_blocks;
        counts_.bytes_requested += n;
        note_live(counts_.live_bytes + n);
        return p;
    }
    void note_live(uint64_t bytes) {
        counts_.live_bytes = bytes;
        if (bytes > counts_.peak_live_bytes) counts_.peak_live_bytes = bytes;
    }

    void* allocate(std::size_t alignment, std::size_t n) {
        std::size_t front = alignment > kDebugFrontBytes ? alignment : kDebugFrontBytes;
        std::size_t total;
        if (__builtin_add_overflow(n, front + kDebugTailBytes, &total)) return enomem();
        void* block = alignment <= 16 ? inner->malloc(total) : inner->aligned_alloc(alignment, total);
        if (!block) return nullptr;  // errno = ENOMEM from the stage
        uintptr_t in = reinterpret_cast<uintptr_t>(block);
        Entry e{in + front, in, in + inner->usable_size(block), n, ++serial_};
        if (!table.insert(e)) {
            inner->free(block);
            return enomem();
        }
        fill(e.inner, e.user, kDebugFenceByte);
        fill(e.user, e.user + n, kDebugNewByte);
        fill(e.user + n, e.end, kDebugFenceByte);
        return reinterpret_cast<void*>(e.user);
    }

    // The entry of a live block, or one line saying why `p` is not one, and abort.
    Entry* live_entry(const char* call, const void* p) {
        Entry* e = table.find(reinterpret_cast<uintptr_t>(p));
        if (e && !(e->serial & kFreed)) {
            Damage d = live_damage(*e);
            if (d.kind) report(*stage, call, p, *e, d, "");
            return e;
        }
        char what[200];
        LineWriter w(what, sizeof what);
        if (e) {
            describe(w, std::strcmp(call, "free") == 0 ? "double free" : "use after free", *e);
            w.str(" was already freed (it waits in quarantine)");
        } else {
            invalid(w, call, reinterpret_cast<uintptr_t>(p));
        }
        die(stage->name, call, p, w.c_str());
    }

    // Why a pointer the table does not hold is not a block: inside one, misaligned, or foreign.
    void invalid(LineWriter& w, const char* call, uintptr_t p) {
        const Entry* around = nullptr;
        table.each([&](const Entry& e) {
            if (p >= e.inner && p < e.end) around = &e;
        });
        w.str("invalid ").str(call).str(": ");
        if (around) {
            const char* where = around->serial & kFreed          ? "pointer into freed block "
                                : p < around->user                ? "pointer into the front fence of block "
                                : p >= around->user + around->size ? "pointer past the end of block "
                                                                   : "interior pointer into block ";
            w.str(where).hex(around->user).str(" of ").dec(around->size).str(" bytes, at ");
            if (p < around->user) w.str("-").dec(around->user - p);
            else w.str("+").dec(p - around->user);
        } else if (p & 15) {
            w.str("misaligned pointer, not a block of this heap");
        } else {
            w.str("not a block of this heap (foreign, never allocated, or freed long ago)");
        }
    }

    // A live block freed: fences checked, payload filled with DD, into quarantine.
    void release(Entry* e, const char* call, const void* p) {
        fill(e->user, e->user + e->size, kDebugDeadByte);
        e->serial |= kFreed;
        std::size_t bytes = e->end - e->inner;
        if (bytes > kDebugQuarantineBytes) {  // too big to wait: give it back now
            give_back(e);
            return;
        }
        uintptr_t user = e->user;  // evicting erases entries, which may move *e
        while (ring_count_ && (ring_count_ == kDebugQuarantineBlocks || ring_bytes_ + bytes > kDebugQuarantineBytes))
            evict(call, p);
        std::size_t slot = (ring_head_ + ring_count_) % kDebugQuarantineBlocks;
        ring_[slot] = user;
        ring_bytes_ += bytes;
        ++ring_count_;
    }

    // The oldest quarantined block leaves: it must read as it was left, then the stage has it.
    void evict(const char* call, const void* p) {
        Entry* e = table.find(ring_[ring_head_]);
        ring_head_ = (ring_head_ + 1) % kDebugQuarantineBlocks;
        --ring_count_;
        ring_bytes_ -= e->end - e->inner;
        Damage d = dead_damage(*e);
        if (d.kind) report(*stage, call, p, *e, d, ", found when the block left quarantine");
        give_back(e);
    }

    void give_back(Entry* e) {
        void* block = reinterpret_cast<void*>(e->inner);
        table.erase(e);
        inner->free(block);
    }

    Table table;
    Stats counts_;  // the request counters and live blocks, as the program sees them
    uint64_t serial_ = 0;
    uintptr_t ring_[kDebugQuarantineBlocks] = {};
    std::size_t ring_head_ = 0;
    std::size_t ring_count_ = 0;
    std::size_t ring_bytes_ = 0;
};

// ---- Binding layers to Api tables -----------------------------------------------------------
constexpr unsigned kLayers = 8;
Layer g_layers[kLayers];
unsigned g_layer_count = 0;
pthread_mutex_t g_layers_mutex = PTHREAD_MUTEX_INITIALIZER;

template <unsigned k>
struct Bound {
    static void* malloc(std::size_t n) { return g_layers[k].malloc(n); }
    static void free(void* p) { g_layers[k].free(p); }
    static void* calloc(std::size_t c, std::size_t n) { return g_layers[k].calloc(c, n); }
    static void* realloc(void* p, std::size_t n) { return g_layers[k].realloc(p, n); }
    static void* aligned_alloc(std::size_t a, std::size_t n) { return g_layers[k].aligned_alloc(a, n); }
    static std::size_t usable_size(const void* p) { return g_layers[k].usable_size(p); }
    static CheckResult check() { return g_layers[k].check(); }
    static void walk(WalkFn visit, void* context) { g_layers[k].walk(visit, context); }
    static Stats stats() { return g_layers[k].stats(); }
    static constexpr Api api = {&malloc, &free, &calloc, &realloc, &aligned_alloc,
                                &usable_size, &check, &walk, &stats};
};

template <unsigned... k>
constexpr const Api* kBound[] = {&Bound<k>::api...};
constexpr const Api* const* kTables = kBound<0, 1, 2, 3, 4, 5, 6, 7>;
static_assert(sizeof kBound<0, 1, 2, 3, 4, 5, 6, 7> / sizeof(const Api*) == kLayers);

int layer_of(const Api& api) {
    for (unsigned k = 0; k < kLayers; ++k)
        if (kTables[k] == &api) return static_cast<int>(k);
    return -1;
}

}  // namespace

const Api& debug_entry(const Stage& stage, const Api& inner) {
    pthread_mutex_lock(&g_layers_mutex);
    unsigned k = 0;
    while (k < g_layer_count && g_layers[k].inner != &inner) ++k;
    if (k == g_layer_count) {
        if (k == kLayers) die(stage.name, "debug_entry", &inner, "more than eight debug layers");
        g_layers[k].stage = &stage;
        g_layers[k].inner = &inner;
        ++g_layer_count;
    }
    pthread_mutex_unlock(&g_layers_mutex);
    return *kTables[k];
}

bool is_debug_entry(const Api& api) { return layer_of(api) >= 0; }

uint64_t debug_finish(const Api& api, unsigned max_lines) {
    int k = layer_of(api);
    if (k < 0) die("contract", "debug_finish", &api, "not a debug layer");
    return g_layers[k].finish(max_lines);
}

void debug_drain(const Api& api) {
    int k = layer_of(api);
    if (k < 0) die("contract", "debug_drain", &api, "not a debug layer");
    g_layers[k].drain();
}

// Layers are taken in index order; a layer's lock is always taken before its stage's.
void debug_prepare_fork() {
    pthread_mutex_lock(&g_layers_mutex);
    for (unsigned k = 0; k < g_layer_count; ++k) pthread_mutex_lock(&g_layers[k].mutex);
    g_fork_owner.set();
}

void debug_after_fork_parent() {
    g_fork_owner.clear();
    for (unsigned k = g_layer_count; k-- > 0;) pthread_mutex_unlock(&g_layers[k].mutex);
    pthread_mutex_unlock(&g_layers_mutex);
}

void debug_after_fork_child() {
    g_fork_owner.clear();
    for (unsigned k = 0; k < g_layer_count; ++k) g_layers[k].mutex = PTHREAD_MUTEX_INITIALIZER;
    g_layers_mutex = PTHREAD_MUTEX_INITIALIZER;
}

}  // namespace edu
