// bench/stage1_traces.cc: stage 1's fit policies on malloc-lab-style traces, scored as CS:APP's
// mdriver does (peak live payload / highest footprint), plus operations per second, replayed
// straight through the NASM core on a private break. With no trace files: the stage diff's
// built-in workloads and four traces shaped like the classic lab traces. --breakdown: where the
// heap's bytes are at its peak footprint; --losses: the same by free-block size, with the
// oracle of a gapless heap of this block format; --option=NAME=VALUE: a stage option (margin, trim).
//   bazel run --config=opt //bench:stage1_traces -- [--fits=first,next,best,seg] [--breakdown|--losses] [TRACE...]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "stage1_brk/core.h"
#include "stage1_brk/reserved_break.h"
#include "stage1_brk/stage1.h"
#include "tools/diff/workload.h"

namespace {

using edu::diff::Op;
using edu::diff::Workload;
using edu::stage1::ReservedBreak;

ReservedBreak* g_break = nullptr;
void* bench_sbrk(intptr_t increment) { return g_break->sbrk(increment); }

// Generated traces with the shapes of four classic lab traces (same operations in the same
// order as their published patterns; the real program traces are not redistributed here).
Workload lab_like(const std::string& name) {
    Workload w;
    w.name = name + "-like";
    auto line = [&] { return static_cast<uint32_t>(w.ops.size() + 1); };
    auto a = [&](uint32_t id, uint64_t size) { w.ops.push_back({Op::alloc, id, size, line()}); };
    auto f = [&](uint32_t id) { w.ops.push_back({Op::free, id, 0, line()}); };
    auto r = [&](uint32_t id, uint64_t size) { w.ops.push_back({Op::realloc, id, size, line()}); };
    if (name == "binary" || name == "binary2") {
        // Pairs of a small and a large block; the large ones are freed, then larger ones come.
        uint64_t small = name == "binary" ? 64 : 16, large = name == "binary" ? 448 : 112;
        uint64_t later = name == "binary" ? 512 : 128;
        uint32_t pairs = name == "binary" ? 2000 : 4000;
        for (uint32_t i = 0; i < 2 * pairs; i += 2) a(i, small), a(i + 1, large);
        for (uint32_t i = 1; i < 2 * pairs; i += 2) f(i);
        for (uint32_t i = 0; i < pairs; ++i) a(2 * pairs + i, later);
        for (uint32_t i = 0; i < 3 * pairs; ++i)
            if (i >= 2 * pairs || i % 2 == 0) f(i);
        w.ids = 3 * pairs;
    } else if (name == "coalescing") {
        // Two neighbours freed, then one block of their combined size: a coalescing test.
        uint32_t id = 0;
        for (int round = 0; round < 2400; ++round, id += 3) {
            a(id, 4095), a(id + 1, 4095), f(id), f(id + 1), a(id + 2, 8190), f(id + 2);
        }
        w.ids = id;
    } else if (name == "realloc") {
        // One block grown by 128 bytes at a time while small blocks come and go behind it.
        a(0, 512), a(1, 128);
        for (uint32_t i = 1; i < 4800; ++i) r(0, 512 + 128 * i), a(i + 1, 128), f(i);
        f(0), f(4800);
        w.ids = 4801;
    }
    return w;
}

// Where the heap's bytes are when its footprint last reached its peak (--breakdown): the
// requested payload of the live blocks, the tags (header and footer), each used block's
// rounding beyond its request (alignment, minimum block, realloc slack, a split remainder too
// small to stand alone), free blocks inside the heap (fragmentation), the heap's trailing free
// block (the growth margin and whatever was freed at the end), and the regions' end words
// and fences. The parts add up to the footprint.
struct Breakdown {
    uint64_t footprint = 0, payload = 0, tags = 0, rounding = 0, free_inside = 0, wilderness = 0, meta = 0;
    uint64_t free_by_size[3] = {0, 0, 0};  // free inside: under 128 bytes, under 4 KiB, 4 KiB and more
};

// The free-block size bands of --losses: slivers no class above the smallest can use, the
// small-object range, and pages.
int free_band(uint64_t size) { return size < 128 ? 0 : size < 4096 ? 1 : 2; }

// A request's block under this format ([S1.1]'s ADJUST_SIZE): the header, the 16-byte step,
// the 32-byte minimum. The oracle of --losses packs such blocks with no gap.
uint64_t block_for(uint64_t request) {
    uint64_t size = (request + kS1Overhead + kS1Align - 1) & ~(kS1Align - 1);
    return size < kS1MinBlock ? kS1MinBlock : size;
}

struct Result {
    double utilisation = 0, ops_per_second = 0;
    double oracle = 0;  // peak payload over (highest sum of live blocks' block_for + a region's 16 bytes)
    bool ok = false;
    Breakdown at_peak;
};

struct BreakdownWalk {
    const std::unordered_map<uintptr_t, uint64_t>* requested;  // payload address -> bytes asked
    Breakdown b;
    uint64_t last_free = 0;  // size of the free block just seen (the wilderness if last)
};

int breakdown_visit(void* raw, uint64_t kind, uint64_t address, uint64_t size) {
    auto* w = static_cast<BreakdownWalk*>(raw);
    switch (kind) {
        case S1_KIND_REGION:
            w->b.meta += kS1RegionHeader;
            break;
        case S1_KIND_FENCE:
            w->b.meta += size;
            if (size < 16) {  // the epilogue: the free block just before it is the trailing one
                w->b.wilderness += w->last_free, w->b.free_inside -= w->last_free;
                if (w->last_free) w->b.free_by_size[free_band(w->last_free)] -= w->last_free;
            }
            w->last_free = 0;
            break;
        case S1_KIND_USED: {
            uint64_t usable = s1_block_usable(reinterpret_cast<void*>(address + 8));
            uint64_t asked = w->requested->at(address + 8);
            w->b.payload += asked;
            w->b.tags += size - usable;
            w->b.rounding += usable - asked;
            w->last_free = 0;
            break;
        }
        default:
            w->b.free_inside += size;
            w->b.free_by_size[free_band(size)] += size;
            w->last_free = size;
    }
    return 1;
}

Breakdown breakdown_now(const std::vector<void*>& blocks, const std::vector<uint64_t>& sizes) {
    std::unordered_map<uintptr_t, uint64_t> requested;
    for (std::size_t i = 0; i < blocks.size(); ++i)
        if (blocks[i]) requested[reinterpret_cast<uintptr_t>(blocks[i])] = sizes[i];
    BreakdownWalk walk{&requested, {}, 0};
    s1_walk(&breakdown_visit, &walk);
    walk.b.footprint = s1_footprint;
    return walk.b;
}

Result replay(const Workload& w, uint64_t fit, bool breakdown) {
    ReservedBreak brk;
    g_break = &brk;
    s1_reset();
    s1_sbrk_hook = &bench_sbrk;
    s1_set_fit(fit);
    std::vector<void*> blocks(w.ids, nullptr);
    std::vector<uint64_t> sizes(w.ids, 0);
    uint64_t live = 0, peak = 0, peak_footprint_seen = 0, packed = 0, packed_peak = 0;
    Breakdown at_peak;
    auto start = std::chrono::steady_clock::now();
    for (const Op& op : w.ops) {
        if (op.id >= w.ids) continue;  // free(NULL): nothing to do
        switch (op.kind) {
            case Op::alloc:
                blocks[op.id] = s1_malloc(op.size);
                if (!blocks[op.id]) return {};
                live += op.size;
                packed += block_for(op.size);
                sizes[op.id] = op.size;
                break;
            case Op::free:
                s1_free(blocks[op.id]);
                if (blocks[op.id]) packed -= block_for(sizes[op.id]);
                blocks[op.id] = nullptr;
                live -= sizes[op.id];
                break;
            case Op::realloc: {
                bool had = blocks[op.id] != nullptr;
                blocks[op.id] = s1_realloc(blocks[op.id], op.size);
                if (!blocks[op.id]) return {};
                packed += block_for(op.size) - (had ? block_for(sizes[op.id]) : 0);
                live += op.size - sizes[op.id];
                sizes[op.id] = op.size;
                break;
            }
        }
        if (live > peak) peak = live;
        if (packed > packed_peak) packed_peak = packed;
        if (breakdown && s1_peak_footprint > peak_footprint_seen) {
            peak_footprint_seen = s1_peak_footprint;
            at_peak = breakdown_now(blocks, sizes);
        }
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    S1Report report;
    Result result;
    result.ok = s1_check(&report) == S1_CHECK_OK;
    result.utilisation = s1_peak_footprint ? double(peak) / double(s1_peak_footprint) : 0;
    result.oracle = double(peak) / double(packed_peak + kS1RegionHeader + 8);  // + the epilogue
    result.ops_per_second = seconds > 0 ? double(w.ops.size()) / seconds : 0;
    result.at_peak = at_peak;
    for (void* p : blocks) s1_free(p);
    s1_sbrk_hook = nullptr;
    s1_reset();
    return result;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> fit_names = {"first", "next", "best", "seg"};
    std::vector<Workload> workloads;
    bool breakdown = false, losses = false;
    const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg.rfind("--fits=", 0) == 0) {
            fit_names.clear();
            std::stringstream list(arg.substr(7));
            for (std::string name; std::getline(list, name, ',');) fit_names.push_back(name);
            continue;
        }
        if (arg.rfind("--option=", 0) == 0) {  // a stage option, NAME=VALUE (margin, trim)
            std::string option = arg.substr(9);
            std::size_t eq = option.find('=');
            if (eq == std::string::npos || option.substr(0, eq) == "fit" ||
                !edu::stage1::descriptor.set_option(option.substr(0, eq).c_str(), option.substr(eq + 1).c_str()))
                return std::fprintf(stderr, "%s: not a stage 1 option (use --fits= for the policy)\n", arg.c_str()), 2;
            continue;
        }
        if (arg == "--breakdown" || arg == "--losses") {
            breakdown = true;
            losses = arg == "--losses";
            continue;
        }
        std::string path = (arg[0] != '/' && cwd) ? std::string(cwd) + "/" + arg : arg;
        std::ifstream in(path);
        if (!in) return std::fprintf(stderr, "%s: cannot read\n", arg.c_str()), 2;
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        Workload w;
        std::string error;
        if (!edu::diff::parse_trace(text, arg, &w, &error)) return std::fprintf(stderr, "%s\n", error.c_str()), 2;
        w.name = arg.substr(arg.find_last_of('/') + 1);
        workloads.push_back(std::move(w));
    }
    if (workloads.empty()) {
        for (const std::string& name : edu::diff::builtin_names()) {
            Workload w;
            edu::diff::make_builtin(name, 1, 1.0, &w);
            w.name = name;
            workloads.push_back(std::move(w));
        }
        for (const char* name : {"binary", "binary2", "coalescing", "realloc"}) workloads.push_back(lab_like(name));
    }
    std::vector<uint64_t> fits;
    for (const std::string& name : fit_names) {
        if (!edu::stage1::descriptor.set_option("fit", name.c_str()))
            return std::fprintf(stderr, "unknown fit policy: %s\n", name.c_str()), 2;
        fits.push_back(s1_fit_policy);
    }
    if (losses) {
        // Where utilisation is lost, per trace and policy, in points of the peak footprint: each
        // byte of it that is not payload, and the oracle (the same blocks packed with no gap).
        std::printf("| trace | fit | util | oracle | peak footprint | payload | headers | alignment, minimum | free < 128 B | free 128 B-4 KiB | free >= 4 KiB | growth margin (trailing free) | regions |\n");
        std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (std::size_t i = 0; i < fits.size(); ++i) {
            double util_sum = 0, oracle_sum = 0, part_sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
            for (const Workload& w : workloads) {
                Result r = replay(w, fits[i], true);
                if (!r.ok) return std::fprintf(stderr, "%s: failed under fit=%s\n", w.name.c_str(), fit_names[i].c_str()), 1;
                const Breakdown& b = r.at_peak;
                const uint64_t parts[8] = {b.payload, b.tags, b.rounding, b.free_by_size[0], b.free_by_size[1], b.free_by_size[2], b.wilderness, b.meta};
                std::printf("| %s | %s | %.1f%% | %.1f%% | %llu |", w.name.c_str(), fit_names[i].c_str(), 100 * r.utilisation,
                            100 * r.oracle, static_cast<unsigned long long>(b.footprint));
                for (int k = 0; k < 8; ++k) {
                    double pct = 100.0 * double(parts[k]) / double(b.footprint);
                    part_sum[k] += pct;
                    std::printf(" %.1f |", pct);
                }
                std::printf("\n");
                util_sum += r.utilisation, oracle_sum += r.oracle;
            }
            double n = double(workloads.size());
            std::printf("| **mean** | %s | **%.2f%%** | **%.2f%%** | |", fit_names[i].c_str(), 100 * util_sum / n, 100 * oracle_sum / n);
            for (double sum : part_sum) std::printf(" %.2f |", sum / n);
            std::printf("\n");
        }
        return 0;
    }
    if (breakdown) {
        // One row per trace and policy: the heap at its peak footprint, in percent of it.
        std::printf("| trace | fit | util | peak footprint | payload | tags | rounding | free inside | trailing free | regions |\n");
        std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
        for (const Workload& w : workloads) {
            for (std::size_t i = 0; i < fits.size(); ++i) {
                Result r = replay(w, fits[i], true);
                if (!r.ok) return std::fprintf(stderr, "%s: failed under fit=%s\n", w.name.c_str(), fit_names[i].c_str()), 1;
                const Breakdown& b = r.at_peak;
                auto pct = [&](uint64_t part) { return 100.0 * double(part) / double(b.footprint); };
                std::printf("| %s | %s | %.1f%% | %llu | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% | %.1f%% |\n", w.name.c_str(),
                            fit_names[i].c_str(), 100 * r.utilisation, static_cast<unsigned long long>(b.footprint),
                            pct(b.payload), pct(b.tags), pct(b.rounding), pct(b.free_inside), pct(b.wilderness), pct(b.meta));
            }
        }
        return 0;
    }
    std::printf("| trace | ops |");
    for (const std::string& name : fit_names) std::printf(" %s util | %s Mops/s |", name.c_str(), name.c_str());
    std::printf("\n|---|---|");
    for (std::size_t i = 0; i < fits.size(); ++i) std::printf("---|---|");
    std::printf("\n");
    std::vector<double> sum(fits.size(), 0), low(fits.size(), 1);
    for (const Workload& w : workloads) {
        std::printf("| %s | %zu |", w.name.c_str(), w.ops.size());
        for (std::size_t i = 0; i < fits.size(); ++i) {
            Result r = replay(w, fits[i], false);
            if (!r.ok) return std::fprintf(stderr, "%s: failed under fit=%s\n", w.name.c_str(), fit_names[i].c_str()), 1;
            sum[i] += r.utilisation;
            if (r.utilisation < low[i]) low[i] = r.utilisation;
            std::printf(" %.1f%% | %.2f |", 100 * r.utilisation, r.ops_per_second / 1e6);
        }
        std::printf("\n");
    }
    std::printf("| **mean** | |");
    for (std::size_t i = 0; i < fits.size(); ++i) std::printf(" **%.1f%%** (min %.1f%%) | |", 100 * sum[i] / double(workloads.size()), 100 * low[i]);
    std::printf("\n");
    return 0;
}
