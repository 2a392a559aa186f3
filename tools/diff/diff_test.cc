// tools/diff/diff_test.cc: proves the stage diff reads traces strictly, measures honestly and
// cannot be fooled: good and bad traces (errors name the line), the ltrace converter, the
// built-in workloads, the table on a tiny workload through stage 1, validation catching
// deliberately broken stages, and the files the picture and plot options write.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "stage1_brk/stage1.h"
#include "tools/diff/replay.h"
#include "tools/diff/report.h"
#include "tools/diff/workload.h"

namespace edu::diff {
namespace {

std::string parse_error(const std::string& text) {
    Workload w;
    std::string error;
    CHECK_FALSE(parse_trace(text, "t.rep", &w, &error));
    return error;
}

TEST_CASE("a malloc-lab trace with header lines parses into operations") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("20000\n2\n4\n1\na 0 512\na 1 128\nr 0 640\nf 1\n", "t.rep", &w, &error));
    REQUIRE(w.ops.size() == 4);
    CHECK(w.ids == 2);
    CHECK(w.ops[0].kind == Op::alloc);
    CHECK(w.ops[0].size == 512);
    CHECK(w.ops[2].kind == Op::realloc);
    CHECK(w.ops[2].size == 640);
    CHECK(w.ops[3].kind == Op::free);
    CHECK(w.ops[3].id == 1);
}

TEST_CASE("malformed trace lines are reported with their line number") {
    CHECK(parse_error("a 0 16\nx 1 2\n") == "t.rep:2: expected 'a <id> <size>', 'f <id>' or 'r <id> <size>', found 'x 1 2'");
    CHECK(parse_error("a 0\n") == "t.rep:1: expected 'a <id> <size>', 'f <id>' or 'r <id> <size>', found 'a 0'");
    CHECK(parse_error("1\n\na zero 16\n") == "t.rep:3: bad block id 'zero'");
    CHECK(parse_error("a 0 -5\n") == "t.rep:1: bad size '-5'");
}

TEST_CASE("unknown ids, double frees and reused live ids in a trace are errors") {
    CHECK(parse_error("a 0 16\nf 1\n") == "t.rep:2: unknown block id 1");
    CHECK(parse_error("a 0 16\nf 0\nf 0\n") == "t.rep:3: double free of block 0 (freed at line 2)");
    CHECK(parse_error("a 0 16\nf 0\nr 0 32\n") == "t.rep:3: realloc of freed block 0 (freed at line 2)");
    CHECK(parse_error("a 3 16\na 3 8\n") == "t.rep:2: block 3 is already live (allocated at line 1)");
}

TEST_CASE("every built-in workload is deterministic and round-trips through the trace format") {
    for (const std::string& name : builtin_names()) {
        CAPTURE(name);
        Workload a, b, back;
        REQUIRE(make_builtin(name, 7, 0.05, &a));
        REQUIRE(make_builtin(name, 7, 0.05, &b));
        REQUIRE(!a.ops.empty());
        std::string text = format_trace(a);
        CHECK(text == format_trace(b));
        std::string error;
        REQUIRE_MESSAGE(parse_trace(text, name, &back, &error), error);  // also proves ids are used validly
        CHECK(format_trace(back) == text);
    }
    Workload w;
    CHECK_FALSE(make_builtin("no-such-workload", 1, 1, &w));
}

TEST_CASE("ltrace output converts to a workload with addresses mapped to ids") {
    const char* text =
        "malloc(24)                         = 0x5581f8d4f2a0\n"
        "calloc(4, 8)                       = 0x5581f8d4f2c0\n"
        "free(0x7777)                       = <void>\n"  // allocated before tracing: skipped
        "realloc(0x5581f8d4f2a0, 100)       = 0x5581f8d4f6d0\n"
        "ls->malloc(8)                      = 0x5581f8d4f700\n"
        "free(0x5581f8d4f6d0)               = <void>\n"
        "--- SIGCHLD (Child exited) ---\n"
        "+++ exited (status 0) +++\n";
    Workload w;
    std::string error;
    REQUIRE_MESSAGE(parse_ltrace(text, "l.txt", &w, &error), error);
    std::string trace = format_trace(w);
    // The leaked calloc and malloc blocks are freed at the end so every stage drains.
    CHECK(trace.find("a 0 24\na 1 32\nr 0 100\na 2 8\nf 0\n") != std::string::npos);
    CHECK(w.ops.size() == 7);
    Workload interleaved;
    CHECK_FALSE(parse_ltrace("malloc(8 <unfinished ...>\n", "l.txt", &interleaved, &error));
    CHECK(error.find("l.txt:1:") == 0);
}

TEST_CASE("the table compares a tiny workload through stage 1") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 100\na 1 200\nf 0\nr 1 5000\na 2 0\nf 1\nf 2\n", "tiny", &w, &error));
    Metrics m = replay(stage1::descriptor, w, ReplayOptions{});
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.ops == 7);
    CHECK(m.peak_live_requested == 5000);
    CHECK(m.ops_per_second > 0);
    CHECK(m.walk_counts["block used"] == 1);  // the peak: only the grown block is live
    std::ostringstream out;
    print_table(out, "tiny", {m});
    CHECK(out.str().find("stage1_brk") != std::string::npos);
    CHECK(out.str().find("peak live bytes") != std::string::npos);
    CHECK(out.str().find("4.88 KiB") != std::string::npos);  // 5000 bytes
    std::ostringstream json;
    print_json(json, "tiny", {m});
    CHECK(json.str().find("\"peak_live_bytes\": 5000") != std::string::npos);
}

// ---- Deliberately broken stages: the driver must notice ----

alignas(16) unsigned char g_one_block[1 << 16];
void* overlapping_malloc(std::size_t) { return g_one_block; }  // every block is the same block
void ignore_free(void*) {}
void* overlapping_calloc(std::size_t, std::size_t) { return g_one_block; }
void* overlapping_realloc(void*, std::size_t) { return g_one_block; }
void* overlapping_aligned(std::size_t, std::size_t) { return g_one_block; }
std::size_t whole_usable(const void*) { return sizeof g_one_block; }
CheckResult claims_ok() { return CheckResult{}; }
void walks_nothing(WalkFn, void*) {}
Stats no_stats() { return Stats{}; }
bool no_options(const char*, const char*) { return false; }
const char* no_option(const char*) { return nullptr; }
void nothing() {}

constexpr Api kOverlapping = {&overlapping_malloc, &ignore_free, &overlapping_calloc, &overlapping_realloc,
                              &overlapping_aligned, &whole_usable, &claims_ok, &walks_nothing, &no_stats};
const Stage kBroken = {"broken", 99, "hands out one block to everyone", ThreadSafety::locked, false, 16,
                       &kOverlapping, &kOverlapping, nullptr, 0, &no_options, &no_option,
                       &nothing, &nothing, &nothing};

TEST_CASE("validation catches a stage that hands out overlapping blocks") {
    Workload w;
    REQUIRE(make_builtin("ring", 1, 0.01, &w));
    Metrics m = replay(kBroken, w, ReplayOptions{});
    CHECK_FALSE(m.valid);
    CHECK(m.failure.find("overlaps a live block") != std::string::npos);
    std::ostringstream out;
    print_table(out, "broken", {m});
    CHECK(out.str().find("broken FAILED validation") != std::string::npos);
}

int g_corrupt_countdown = 0;
void* corrupting_malloc(std::size_t n) {
    void* p = stage1::descriptor.single_thread->malloc(n);
    static unsigned char* previous = nullptr;
    if (previous && --g_corrupt_countdown == 0) previous[0] ^= 0xff;  // scribble on a live block
    previous = static_cast<unsigned char*>(p);
    return p;
}

TEST_CASE("validation catches a stage that damages a live block's payload") {
    Api api = *stage1::descriptor.single_thread;
    api.malloc = &corrupting_malloc;
    Stage scribbler = stage1::descriptor;
    scribbler.name = "scribbler";
    scribbler.single_thread = &api;
    g_corrupt_countdown = 50;
    Workload w;
    std::string error;
    std::string text;
    for (int i = 0; i < 100; ++i) text += "a " + std::to_string(i) + " 64\n";
    for (int i = 0; i < 100; ++i) text += "f " + std::to_string(i) + "\n";
    REQUIRE(parse_trace(text, "scribble", &w, &error));
    Metrics m = replay(scribbler, w, ReplayOptions{});
    CHECK_FALSE(m.valid);
    CHECK(m.failure.find("payload changed") != std::string::npos);
}

TEST_CASE("the picture and plot options write SVG files naming the stage") {
    Workload w;
    REQUIRE(make_builtin("phase", 3, 0.02, &w));
    const char* dir = std::getenv("TEST_TMPDIR");
    std::string base = dir ? dir : "/tmp";
    std::string picture = base + "/heap.svg", plot = base + "/plot.svg";
    ReplayOptions o;
    o.pause_at = {w.ops.size() / 2};
    bool drew = false;
    o.on_pause = [&](const Stage& s, uint64_t) { drew = write_heap_picture(s, picture, "half way"); };
    Metrics m = replay(stage1::descriptor, w, o);
    REQUIRE(m.valid);
    REQUIRE(drew);
    std::ifstream in(picture);
    std::stringstream svg;
    svg << in.rdbuf();
    CHECK(svg.str().rfind("<svg", 0) == 0);
    CHECK(svg.str().find("region") != std::string::npos);
    CHECK(svg.str().find("#d9534f") != std::string::npos);  // used blocks drawn
    std::string error;
    REQUIRE_MESSAGE(write_plot({m}, plot, "phase", &error), error);
    std::ifstream p(plot);
    std::stringstream plotted;
    plotted << p.rdbuf();
    CHECK(plotted.str().find("<svg") != std::string::npos);
    CHECK(plotted.str().find("stage1_brk footprint") != std::string::npos);
}

}  // namespace
}  // namespace edu::diff
