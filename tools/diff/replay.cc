// tools/diff/replay.cc: the validating pass and the timed pass.
// The driver trusts nothing the stage says about its own blocks: patterns, alignment and
// overlap are checked against the driver's own records; the stage's checker is extra evidence.
#include "tools/diff/replay.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace edu::diff {
namespace {

uint8_t pattern_of(uint32_t id, uint32_t generation) {
    return static_cast<uint8_t>(0x11 + (id * 31u + generation * 7u) % 0xdd);
}

struct Live {
    unsigned char* ptr = nullptr;
    uint64_t size = 0;
    uint64_t usable = 0;
    uint8_t pattern = 0;
};

class Validator {
public:
    Validator(const Stage& stage, const Workload& w, const ReplayOptions& o, Metrics& m)
        : api_(*stage.single_thread), stage_(stage), w_(w), o_(o), m_(m), blocks_(w.ids) {}

    void run() {
        Stats start = api_.stats();
        m_.peak_footprint = start.footprint;  // what the stage already holds counts too
        base_live_ = api_.check().live_blocks;  // blocks the stage already held (e.g. as a raw domain)
        const uint64_t peak_at = peak_op(w_);
        const uint64_t total = w_.ops.size();
        const uint64_t sample_every = total / (o_.timeline_points ? o_.timeline_points : 1) + 1;
        std::size_t next_pause = 0;
        uint32_t generation = 0;
        for (uint64_t i = 0; i < total && m_.valid; ++i) {
            const Op& op = w_.ops[i];
            ++generation;
            switch (op.kind) {
                case Op::alloc: alloc(op, generation); break;
                case Op::free: release(op); break;
                case Op::realloc: resize(op, generation); break;
            }
            if (!m_.valid) {
                m_.failure = "operation " + std::to_string(i + 1) + ": " + m_.failure;
                break;
            }
            uint64_t footprint = api_.stats().footprint;
            if (footprint > m_.peak_footprint) m_.peak_footprint = footprint;
            if (live_requested_ > m_.peak_live_requested) m_.peak_live_requested = live_requested_;
            if (i + 1 == peak_at) at_peak();
            if (o_.check_every && (i + 1) % o_.check_every == 0) check(i + 1);
            if (i % sample_every == 0 || i + 1 == total) m_.timeline.push_back({i + 1, live_requested_, footprint});
            while (next_pause < o_.pause_at.size() && o_.pause_at[next_pause] <= i + 1) {
                if (o_.pause_at[next_pause] == i + 1 && o_.on_pause) o_.on_pause(stage_, i + 1);
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
        if (m_.valid) check(total);
        m_.utilisation = m_.peak_footprint ? double(m_.peak_live_requested) / double(m_.peak_footprint) : 0;
    }

private:
    void fail(const std::string& what) {
        if (m_.valid) m_.failure = what;
        m_.valid = false;
    }

    // Records a new block after checking alignment and that it overlaps no live block.
    void admit(uint32_t id, unsigned char* p, uint64_t size, uint32_t generation) {
        if (reinterpret_cast<uintptr_t>(p) % 16) return fail("block " + std::to_string(id) + " is not 16-byte aligned");
        uint64_t usable = api_.usable_size(p);
        if (usable < size) return fail("usable size " + std::to_string(usable) + " below the request " + std::to_string(size));
        uintptr_t start = reinterpret_cast<uintptr_t>(p), end = start + (size ? size : 1);
        auto next = extents_.lower_bound(start);
        if (next != extents_.end() && next->first < end) return fail("block " + std::to_string(id) + " overlaps a live block");
        if (next != extents_.begin() && std::prev(next)->second > start)
            return fail("block " + std::to_string(id) + " overlaps a live block");
        extents_[start] = end;
        Live& b = blocks_[id];
        b = {p, size, usable, pattern_of(id, generation)};
        std::memset(p, b.pattern, size);
        live_requested_ += size;
        live_usable_ += usable;
    }

    bool intact(const Live& b, uint64_t bytes) {
        for (uint64_t i = 0; i < bytes; ++i)
            if (b.ptr[i] != b.pattern) return false;
        return true;
    }

    void forget(Live& b) {
        extents_.erase(reinterpret_cast<uintptr_t>(b.ptr));
        live_requested_ -= b.size;
        live_usable_ -= b.usable;
        b = Live{};
    }

    void verify_and_free(Live& b) {
        if (!intact(b, b.size)) return fail("a block's payload changed while it was live");
        unsigned char* p = b.ptr;
        forget(b);
        api_.free(p);
    }

    void alloc(const Op& op, uint32_t generation) {
        void* p = api_.malloc(op.size);
        if (!p) return fail("malloc(" + std::to_string(op.size) + ") returned NULL");
        admit(op.id, static_cast<unsigned char*>(p), op.size, generation);
    }

    void release(const Op& op) { verify_and_free(blocks_[op.id]); }

    void resize(const Op& op, uint32_t generation) {
        Live& b = blocks_[op.id];
        if (!intact(b, b.size)) return fail("a block's payload changed while it was live");
        Live old = b;
        forget(b);
        auto* p = static_cast<unsigned char*>(api_.realloc(old.ptr, op.size));
        if (!p) return fail("realloc(" + std::to_string(op.size) + ") returned NULL");
        uint64_t kept = op.size < old.size ? op.size : old.size;
        for (uint64_t i = 0; i < kept; ++i)
            if (p[i] != old.pattern) return fail("realloc lost the block's contents");
        admit(op.id, p, op.size, generation);
    }

    void check(uint64_t done) {
        CheckResult c = api_.check();
        if (!c.ok) fail(std::string("the stage's checker: ") + c.message);
        else if (c.live_blocks != base_live_ + live_count()) {
            fail("the stage's checker counts " + std::to_string(c.live_blocks) + " live blocks, the driver " +
                  std::to_string(base_live_ + live_count()) + " (after " + std::to_string(done) + " operations)");
        }
    }

    uint64_t live_count() const { return extents_.size(); }

    void at_peak() {
        m_.fragmentation_at_peak = live_usable_ - live_requested_;
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
    std::vector<Live> blocks_;
    std::map<uintptr_t, uintptr_t> extents_;  // live blocks: start -> end
    uint64_t live_requested_ = 0, live_usable_ = 0, base_live_ = 0;
};

// The timed pass: the same operations, touching the first byte of every new block (as a
// program would), nothing else.
double timed_pass(const Api& api, const Workload& w) {
    std::vector<void*> ptr(w.ids, nullptr);
    auto start = std::chrono::steady_clock::now();
    for (const Op& op : w.ops) {
        switch (op.kind) {
            case Op::alloc:
                ptr[op.id] = api.malloc(op.size);
                *static_cast<volatile char*>(ptr[op.id]) = 1;
                break;
            case Op::free:
                api.free(ptr[op.id]);
                ptr[op.id] = nullptr;
                break;
            case Op::realloc:
                ptr[op.id] = api.realloc(ptr[op.id], op.size);
                break;
        }
    }
    for (void* p : ptr) api.free(p);
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    return took.count();
}

}  // namespace

uint64_t peak_op(const Workload& w) {
    std::vector<uint64_t> size(w.ids, 0);
    uint64_t live = 0, peak = 0, at = 0;
    for (uint64_t i = 0; i < w.ops.size(); ++i) {
        const Op& op = w.ops[i];
        live -= size[op.id];
        size[op.id] = op.kind == Op::free ? 0 : op.size;
        live += size[op.id];
        if (live > peak) peak = live, at = i + 1;
    }
    return at;
}

Metrics replay(const Stage& stage, const Workload& workload, const ReplayOptions& options) {
    Metrics m;
    m.stage = stage.name;
    m.ops = workload.ops.size();
    Validator(stage, workload, options, m).run();
    if (options.timed && m.valid) {
        std::vector<double> times;
        for (unsigned r = 0; r < (options.repetitions ? options.repetitions : 1); ++r)
            times.push_back(timed_pass(*stage.single_thread, workload));
        std::sort(times.begin(), times.end());
        m.seconds = times[times.size() / 2];
        m.ops_per_second = m.seconds > 0 ? double(m.ops) / m.seconds : 0;
    }
    return m;
}

}  // namespace edu::diff
