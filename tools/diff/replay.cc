// tools/diff/replay.cc: the validating pass, the timed passes, and the child process each
// replay runs in. The driver trusts nothing the stage says about its own blocks: patterns,
// alignment and overlap are checked against the driver's own records (kept off the C
// library's heap, so the reference column measures the trace and not the driver).
#include "tools/diff/replay.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <iterator>
#include <sstream>

#include "contract/options.h"
#include "tools/diff/threads.h"

namespace edu::diff {
namespace {

// ---- The driver's own memory ----------------------------------------------------------------
// The driver's records (one per id, one map node per live block) come from pages it maps
// itself: small requests from per-size free lists carved out of 1 MiB chunks, large ones mapped
// directly. Nothing the driver does during a replay touches the C library's heap.
class DriverHeap {
public:
    static void* take(std::size_t n) {
        n = (n + 15) & ~std::size_t{15};
        if (n > kSmall) return map(n);
        std::size_t k = n / 16;
        if (free_[k]) {
            void* p = free_[k];
            free_[k] = *static_cast<void**>(p);
            return p;
        }
        if (left_ < n) {
            chunk_ = static_cast<char*>(map(kChunk));
            left_ = kChunk;
        }
        void* p = chunk_;
        chunk_ += n;
        left_ -= n;
        return p;
    }
    static void give(void* p, std::size_t n) {
        n = (n + 15) & ~std::size_t{15};
        if (n > kSmall) {
            munmap(p, n);
            return;
        }
        *static_cast<void**>(p) = free_[n / 16];
        free_[n / 16] = p;
    }

private:
    static constexpr std::size_t kSmall = 256, kChunk = 1 << 20;
    static void* map(std::size_t n) {
        void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            std::fputs("stagediff: out of memory for the driver's own records\n", stderr);
            std::_Exit(2);
        }
        return p;
    }
    static inline void* free_[kSmall / 16 + 1] = {};
    static inline char* chunk_ = nullptr;
    static inline std::size_t left_ = 0;
};

template <typename T>
struct DriverAllocator {
    using value_type = T;
    DriverAllocator() = default;
    template <typename U>
    DriverAllocator(const DriverAllocator<U>&) {}
    T* allocate(std::size_t n) { return static_cast<T*>(DriverHeap::take(n * sizeof(T))); }
    void deallocate(T* p, std::size_t n) { DriverHeap::give(p, n * sizeof(T)); }
    template <typename U>
    bool operator==(const DriverAllocator<U>&) const { return true; }
};

// ---- Payload patterns -----------------------------------------------------------------------
uint8_t pattern_of(uint32_t id, uint32_t generation) {
    return static_cast<uint8_t>(0x11 + (id * 31u + generation * 7u) % 0xdd);
}

// realloc(p, 0) answered NULL without ENOMEM: C17 lets an implementation answer so, the old
// block then freed or not as it defines; glibc frees it (the stages return a block of their
// smallest size). Both passes then drop the block; with ENOMEM it was kept, as for any size.
// `errno` must have been cleared before the call.
bool freed_by_resize_to_zero(const void* answer, std::size_t size) {
    return answer == nullptr && size == 0 && errno != ENOMEM;
}

// Calls visit(offset, length) for the bytes of a `size`-byte block that carry its pattern:
// all of them up to kFullPatternBytes, else kSampledLines cache lines (first, last, spread).
template <typename Visit>
bool for_each_sample(uint64_t size, Visit visit) {
    if (size <= kFullPatternBytes) return visit(0, size);
    const uint64_t line = 64, stride = size / (kSampledLines - 1);
    for (uint64_t k = 0; k + 1 < kSampledLines; ++k)
        if (!visit((k * stride) & ~(line - 1), line)) return false;
    return visit(size - line, line);
}

struct Live {
    unsigned char* ptr = nullptr;
    uint64_t size = 0;
    uint64_t usable = 0;
    uint8_t pattern = 0;
};

struct Extent {
    uintptr_t end;
    uint32_t id;
};

// The entry a replay calls: the stage's single-thread entry, or its thread-safe one when the
// workload has operations of other threads ('@2': stages 1-3 then take their lock, and every
// thread goes through the same table); the contract's debug layer over it when EDU_OPTIONS says
// debug=on (contract/options.h); main has already refused a bad entry.
const Api& entry(const Stage& stage, const Workload& w) {
    static const ContractOptions options = contract_options();
    bool threads = std::any_of(w.ops.begin(), w.ops.end(), [](const Op& op) { return op.thread != 1; });
    return entry_for(stage, threads ? *stage.thread_safe : *stage.single_thread, options);
}

class Validator {
public:
    Validator(const Stage& stage, const Workload& w, const ReplayOptions& o, Metrics& m, Helpers& helpers)
        : api_(entry(stage, w)), stage_(stage), w_(w), o_(o), m_(m), helpers_(helpers), blocks_(w.ids) {}

    void run() {
        m_.timeline.reserve(o_.timeline_points + 2);
        Stats start = api_.stats();
        m_.peak_footprint = m_.footprint_at_peak = start.footprint;  // what the stage holds at the start counts
        if (!o_.reference) base_live_ = api_.check().live_blocks;  // e.g. stage 2's raw domain
        const uint64_t walk_at = peak_op(w_);
        const uint64_t total = w_.ops.size();
        const uint64_t sample_every = total / (o_.timeline_points ? o_.timeline_points : 1) + 1;
        std::size_t next_pause = 0;
        uint32_t generation = 0;
        for (uint64_t i = 0; i < total && m_.valid; ++i) {
            const Op& op = w_.ops[i];
            if (o_.line_now) *o_.line_now = op.line;
            ++generation;
            // On its thread; the others (this one included) wait, so what follows finds them parked.
            helpers_.run(op.thread, [&] {
                switch (op.kind) {
                    case Op::alloc: alloc(op, generation); break;
                    case Op::free: release(op); break;
                    case Op::realloc: resize(op, generation); break;
                }
            });
            if (!m_.valid) {
                m_.failure_line = op.line;
                m_.failure = "operation " + std::to_string(i + 1) + ": " + m_.failure;
                break;
            }
            uint64_t footprint = api_.stats().footprint;
            if (footprint > m_.peak_footprint) m_.peak_footprint = footprint;
            if (live_requested_ > m_.peak_live_requested) {
                m_.peak_live_requested = live_requested_;
                m_.footprint_at_peak = footprint;
            }
            if (i + 1 == walk_at) at_peak();
            if (!o_.reference && o_.check_every && (i + 1) % o_.check_every == 0) check(i + 1);
            if (i % sample_every == 0 || i + 1 == total) m_.timeline.push_back({i + 1, live_requested_, footprint});
            while (next_pause < o_.pause_at.size() && o_.pause_at[next_pause] <= i + 1) {
                if (o_.pause_at[next_pause] == i + 1 && o_.on_pause) o_.on_pause(stage_, i + 1, id_at_);
                if (o_.pause_at[next_pause] == i + 1 && o_.capture) {
                    std::string text = o_.capture(stage_, i + 1);
                    if (!text.empty()) m_.captured.push_back({i + 1, std::move(text)});
                }
                ++next_pause;
            }
            if (o_.on_progress && (i + 1) % 65536 == 0) o_.on_progress(stage_, i + 1, total);
        }
        // Blocks the trace never freed are freed now, so every stage ends empty.
        for (Live& b : blocks_)
            if (b.ptr && m_.valid) verify_and_free(b);
        Stats end = api_.stats();
        m_.final_footprint = end.footprint;
        for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
            m_.os_calls[k] = end.os_calls[k] - start.os_calls[k];
        if (m_.valid && !o_.reference) check(total);
        m_.utilisation = m_.footprint_at_peak ? double(m_.peak_live_requested) / double(m_.footprint_at_peak) : 0;
        m_.mdriver_utilisation = m_.peak_footprint ? double(m_.peak_live_requested) / double(m_.peak_footprint) : 0;
    }

private:
    void fail(const std::string& what) {
        if (m_.valid) m_.failure = what;
        m_.valid = false;
    }

    void enomem(const Op& op) {
        if (m_.enomem++ == 0) m_.enomem_line = op.line;
    }

    // Records a new block after checking alignment and that it overlaps no live block.
    void admit(uint32_t id, unsigned char* p, uint64_t size, uint32_t generation) {
        if (reinterpret_cast<uintptr_t>(p) % 16) return fail("block " + std::to_string(id) + " is not 16-byte aligned");
        uint64_t usable = api_.usable_size(p);
        if (usable < size) return fail("usable size " + std::to_string(usable) + " below the request " + std::to_string(size));
        uintptr_t start = reinterpret_cast<uintptr_t>(p), end = start + (size ? size : 1);
        auto next = extents_.lower_bound(start);
        if (next != extents_.end() && next->first < end) return fail("block " + std::to_string(id) + " overlaps a live block");
        if (next != extents_.begin() && std::prev(next)->second.end > start)
            return fail("block " + std::to_string(id) + " overlaps a live block");
        extents_[start] = {end, id};
        Live& b = blocks_[id];
        b = {p, size, usable, pattern_of(id, generation)};
        for_each_sample(size, [&](uint64_t at, uint64_t n) { return std::memset(p + at, b.pattern, n), true; });
        live_requested_ += size;
        live_usable_ += usable;
    }

    // The pattern of `b` is still there, in its first `bytes` bytes (`p`: where it is now).
    static bool intact(const Live& b, const unsigned char* p, uint64_t bytes) {
        return for_each_sample(b.size, [&](uint64_t at, uint64_t n) {
            for (uint64_t i = at; i < at + n && i < bytes; ++i)
                if (p[i] != b.pattern) return false;
            return true;
        });
    }

    void forget(Live& b) {
        extents_.erase(reinterpret_cast<uintptr_t>(b.ptr));
        live_requested_ -= b.size;
        live_usable_ -= b.usable;
        b = Live{};
    }

    void verify_and_free(Live& b) {
        if (!intact(b, b.ptr, b.size)) return fail("a block's payload changed while it was live");
        unsigned char* p = b.ptr;
        forget(b);
        api_.free(p);
    }

    void alloc(const Op& op, uint32_t generation) {
        errno = 0;
        void* p = api_.malloc(op.size);
        if (!p && errno == ENOMEM) return enomem(op);  // C's answer for a request it cannot serve
        if (!p) return fail("malloc(" + std::to_string(op.size) + ") returned NULL without setting errno to ENOMEM");
        admit(op.id, static_cast<unsigned char*>(p), op.size, generation);
    }

    void release(const Op& op) {
        if (op.id == kNoBlock || !blocks_[op.id].ptr) return api_.free(nullptr);  // free(NULL), or a block that got ENOMEM
        verify_and_free(blocks_[op.id]);
    }

    void resize(const Op& op, uint32_t generation) {
        Live& b = blocks_[op.id];
        if (b.ptr && !intact(b, b.ptr, b.size)) return fail("a block's payload changed while it was live");
        errno = 0;
        auto* p = static_cast<unsigned char*>(api_.realloc(b.ptr, op.size));
        if (!p && errno == ENOMEM) return enomem(op);  // the old block stays as it was
        // The id then holds no block, as after ENOMEM: a later `f` is free(NULL), an `r` a malloc.
        if (freed_by_resize_to_zero(p, op.size)) {
            if (b.ptr) forget(b);
            return;
        }
        if (!p) return fail("realloc(" + std::to_string(op.size) + ") returned NULL without setting errno to ENOMEM");
        Live old = b;
        if (old.ptr) forget(b);
        if (old.ptr && !intact(old, p, std::min(op.size, old.size))) return fail("realloc lost the block's contents");
        admit(op.id, p, op.size, generation);
    }

    void check(uint64_t done) {
        CheckResult c = api_.check();
        // Stage 4's checker reads the segments of the calling thread's heap (and abandoned ones),
        // not those of another live thread: each helper checks its own, while the rest wait.
        if (stage_.thread_safety == ThreadSafety::concurrent) {
            for (unsigned t = 2; t <= kMaxThreads && c.ok; ++t) {
                if (!helpers_.started(t)) continue;
                helpers_.run(t, [&] {
                    CheckResult theirs = api_.check();
                    if (!theirs.ok) c = theirs;
                    else c.live_blocks += theirs.live_blocks;
                });
            }
        }
        if (!c.ok) fail(std::string("the stage's checker: ") + c.message);
        else if (c.live_blocks != base_live_ + extents_.size()) {
            fail("the stage's checker counts " + std::to_string(c.live_blocks) + " live blocks, the driver " +
                  std::to_string(base_live_ + extents_.size()) + " (after " + std::to_string(done) + " operations)");
        }
    }

    void at_peak() {
        m_.fragmentation_at_peak = live_usable_ - live_requested_;
        if (o_.reference) return;
        api_.walk(
            [](const WalkEntry& e, void* ctx) {
                auto* counts = static_cast<std::map<std::string, uint64_t>*>(ctx);
                ++(*counts)[std::string(e.kind) + " " + kWalkStateNames[static_cast<unsigned>(e.state)]];
                return true;
            },
            &m_.walk_counts);
    }

    const Api& api_;
    const Stage& stage_;
    const Workload& w_;
    const ReplayOptions& o_;
    Metrics& m_;
    Helpers& helpers_;
    std::vector<Live, DriverAllocator<Live>> blocks_;
    std::map<uintptr_t, Extent, std::less<>, DriverAllocator<std::pair<const uintptr_t, Extent>>> extents_;
    uint64_t live_requested_ = 0, live_usable_ = 0, base_live_ = 0;
    std::function<int64_t(uintptr_t)> id_at_ = [this](uintptr_t address) -> int64_t {
        auto it = extents_.find(address);
        return it == extents_.end() ? -1 : it->second.id;
    };
};

// The timed pass: the same operations, touching the first byte of every new block (as a
// program would), nothing else.
// Operations of other threads are handed off as in the validating pass (their time included).
double timed_pass(const Api& api, const Workload& w, Helpers& helpers) {
    std::vector<void*, DriverAllocator<void*>> ptr(w.ids, nullptr);
    auto one = [&](const Op& op) {
        switch (op.kind) {
            case Op::alloc:
                ptr[op.id] = api.malloc(op.size);
                if (ptr[op.id]) *static_cast<volatile char*>(ptr[op.id]) = 1;
                break;
            case Op::free:
                if (op.id == kNoBlock) {
                    api.free(nullptr);
                    break;
                }
                api.free(ptr[op.id]);
                ptr[op.id] = nullptr;
                break;
            case Op::realloc: {
                errno = 0;
                void* p = api.realloc(ptr[op.id], op.size);
                if (p || freed_by_resize_to_zero(p, op.size)) ptr[op.id] = p;
                break;
            }
        }
    };
    auto start = std::chrono::steady_clock::now();
    for (const Op& op : w.ops) helpers.run(op.thread, [&] { one(op); });
    for (void* p : ptr) api.free(p);
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    return took.count();
}

std::string signal_name(int sig) {
    const char* d = strsignal(sig);
    return "signal " + std::to_string(sig) + (d ? std::string(" (") + d + ")" : std::string());
}

// The reference child's command line: the marker, then the descriptors of the operations
// (a memfd) and of the pipe, then the options a replay needs.
constexpr const char* kReferenceChild = "--internal-reference-child";

// In the forked child: puts the operations in a memfd, for the exec'd program to map, and
// execs `options.reexec`. Leaves the process with status 4 if either fails.
[[noreturn]] void exec_reference(const Workload& w, const ReplayOptions& o, int out) {
    int fd = memfd_create("stagediff-ops", 0);
    const char* data = reinterpret_cast<const char*>(w.ops.data());
    std::size_t bytes = w.ops.size() * sizeof(Op);
    for (std::size_t done = 0; fd >= 0 && done < bytes;) {
        ssize_t n = write(fd, data + done, bytes - done);
        if (n < 0 && errno != EINTR) std::_Exit(4);
        if (n > 0) done += static_cast<std::size_t>(n);
    }
    std::string args[] = {kReferenceChild, std::to_string(fd), std::to_string(out), std::to_string(w.ids),
                          std::to_string(o.timed), std::to_string(o.repetitions), std::to_string(o.timeline_points),
                          w.name};
    char* argv[std::size(args) + 2] = {const_cast<char*>("stagediff")};
    for (std::size_t i = 0; i < std::size(args); ++i) argv[i + 1] = args[i].data();
    if (fd >= 0) execv(o.reexec.c_str(), argv);
    std::_Exit(4);
}

}  // namespace

int reference_child_main(int argc, char** argv, const Stage& stage) {
    if (argc != 9 || std::strcmp(argv[1], kReferenceChild) != 0) return -1;
    int fd = std::atoi(argv[2]), out = std::atoi(argv[3]);
    struct stat st {};
    if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size % static_cast<off_t>(sizeof(Op))) return 4;
    void* ops = mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (ops == MAP_FAILED) return 4;
    Workload w;
    w.name = argv[8];
    w.ids = static_cast<uint32_t>(std::strtoul(argv[4], nullptr, 10));
    const Op* first = static_cast<const Op*>(ops);
    w.ops.assign(first, first + st.st_size / static_cast<off_t>(sizeof(Op)));
    ReplayOptions o;
    o.reference = true;
    o.timed = std::atoi(argv[5]) != 0;
    o.repetitions = static_cast<unsigned>(std::atoi(argv[6]));
    o.timeline_points = std::strtoul(argv[7], nullptr, 10);
    std::string text = encode(replay(stage, w, o));
    for (std::size_t done = 0; done < text.size();) {
        ssize_t n = write(out, text.data() + done, text.size() - done);
        if (n <= 0 && errno != EINTR) return 3;
        if (n > 0) done += static_cast<std::size_t>(n);
    }
    return 0;
}

uint64_t peak_op(const Workload& w) { return w.ops.empty() ? 0 : live_peak(w, UINT64_MAX).op + 1; }

Metrics replay(const Stage& stage, const Workload& workload, const ReplayOptions& options) {
    Metrics m;
    m.stage = stage.name;
    m.reference = options.reference;
    m.ops = workload.ops.size();
    Helpers helpers;   // the workload's other threads, if it has any
    Validator(stage, workload, options, m, helpers).run();
    if (options.timed && m.valid) {
        std::vector<double> times;
        for (unsigned r = 0; r < (options.repetitions ? options.repetitions : 1); ++r)
            times.push_back(timed_pass(entry(stage, workload), workload, helpers));
        std::sort(times.begin(), times.end());
        m.repetitions = static_cast<unsigned>(times.size());
        m.seconds = times[times.size() / 2];
        m.seconds_min = times.front();
        m.seconds_max = times.back();
        m.ops_per_second = m.seconds > 0 ? double(m.ops) / m.seconds : 0;
    }
    return m;
}

// ---- Metrics as text, across the pipe from the child -----------------------------------------
// One "key value" a line; strings are printable() (no newlines); the timeline is "t op live
// footprint" lines and the walk counts "w count kind state" lines.
std::string encode(const Metrics& m) {
    std::ostringstream o;
    o.precision(17);
    o << "stage " << printable(m.stage, 200) << "\nreference " << m.reference << "\nops " << m.ops << "\nseconds "
      << m.seconds << "\nseconds_min " << m.seconds_min << "\nseconds_max " << m.seconds_max << "\nrepetitions "
      << m.repetitions << "\nops_per_second " << m.ops_per_second << "\npeak_live " << m.peak_live_requested
      << "\nfootprint_at_peak " << m.footprint_at_peak << "\npeak_footprint " << m.peak_footprint
      << "\nfinal_footprint " << m.final_footprint << "\nutilisation " << m.utilisation << "\nmdriver_utilisation "
      << m.mdriver_utilisation << "\nfragmentation " << m.fragmentation_at_peak << "\nenomem " << m.enomem
      << "\nenomem_line " << m.enomem_line << "\nvalid " << m.valid << "\nfailure_line " << m.failure_line << "\n";
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) o << "os " << k << " " << m.os_calls[k] << "\n";
    for (const auto& [kind, n] : m.walk_counts) o << "w " << n << " " << printable(kind, 200) << "\n";
    for (const Sample& s : m.timeline) o << "t " << s.op << " " << s.live_requested << " " << s.footprint << "\n";
    for (const auto& [done, text] : m.captured) o << "c " << done << " " << text.substr(0, text.find('\n')) << "\n";
    o << "failure " << printable(m.failure, 1000) << "\nend\n";
    return o.str();
}

bool decode(const std::string& text, Metrics* m) {
    std::istringstream in(text);
    std::string key;
    bool ended = false;
    *m = Metrics{};
    while (in >> key) {
        auto rest = [&] {
            std::string r;
            std::getline(in, r);
            return r.empty() ? r : r.substr(1);
        };
        if (key == "stage") m->stage = rest();
        else if (key == "failure") m->failure = rest();
        else if (key == "reference") in >> m->reference;
        else if (key == "ops") in >> m->ops;
        else if (key == "seconds") in >> m->seconds;
        else if (key == "seconds_min") in >> m->seconds_min;
        else if (key == "seconds_max") in >> m->seconds_max;
        else if (key == "repetitions") in >> m->repetitions;
        else if (key == "ops_per_second") in >> m->ops_per_second;
        else if (key == "peak_live") in >> m->peak_live_requested;
        else if (key == "footprint_at_peak") in >> m->footprint_at_peak;
        else if (key == "peak_footprint") in >> m->peak_footprint;
        else if (key == "final_footprint") in >> m->final_footprint;
        else if (key == "utilisation") in >> m->utilisation;
        else if (key == "mdriver_utilisation") in >> m->mdriver_utilisation;
        else if (key == "fragmentation") in >> m->fragmentation_at_peak;
        else if (key == "enomem") in >> m->enomem;
        else if (key == "enomem_line") in >> m->enomem_line;
        else if (key == "valid") in >> m->valid;
        else if (key == "failure_line") in >> m->failure_line;
        else if (key == "os") {
            unsigned k = 0;
            uint64_t n = 0;
            in >> k >> n;
            if (k < static_cast<unsigned>(OsCall::count)) m->os_calls[k] = n;
        } else if (key == "w") {
            uint64_t n = 0;
            in >> n;
            m->walk_counts[rest()] = n;
        } else if (key == "t") {
            Sample s{};
            in >> s.op >> s.live_requested >> s.footprint;
            m->timeline.push_back(s);
        } else if (key == "c") {
            uint64_t done = 0;
            in >> done;
            m->captured.push_back({done, rest()});
        } else if (key == "end") {
            ended = true;
            break;
        } else {
            return false;
        }
        if (in.fail()) return false;
    }
    return ended;
}

Metrics replay_isolated(const Stage& stage, const Workload& workload, const ReplayOptions& options) {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    // One shared page: the child writes each operation's line there, so that if the stage kills
    // it, the parent can say where.
    void* shared = mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    auto* line_now = shared == MAP_FAILED ? nullptr : static_cast<volatile uint32_t*>(shared);
    struct Unmap {
        void* p;
        ~Unmap() {
            if (p != MAP_FAILED) munmap(p, 4096);
        }
    } unmap{shared};
    int fds[2];
    Metrics died;
    died.stage = stage.name;
    died.reference = options.reference;
    died.ops = workload.ops.size();
    died.valid = false;
    if (pipe(fds) != 0) return died.failure = std::string("cannot create a pipe: ") + std::strerror(errno), died;
    pid_t child = fork();
    if (child < 0) {
        close(fds[0]);
        close(fds[1]);
        return died.failure = std::string("cannot fork: ") + std::strerror(errno), died;
    }
    if (child == 0) {
        close(fds[0]);
        // A stage that crashes must kill the child, for the parent to report: no inherited
        // handler (a test framework's, say) gets to catch it here.
        for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL}) std::signal(sig, SIG_DFL);
        if (!options.reexec.empty()) exec_reference(workload, options, fds[1]);  // does not return
        ReplayOptions o = options;
        o.line_now = line_now;
        std::string text = encode(replay(stage, workload, o));
        std::cout.flush();
        std::fflush(nullptr);
        for (std::size_t done = 0; done < text.size();) {
            ssize_t n = write(fds[1], text.data() + done, text.size() - done);
            if (n <= 0 && errno != EINTR) std::_Exit(3);
            if (n > 0) done += static_cast<std::size_t>(n);
        }
        std::_Exit(0);  // no destructors, no atexit: the stage's heap simply ends with the process
    }
    close(fds[1]);
    std::string text;
    char buffer[1 << 16];
    for (ssize_t n; (n = read(fds[0], buffer, sizeof buffer)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
    }
    close(fds[0]);
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    Metrics m;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && decode(text, &m)) return m;
    died.failure_line = line_now ? *line_now : 0;
    if (WIFSIGNALED(status))
        died.failure = "the replay process died of " + signal_name(WTERMSIG(status)) +
                       (WTERMSIG(status) == SIGKILL ? ", perhaps killed for lack of memory" : "") +
                       (died.failure_line ? " in this line's operation" : "");
    else
        died.failure = "the replay process exited with status " + std::to_string(WEXITSTATUS(status));
    return died;
}

}  // namespace edu::diff
