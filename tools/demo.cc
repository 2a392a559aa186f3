// tools/demo.cc: the README's first program. Replays one small built-in workload (41 steps:
// mallocs of varied sizes, frees that merge neighbours, a realloc that can grow in place, an
// aligned block) through every stage linked in (edu::stage_count / stage_at), and shows each
// heap through the stage's walker at a few steps, the checker's verdict, and the statistics.
// Only the contract is used, so a newly linked stage appears with no edit here. EDU_OPTIONS
// (contract/options.h) changes stage settings, e.g. EDU_OPTIONS=stage1_brk.fit=best.
// `--html=FILE` writes the same steps as a step-through page instead (tools/diff/html.h);
// `--stages=LIST` (numbers or names, comma-separated, as the stage diff takes them) picks stages.
#include <cinttypes>
#include <cstdarg>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "contract/diagnostics.h"
#include "contract/options.h"
#include "contract/report.h"
#include "tools/diff/html.h"

namespace {

// ---- The workload ---------------------------------------------------------------------------
// Blocks are named by one letter. `note` says what the step sets up, in terms of the workload
// (which neighbours are free), not of any stage: each stage decides what to make of it.
enum class Op { malloc, calloc, aligned, realloc, free };

struct Step {
    Op op;
    char block;          // 'a'..'z'
    std::size_t size;    // bytes (calloc: count * 20 bytes)
    std::size_t align;   // aligned only
    const char* note;    // printed after the result; nullptr for none
    bool picture;        // show the heap after this step
};

constexpr Step kWorkload[] = {
    {Op::malloc, 'a', 1000, 0, nullptr, false},
    {Op::malloc, 'b', 24, 0, nullptr, false},
    {Op::malloc, 'c', 2000, 0, nullptr, false},
    {Op::malloc, 'd', 100, 0, nullptr, false},
    {Op::malloc, 'e', 3000, 0, nullptr, false},
    {Op::malloc, 'f', 40, 0, nullptr, false},
    {Op::malloc, 'g', 1500, 0, nullptr, false},
    {Op::malloc, 'h', 200, 0, nullptr, false},
    {Op::malloc, 'i', 4000, 0, nullptr, false},
    {Op::malloc, 'j', 64, 0, "ten blocks, allocated in order", true},
    {Op::free, 'b', 0, 0, "neighbours a and c are in use", false},
    {Op::free, 'd', 0, 0, "neighbours c and e are in use", false},
    {Op::free, 'c', 0, 0, "both neighbours (b, d) are free", true},
    {Op::malloc, 'k', 1800, 0, "fits in the hole left by b, c, d", false},
    {Op::malloc, 'l', 16, 0, "the smallest request", false},
    {Op::free, 'f', 0, 0, "e's next neighbour", false},
    {Op::free, 'g', 0, 0, "merges with f", false},
    {Op::realloc, 'e', 4200, 0, "grow e into the free f + g after it", true},
    {Op::aligned, 'm', 500, 4096, "payload on a 4 KiB boundary", false},
    {Op::calloc, 'n', 50, 0, "50 x 20 bytes, zeroed", false},
    {Op::free, 'i', 0, 0, nullptr, false},
    {Op::free, 'h', 0, 0, "its next neighbour (i) is free", false},
    {Op::malloc, 'o', 300, 0, nullptr, false},
    {Op::realloc, 'j', 10, 0, "shrink", false},
    {Op::malloc, 'p', 0, 0, "malloc(0) still gives a unique block", true},
    {Op::free, 'a', 0, 0, "the first block", false},
    {Op::malloc, 'q', 900, 0, "a little smaller than a was", false},
    {Op::malloc, 'r', 5000, 0, "larger than any hole", false},
    {Op::free, 'k', 0, 0, nullptr, false},
    {Op::realloc, 'l', 2500, 0, "grow the smallest block a lot", false},
    {Op::free, 'o', 0, 0, nullptr, true},
    {Op::free, 'e', 0, 0, nullptr, false},
    {Op::free, 'm', 0, 0, nullptr, false},
    {Op::free, 'n', 0, 0, nullptr, false},
    {Op::free, 'j', 0, 0, nullptr, false},
    {Op::free, 'p', 0, 0, nullptr, false},
    {Op::free, 'q', 0, 0, nullptr, false},
    {Op::free, 'r', 0, 0, nullptr, false},
    {Op::free, 'l', 0, 0, nullptr, false},
    {Op::malloc, 's', 128, 0, "one block in an empty heap", false},
    {Op::free, 's', 0, 0, "everything is free again", true},
};

constexpr int kBarWidth = 64;
constexpr std::size_t kMaxRows = 40;  // rows printed per picture, at most

// ---- Formatting -----------------------------------------------------------------------------

std::string bytes(uint64_t n) {
    char buf[40];
    edu::LineWriter(buf, sizeof buf).bytes(n);
    return buf;
}

// Prints one line without its trailing blanks.
void print_line(const char* format, ...) __attribute__((format(printf, 1, 2)));
void print_line(const char* format, ...) {
    char buf[256];
    va_list args;
    va_start(args, format);
    std::vsnprintf(buf, sizeof buf, format, args);
    va_end(args);
    std::size_t n = std::strlen(buf);
    while (n > 0 && buf[n - 1] == ' ') buf[--n] = 0;
    std::printf("%s\n", buf);
}

char cell_of(edu::WalkState state) {
    switch (state) {
        case edu::WalkState::used: return '#';
        case edu::WalkState::free: return '.';
        case edu::WalkState::meta: return '=';
        case edu::WalkState::unused: return ' ';
        case edu::WalkState::remote: return ',';
    }
    return '?';
}

// ---- One stage's replay ---------------------------------------------------------------------

class Replay {
public:
    explicit Replay(const edu::Stage& stage) : stage_(stage), api_(*stage.single_thread) {}

    void run() {
        std::printf("\n==== stage %d: %s ====\n%s\n\n", stage_.number, stage_.name, stage_.summary);
        std::printf(" step  operation                     result\n");
        int number = 0;
        for (const Step& step : kWorkload) {
            ++number;
            std::string line = perform(step);
            std::printf(" %4d  %s\n", number, line.c_str());
            if (step.picture) picture(number);
        }
        edu::Stats s = api_.stats();
        std::printf("\npeak live %s in a peak footprint of %s: utilisation %" PRIu64 "%%\n",
                    bytes(s.peak_live_bytes).c_str(), bytes(s.peak_footprint).c_str(),
                    s.peak_footprint ? s.peak_live_bytes * 100 / s.peak_footprint : 0);
        std::fflush(stdout);
        edu::print_stats(stage_, s);  // writes to stderr, without allocating
    }

private:
    struct Live {
        unsigned char* ptr = nullptr;
        std::size_t size = 0;
    };

    // Each block holds its letter in every byte, checked before it is freed or resized.
    void fill(char block) {
        Live& b = blocks_[index(block)];
        std::memset(b.ptr, block, b.size);
    }
    bool intact(char block, std::size_t n) const {
        const Live& b = blocks_[index(block)];
        for (std::size_t i = 0; i < n; ++i)
            if (b.ptr[i] != static_cast<unsigned char>(block)) return false;
        return true;
    }
    static std::size_t index(char block) { return static_cast<std::size_t>(block - 'a'); }

    std::string where(const void* p) {
        learn(walk_all());
        char buf[96];
        std::snprintf(buf, sizeof buf, "at %s, %zu usable", place(p).c_str(), api_.usable_size(p));
        return buf;
    }

    std::vector<edu::WalkEntry> walk_all() const {
        std::vector<edu::WalkEntry> entries;
        api_.walk(
            [](const edu::WalkEntry& e, void* ctx) {
                static_cast<std::vector<edu::WalkEntry>*>(ctx)->push_back(e);
                return true;
            },
            &entries);
        return entries;
    }

    // Top-level entries (regions, arenas, segments) are named when first seen: "region0",
    // "arena1". Addresses are shown as a name and an offset, the same from run to run.
    struct Top {
        uintptr_t start;
        std::size_t size;
        std::string name;
    };

    void learn(const std::vector<edu::WalkEntry>& entries) {
        for (const edu::WalkEntry& e : entries) {
            if (e.depth != 0) continue;
            uintptr_t start = reinterpret_cast<uintptr_t>(e.address);
            Top* known = nullptr;
            for (Top& t : tops_)
                if (t.start == start) known = &t;
            if (known) known->size = e.size;
            else tops_.push_back({start, e.size, e.kind + std::to_string(tops_.size())});
        }
    }

    // "region0+48" (an offset, in decimal as every tool writes it); a plain address, in hex, if
    // no known top-level entry holds p.
    std::string place(const void* p) const {
        uintptr_t a = reinterpret_cast<uintptr_t>(p);
        char buf[96];
        for (const Top& t : tops_) {
            if (a >= t.start && a - t.start < t.size) {
                std::snprintf(buf, sizeof buf, "%s+%" PRIuPTR, t.name.c_str(), a - t.start);
                return buf;
            }
        }
        std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, a);
        return buf;
    }

    const Top* top_at(const void* p) const {
        for (const Top& t : tops_)
            if (t.start == reinterpret_cast<uintptr_t>(p)) return &t;
        return nullptr;
    }

    std::string perform(const Step& step) {
        char op[64];
        std::string result;
        Live& b = blocks_[index(step.block)];
        switch (step.op) {
            case Op::malloc:
                std::snprintf(op, sizeof op, "%c = malloc(%zu)", step.block, step.size);
                b = {static_cast<unsigned char*>(api_.malloc(step.size)), step.size};
                break;
            case Op::calloc:
                std::snprintf(op, sizeof op, "%c = calloc(%zu, 20)", step.block, step.size);
                b = {static_cast<unsigned char*>(api_.calloc(step.size, 20)), step.size * 20};
                if (b.ptr && !intact_zero(b)) result = trouble("NOT ZEROED ");
                break;
            case Op::aligned:
                std::snprintf(op, sizeof op, "%c = aligned_alloc(%zu, %zu)", step.block, step.align, step.size);
                b = {static_cast<unsigned char*>(api_.aligned_alloc(step.align, step.size)), step.size};
                if (b.ptr && reinterpret_cast<uintptr_t>(b.ptr) % step.align != 0) result = trouble("MISALIGNED ");
                break;
            case Op::realloc: {
                std::snprintf(op, sizeof op, "%c = realloc(%c, %zu)", step.block, step.block, step.size);
                std::size_t kept = b.size < step.size ? b.size : step.size;
                unsigned char* old = b.ptr;
                auto* p = static_cast<unsigned char*>(api_.realloc(old, step.size));
                if (p == nullptr) break;
                b = {p, step.size};
                result = intact(step.block, kept) ? (p == old ? "in place, " : "moved, ") : trouble("CONTENTS LOST, ");
                break;
            }
            case Op::free:
                std::snprintf(op, sizeof op, "free(%c)", step.block);
                result = intact(step.block, b.size) ? "" : trouble("CONTENTS DAMAGED ");
                api_.free(b.ptr);
                b = Live{};
                result += "done";
                break;
        }
        if (step.op != Op::free) {
            if (b.ptr == nullptr) result += trouble("FAILED (nullptr)");
            else {
                result += where(b.ptr);
                fill(step.block);
            }
        }
        std::string line = op;
        line.resize(line.size() < 30 ? 30 : line.size() + 1, ' ');
        line += result;
        if (step.note) line += std::string("  (") + step.note + ")";
        return line;
    }

    // Counts a problem and returns its text.
    std::string trouble(const char* what) {
        ++failures_;
        return what;
    }

    static bool intact_zero(const Live& b) {
        for (std::size_t i = 0; i < b.size; ++i)
            if (b.ptr[i] != 0) return false;
        return true;
    }

    // The letter of the live block whose payload starts at p, or ' '.
    char label(const void* p) const {
        for (std::size_t i = 0; i < 26; ++i)
            if (blocks_[i].ptr != nullptr && blocks_[i].ptr == p) return static_cast<char>('a' + i);
        return ' ';
    }

    void picture(int after_step) {
        std::vector<edu::WalkEntry> entries = walk_all();
        learn(entries);
        std::printf("\n   heap after step %d: %zu walk entries\n", after_step, entries.size());
        // One bar per top-level entry: each cell shows the "busiest" state inside it
        // (used over free over bookkeeping over not carved).
        for (std::size_t i = 0; i < entries.size(); ++i) {
            const edu::WalkEntry& top = entries[i];
            if (top.depth != 0 || top.size == 0) continue;
            std::string bar(kBarWidth, cell_of(top.state));
            uintptr_t start = reinterpret_cast<uintptr_t>(top.address);
            int rank[kBarWidth] = {};
            auto priority = [](edu::WalkState st) {
                return st == edu::WalkState::used ? 4 : st == edu::WalkState::free || st == edu::WalkState::remote ? 3
                       : st == edu::WalkState::meta ? 2 : 1;
            };
            for (std::size_t j = i + 1; j < entries.size() && entries[j].depth > 0; ++j) {
                const edu::WalkEntry& e = entries[j];
                uintptr_t a = reinterpret_cast<uintptr_t>(e.address);
                if (a < start || a - start >= top.size) continue;
                std::size_t first = (a - start) * kBarWidth / top.size;
                std::size_t last = (a - start + (e.size ? e.size - 1 : 0)) * kBarWidth / top.size;
                for (std::size_t c = first; c <= last && c < kBarWidth; ++c) {
                    if (priority(e.state) > rank[c]) {
                        rank[c] = priority(e.state);
                        bar[c] = cell_of(e.state);
                    }
                }
            }
            const Top* named = top_at(top.address);
            std::printf("   |%s| %s, %s\n", bar.c_str(), named ? named->name.c_str() : top.kind, bytes(top.size).c_str());
        }
        std::printf("   ('#' used, '.' free, ',' freed by another thread, '=' bookkeeping, ' ' not carved yet; one cell = 1/%d)\n", kBarWidth);
        print_line("   %-20s %-7s %-10s %-10s", "kind", "state", "offset", "size");
        // Runs of alike entries (same depth, kind, state and size, no letter) print as one row.
        std::size_t rows = 0, i = 0;
        uintptr_t top_start = 0;
        while (i < entries.size() && rows < kMaxRows) {
            const edu::WalkEntry& e = entries[i];
            char name = e.state == edu::WalkState::used ? label(e.address) : ' ';
            std::size_t run = 1;
            while (name == ' ' && i + run < entries.size()) {
                const edu::WalkEntry& n = entries[i + run];
                bool alike = n.depth == e.depth && n.state == e.state && n.size == e.size &&
                             std::strcmp(n.kind, e.kind) == 0 &&
                             (n.state != edu::WalkState::used || label(n.address) == ' ');
                if (!alike) break;
                ++run;
            }
            std::string where_text;
            if (e.depth == 0) {
                top_start = reinterpret_cast<uintptr_t>(e.address);
                const Top* named = top_at(e.address);
                where_text = named ? named->name : place(e.address);
            } else {
                char buf[32];
                std::snprintf(buf, sizeof buf, "+%" PRIuPTR, reinterpret_cast<uintptr_t>(e.address) - top_start);
                where_text = buf;
            }
            std::string kind = std::string(2 * e.depth, ' ') + e.kind;
            std::string tail = run > 1 ? "x " + std::to_string(run) : std::string(1, name);
            print_line("   %-20s %-7s %-10s %-10s %s", kind.c_str(),
                        edu::kWalkStateNames[static_cast<unsigned>(e.state)], where_text.c_str(),
                        bytes(e.size).c_str(), tail.c_str());
            i += run;
            ++rows;
        }
        if (i < entries.size()) std::printf("   ... %zu more entries\n", entries.size() - i);
        edu::CheckResult verdict = api_.check();
        if (!verdict.ok) ++failures_;
        std::printf("   check: %s; live blocks %" PRIu64 " (%s), free blocks %" PRIu64 "\n\n",
                    verdict.ok ? "ok" : verdict.message, verdict.live_blocks,
                    bytes(verdict.live_bytes).c_str(), verdict.free_blocks);
    }

    const edu::Stage& stage_;
    const edu::Api& api_;
    Live blocks_[26];
    std::vector<Top> tops_;
    int failures_ = 0;

public:
    int failures() const { return failures_; }
};


// The workload as a trace for the step-through page. The trace model has malloc, free and
// realloc only: calloc(n, 20) becomes malloc(n * 20) and aligned_alloc(a, n) malloc(n).
int write_page(std::string path, const std::vector<const edu::Stage*>& stages) {
    edu::diff::Workload w;
    w.name = "demo";
    w.ids = 26;
    for (const Step& s : kWorkload) {
        edu::diff::Op op{};
        op.kind = edu::diff::Op::alloc;
        op.id = static_cast<uint32_t>(s.block - 'a');
        op.size = s.size;
        if (s.op == Op::calloc) op.size = s.size * 20;
        if (s.op == Op::realloc) op.kind = edu::diff::Op::realloc;
        if (s.op == Op::free) op.kind = edu::diff::Op::free, op.size = 0;
        w.ops.push_back(op);
    }
    // As in the stage diff: stage 1 gets a break of its own, away from the C library's heap.
    if (const edu::Stage* s1 = edu::find_stage("stage1_brk")) s1->set_option("break", "reserved");
    const char* wd = std::getenv("BUILD_WORKING_DIRECTORY");  // under `bazel run`: the user's directory
    if (wd && !path.empty() && path[0] != '/') path = std::string(wd) + "/" + path;
    return edu::diff::write_step_through(path, stages, w);
}


// --stages=LIST: each item a stage's number or name; false (after a one-line reason) if one
// is not linked in. Empty: every stage linked in.
bool choose_stages(const char* list, std::vector<const edu::Stage*>& out) {
    std::string items(list);
    if (items.empty()) {
        std::fprintf(stderr, "demo: --stages wants a value: --stages=1 or --stages=stage1_brk,3\n");
        return false;
    }
    for (std::size_t start = 0; start <= items.size();) {
        std::size_t end = items.find(',', start);
        if (end == std::string::npos) end = items.size();
        std::string item = items.substr(start, end - start);
        if (item.empty()) {
            std::fprintf(stderr, "demo: --stages=%s has an empty item\n", list);
            return false;
        }
        const edu::Stage* st = item.size() == 1 && item[0] >= '1' && item[0] <= '9' ? edu::find_stage(item[0] - '0')
                                                                                 : edu::find_stage(item.c_str());
        if (!st) {
            std::fprintf(stderr, "demo: no stage '%s' is linked in (stages: 1 to %zu, or their names)\n",
                         item.c_str(), edu::stage_count());
            return false;
        }
        out.push_back(st);
        start = end + 1;
    }
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    for (std::size_t i = 0; i < edu::stage_count(); ++i)
        if (!edu::apply_environment_options(edu::stage_at(i))) return 2;
    const char* html = nullptr;
    std::vector<const edu::Stage*> stages;
    for (int i = 1; i < argc; ++i) {
        if (std::strncmp(argv[i], "--html=", 7) == 0) {
            html = argv[i] + 7;
            if (*html == '\0') {
                std::fprintf(stderr, "demo: --html wants a value: --html=FILE\n");
                return 2;
            }
        } else if (std::strncmp(argv[i], "--stages=", 9) == 0) {
            if (!choose_stages(argv[i] + 9, stages)) return 2;
        } else {
            std::fprintf(stderr, "usage: demo [--stages=LIST] [--html=FILE]\n"
                                 "  --stages=LIST  stage numbers or names, comma-separated (default: every stage)\n"
                                 "  --html=FILE    write the steps as a step-through page instead\n");
            return 2;
        }
    }
    if (stages.empty())
        for (std::size_t i = 0; i < edu::stage_count(); ++i) stages.push_back(&edu::stage_at(i));
    if (html) return write_page(html, stages);
    std::printf("edu-alloc demo: %zu steps replayed through %zu stage(s)\n", std::size(kWorkload), stages.size());
    if (stages.empty()) {
        std::printf("no stage is linked in\n");
        return 1;
    }
    // EDU_OPTIONS="stage1_brk.fit=best ..." (applied above) replays it under other settings.
    int failures = 0;
    for (const edu::Stage* stage : stages) {
        Replay replay(*stage);
        replay.run();
        failures += replay.failures();
    }
    if (failures != 0) std::printf("\n%d problem(s): see the lines in capitals above\n", failures);
    return failures == 0 ? 0 : 1;
}
