// tools/diff/diff_test.cc: proves the stage diff reads traces strictly, measures honestly and
// cannot be fooled: good and bad traces (errors name the line), the ltrace converter, the
// built-in workloads, the table on a tiny workload through stage 1, validation catching
// deliberately broken stages, and the files the picture and plot options write.
#include <doctest/doctest.h>

#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "stage1_brk/stage1.h"
#include "tools/diff/libc_reference.h"
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

TEST_CASE("an operation may name the thread that does it, and the writer keeps the mark") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 64\nf 0 @2\na 1 8 @3\nr 1 16 @1\nf -1 @4\n", "t.rep", &w, &error));
    REQUIRE(w.ops.size() == 5);
    CHECK(w.ops[0].thread == 1);
    CHECK(w.ops[1].thread == 2);
    CHECK(w.ops[2].thread == 3);
    CHECK(w.ops[3].thread == 1);
    CHECK(w.ops[4].thread == 4);
    CHECK(w.ops[4].id == kNoBlock);
    CHECK(format_trace(w) == "0\n2\n5\n1\na 0 64\nf 0 @2\na 1 8 @3\nr 1 16\nf -1 @4\n");
    CHECK(parse_error("a 0 64\nf 0 @0\n") == "t.rep:2: bad thread '@0' (threads are @1..@4)");
    CHECK(parse_error("a 0 64 @two\n") == "t.rep:1: bad thread '@two' (threads are @1..@4)");
}

TEST_CASE("unknown ids, double frees and reused live ids in a trace are errors") {
    CHECK(parse_error("a 0 16\nf 1\n") == "t.rep:2: free of block 1, never allocated");
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
    Metrics slow = m;  // a min..max wider than a column once ran into the next column's
    slow.repetitions = 3;
    slow.seconds_min = 1234.5;
    slow.seconds_max = 2345.6;
    std::ostringstream wide;
    print_table(wide, "wide", {slow, slow});
    CHECK(wide.str().find("1234500.000..2345600.000  1234500.000..2345600.000") != std::string::npos);  // ms
    std::ostringstream json;
    print_json(json, {TraceResult{"tiny", 7, 3, {}, {m}}});
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

// A heap whose second region lies below its first, as stage 2's brk region may lie below its
// mapped arena (where depends on address randomisation): offsets count from the first region.
alignas(64) unsigned char g_two_regions[8192];
void walks_two_regions(WalkFn visit, void* context) {
    visit({"arena", WalkState::meta, g_two_regions + 4096, 4096, 0}, context);
    visit({"block", WalkState::used, g_two_regions + 4096 + 16, 48, 1}, context);
    visit({"region", WalkState::meta, g_two_regions, 1024, 0}, context);
    visit({"block", WalkState::free, g_two_regions + 16, 64, 1}, context);
}
constexpr Api kTwoRegions = {&overlapping_malloc, &ignore_free, &overlapping_calloc, &overlapping_realloc,
                             &overlapping_aligned, &whole_usable, &claims_ok, &walks_two_regions, &no_stats};
const Stage kBelow = {"below", 98, "a region below the first", ThreadSafety::locked, false, 16,
                      &kTwoRegions, &kTwoRegions, nullptr, 0, &no_options, &no_option,
                      &nothing, &nothing, &nothing};

TEST_CASE("an offset below the heap's first region is written negative, in --steps and --picture") {
    // --steps printed '+-4096' and the picture '+18446744073709547520' (the difference wrapped).
    std::vector<HeapLine> lines = heap_lines(kBelow);
    REQUIRE(lines.size() == 4);
    CHECK(lines[2].offset == -4096);
    CHECK(lines[2].text == "  region                 meta    -4096       1.00 KiB");
    CHECK(lines[3].text == "    block                free    -4080       64 B");
    CHECK(lines[1].text == "    block                used    +16         48 B");
    const char* dir = std::getenv("TEST_TMPDIR");
    std::string path = std::string(dir ? dir : "/tmp") + "/below.svg", error;
    REQUIRE_MESSAGE(write_heap_picture(kBelow, path, "below", {0, 0, [](uintptr_t) { return int64_t{-1}; }}, &error),
                    error);
    std::ifstream in(path);
    std::stringstream svg;
    svg << in.rdbuf();
    CHECK(svg.str().find("region at -4096, 1.00 KiB") != std::string::npos);
    CHECK(svg.str().find(">-4096</text>") != std::string::npos);  // its first row
    CHECK(svg.str().find("18446744") == std::string::npos);
    // Zoomed to the region below (stagediff's --picture=N:f.svg@-4096--3072): it alone is drawn.
    std::string zoomed = std::string(dir ? dir : "/tmp") + "/below-zoomed.svg";
    REQUIRE_MESSAGE(write_heap_picture(kBelow, zoomed, "below", {-4096, -3072, [](uintptr_t) { return int64_t{-1}; }}, &error),
                    error);
    std::ifstream zin(zoomed);
    std::stringstream zsvg;
    zsvg << zin.rdbuf();
    CHECK(zsvg.str().find("region at -4096, 1.00 KiB") != std::string::npos);
    CHECK(zsvg.str().find("region at +0") == std::string::npos);
    CHECK(zsvg.str().find("zoomed to -4096--3072") != std::string::npos);
}

TEST_CASE("validation catches a stage that hands out overlapping blocks") {
    Workload w;
    REQUIRE(make_builtin("ring", 1, 0.01, &w));
    Metrics m = replay(kBroken, w, ReplayOptions{});
    CHECK_FALSE(m.valid);
    CHECK(m.failure.find("overlaps a live block") != std::string::npos);
    std::ostringstream out;
    print_failures(out, {TraceResult{"ring", w.ops.size(), w.ids, {}, {m}}});
    CHECK(out.str().rfind("ring:" + std::to_string(m.failure_line) + ": broken FAILED validation: operation ", 0) == 0);
    CHECK(m.failure_line > 4);
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
    std::string zoomed = base + "/zoom.svg", error;
    bool zoomed_ok = false;
    o.on_pause = [&](const Stage& s, uint64_t, const std::function<int64_t(uintptr_t)>& id_at) {
        drew = write_heap_picture(s, picture, "half way", {0, 0, id_at});
        zoomed_ok = write_heap_picture(s, zoomed, "zoomed", {0x1000, 0x2000, id_at}, &error);
    };
    Metrics m = replay(stage1::descriptor, w, o);
    REQUIRE(m.valid);
    REQUIRE(drew);
    std::ifstream in(picture);
    std::stringstream svg;
    svg << in.rdbuf();
    CHECK(svg.str().rfind("<svg", 0) == 0);
    CHECK(svg.str().find("region") != std::string::npos);
    CHECK(svg.str().find("#d9534f") != std::string::npos);  // used blocks drawn
    CHECK(svg.str().find("trace id ") != std::string::npos);  // used blocks name their trace ids
    CHECK(svg.str().find(">+0</text>") != std::string::npos);  // rows labelled with offsets, in decimal
    REQUIRE_MESSAGE(zoomed_ok, error);
    std::ifstream zin(zoomed);
    std::stringstream zsvg;
    zsvg << zin.rdbuf();
    CHECK(zsvg.str().find("zoomed to +4096-+8192") != std::string::npos);
    CHECK(zsvg.str().find(">+5120</text>") != std::string::npos);  // the second row of 1 KiB
    CHECK(zsvg.str().find("1 pixel = 1 B, a row = 1.00 KiB") != std::string::npos);  // 4 KiB: four rows
    REQUIRE_MESSAGE(write_plot({m}, plot, "phase", &error), error);
    std::ifstream p(plot);
    std::stringstream plotted;
    plotted << p.rdbuf();
    CHECK(plotted.str().find("<svg") != std::string::npos);
    CHECK(plotted.str().find("stage1_brk footprint") != std::string::npos);
}

// ---- Dialects, limits and hostile input -------------------------------------------------------

TEST_CASE("the other dialect: f -1 is free(NULL), a realloc of an id never allocated is malloc, size 0 is fine") {
    Workload w;
    std::string error;
    REQUIRE_MESSAGE(parse_trace("a 0 0\nf -1\nr 7 100\nf 7\nf 0\n", "d.rep", &w, &error), error);
    REQUIRE(w.ops.size() == 5);
    CHECK(w.ops[1].kind == Op::free);
    CHECK(w.ops[1].id == kNoBlock);
    CHECK(w.ops[2].kind == Op::realloc);
    CHECK(w.ops[2].line == 3);
    Metrics m = replay(stage1::descriptor, w, ReplayOptions{});
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.peak_live_requested == 100);
    CHECK(parse_error("a 0 16\nf 0\nr 0 8\n") == "t.rep:3: realloc of freed block 0 (freed at line 2)");
}

TEST_CASE("a header whose counts disagree with the body is a warning naming its line") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("20000\n5\n9\n1\na 0 16\nf 0\n", "h.rep", &w, &error));
    REQUIRE(w.warnings.size() == 2);
    CHECK(w.warnings[0] == "h.rep:2: warning: the header says 5 ids, the trace uses 1");
    CHECK(w.warnings[1] == "h.rep:3: warning: the header says 9 operations, the trace has 2");
    REQUIRE(parse_trace("0\n1\n2\n1\na 0 16\nf 0\n", "h.rep", &w, &error));
    CHECK(w.warnings.empty());
}

TEST_CASE("ids, sizes and lines beyond the documented limits are errors with their line") {
    CHECK(parse_error("a 16777216 8\n") == "t.rep:1: block id 16777216 is beyond the limit (ids are 0..16777215)");
    CHECK(parse_error("a 0 1099511627777\n") == "t.rep:1: size 1099511627777 is beyond the limit of 1099511627776 bytes (1 TiB)");
    CHECK(parse_error("a 0 99999999999999999999999\n") == "t.rep:1: bad size '99999999999999999999999'");
    CHECK(parse_error("a 0 8\n" + std::string(5000, 'x') + "\n").rfind("t.rep:2: line longer than 4096 bytes", 0) == 0);
    CHECK(parse_error("") == "t.rep:1: no operations (the file is empty)");
    CHECK(parse_error("1\n2\n") == "t.rep:2: no operations (only a header or comments)");
    // Binary garbage is printed escaped, never raw to the terminal.
    const char garbage[] = "a 0 8\n\x7f" "ELF\x01\x1b[31m\n";
    CHECK(parse_error(std::string(garbage, sizeof garbage - 1)) ==
          "t.rep:2: expected 'a <id> <size>', 'f <id>' or 'r <id> <size>', found '\\x7fELF\\x01\\x1b[31m'");
    CHECK(printable(std::string("a\0b\\", 4)) == "a\\x00b\\x5c");
}

TEST_CASE("the live peak ignores requests larger than the machine (they must fail with ENOMEM)") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 100\na 1 1000000\na 2 50\nf 1\n", "p.rep", &w, &error));
    CHECK(live_peak(w, UINT64_MAX).bytes == 1000150);
    CHECK(live_peak(w, UINT64_MAX).op == 2);
    CHECK(live_peak(w, 4096).bytes == 150);
}

TEST_CASE("a request the stage cannot serve is answered ENOMEM, reported, and the replay goes on") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 1099511627776\na 1 100\nr 1 1099511627776\nf 0\nf 1\n", "e.rep", &w, &error));
    Metrics m = replay(stage1::descriptor, w, ReplayOptions{});
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.enomem == 2);
    CHECK(m.enomem_line == 1);
    CHECK(m.peak_live_requested == 100);  // the failed realloc left the block as it was
}

// A stage may answer realloc(p, 0) as it answers any request it cannot serve: NULL with ENOMEM,
// the block kept. Counts the blocks such a stage has handed out and not had back.
long g_outstanding = 0;
void* counted_malloc(std::size_t n) {
    void* p = stage1::descriptor.single_thread->malloc(n);
    if (p) ++g_outstanding;
    return p;
}
void counted_free(void* p) {
    if (p) --g_outstanding;
    stage1::descriptor.single_thread->free(p);
}
void* refusing_realloc(void* p, std::size_t n) {
    if (p && n == 0) {
        errno = ENOMEM;
        return nullptr;
    }
    void* q = stage1::descriptor.single_thread->realloc(p, n);
    if (q && !p) ++g_outstanding;
    return q;
}

TEST_CASE("a realloc to size 0 answered ENOMEM keeps the block, in the timed pass too") {
    Api api = *stage1::descriptor.single_thread;
    api.malloc = &counted_malloc;
    api.free = &counted_free;
    api.realloc = &refusing_realloc;
    Stage refuser = stage1::descriptor;
    refuser.name = "refuser";
    refuser.single_thread = &api;
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 100\na 1 200\nr 0 0\nf 0\nf 1\n", "zero.rep", &w, &error));
    g_outstanding = 0;
    ReplayOptions options;
    options.repetitions = 2;
    Metrics m = replay(refuser, w, options);
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.enomem == 1);
    CHECK(m.enomem_line == 3);
    CHECK_MESSAGE(g_outstanding == 0, "blocks the replay never freed: ", g_outstanding);
}

TEST_CASE("a 1 GiB block is checked by sampling: it touches a few pages, not a gigabyte") {
    Workload w;
    std::string error;
    REQUIRE(parse_trace("a 0 1073741824\na 1 64\nf 0\nf 1\n", "big.rep", &w, &error));
    struct rusage before {}, after {};
    getrusage(RUSAGE_SELF, &before);
    ReplayOptions o;
    o.timed = false;
    Metrics m = replay(stage1::descriptor, w, o);
    getrusage(RUSAGE_SELF, &after);
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.peak_live_requested == 1073741824 + 64);
    CHECK(after.ru_maxrss - before.ru_maxrss < 64 * 1024);  // KiB: far below the 1 GiB a full fill would touch
}

TEST_CASE("Metrics survive the trip from the child process through encode and decode") {
    Workload w;
    REQUIRE(make_builtin("realloc", 2, 0.02, &w));
    ReplayOptions o;
    o.repetitions = 2;
    Metrics m = replay_isolated(stage1::descriptor, w, o);
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.stage == "stage1_brk");
    CHECK(m.repetitions == 2);
    CHECK(m.seconds_min <= m.seconds);
    CHECK(m.seconds <= m.seconds_max);
    CHECK(m.walk_counts.size() >= 2);
    CHECK(!m.timeline.empty());
    Metrics back;
    m.failure = "odd \"text\", with commas; and a line: 12";
    REQUIRE(decode(encode(m), &back));
    CHECK(encode(back) == encode(m));
    CHECK_FALSE(decode("stage x\nops 3\n", &back));  // cut short: no "end"
}

TEST_CASE("a stage that crashes in the child is a validation failure naming the line, not a dead tool") {
    Api api = *stage1::descriptor.single_thread;
    api.malloc = [](std::size_t n) -> void* {
        if (n == 16) std::abort();  // the second request of the trace below
        return stage1::descriptor.single_thread->malloc(n);
    };
    Stage crasher = stage1::descriptor;
    crasher.single_thread = &api;
    Workload w;
    std::string error;
    REQUIRE(parse_trace("# a comment\na 0 8\na 1 16\nf 0\nf 1\n", "c.rep", &w, &error));
    Metrics m = replay_isolated(crasher, w, ReplayOptions{});
    CHECK_FALSE(m.valid);
    CHECK(m.failure.find("died of signal 6") != std::string::npos);
    CHECK(m.failure_line == 3);
}

TEST_CASE("the C library's column replays through glibc and measures a footprint") {
    Workload w;
    REQUIRE(make_builtin("phase", 1, 0.05, &w));
    ReplayOptions o;
    o.reference = true;
    Metrics m = replay_isolated(libc_reference(), w, o);
    CHECK_MESSAGE(m.valid, m.failure);
    CHECK(m.stage == "libc");
    CHECK(m.reference);
    CHECK(m.walk_counts.empty());
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return;  // the sanitizer's allocator replaces glibc's, and mallinfo2 does not see it
#endif
    CHECK(m.peak_footprint >= m.peak_live_requested);
    CHECK(m.utilisation > 0.5);
    CHECK(m.utilisation <= 1.0);
}

// glibc answers realloc(p, 0) with NULL, p freed; the stages with a block of their smallest size.
// Both are C17's to choose, so a trace that asks it replays as valid in every column (the C
// library's column used to fail it as a NULL without ENOMEM), and so does ltrace's record of it.
TEST_CASE("realloc to size 0 replays through glibc and every stage, from a trace and from ltrace") {
    Workload w;
    std::string error;
    REQUIRE_MESSAGE(parse_trace("a 0 64\na 1 64\nr 0 0\nr 1 0\nr 1 200\nf 0\nf 1\n", "z.rep", &w, &error), error);
    ReplayOptions o;
    o.reference = true;
    Metrics libc = replay_isolated(libc_reference(), w, o);
    CHECK_MESSAGE(libc.valid, libc.failure);
    Metrics stage1 = replay(stage1::descriptor, w, ReplayOptions{});   // stages 2-4: stagediff_test
    CHECK_MESSAGE(stage1.valid, stage1.failure);
    // ltrace of a program on glibc: the block is gone after realloc(p, 0) = 0, and glibc hands
    // its address out again; the converter keeps the call as `r 0 0` and frees id 0 at the end.
    const char* text =
        "malloc(24)                         = 0x5581f8d4f2a0\n"
        "realloc(0x5581f8d4f2a0, 0)         = 0\n"
        "malloc(16)                         = 0x5581f8d4f2a0\n"
        "realloc(0x5581f8d4f2a0, 4096)      = 0\n"  // failed: the block stays
        "free(0x5581f8d4f2a0)               = <void>\n";
    Workload lt;
    REQUIRE_MESSAGE(parse_ltrace(text, "l.txt", &lt, &error), error);
    CHECK(format_trace(lt) == "0\n2\n5\n1\na 0 24\nr 0 0\na 1 16\nf 1\nf 0\n");
    Metrics from_ltrace = replay_isolated(libc_reference(), lt, o);
    CHECK_MESSAGE(from_ltrace.valid, from_ltrace.failure);
}

TEST_CASE("ltrace: calls from inside libc are dropped and counted; an overflowing calloc is an error") {
    const char* text =
        "python3->malloc(24)                = 0x5581f8d4f2a0\n"
        "libc.so.6->malloc(140737488355328) = 0x5581f8d4f300\n"
        "libc.so.6->free(0x5581f8d4f300)    = <void>\n"
        "python3->free(0x5581f8d4f2a0)      = <void>\n";
    Workload w;
    std::string error;
    uint64_t dropped = 0;
    REQUIRE_MESSAGE(parse_ltrace(text, "l.txt", &w, &error, &dropped), error);
    CHECK(dropped == 2);
    CHECK(format_trace(w) == "0\n1\n2\n1\na 0 24\nf 0\n");
    CHECK_FALSE(parse_ltrace("malloc(8) = 0x10\ncalloc(4294967296, 4294967296) = 0x5581f8d4f300\n", "l.txt", &w, &error));
    CHECK(error == "l.txt:2: calloc(4294967296, 4294967296) overflows, yet it returned a block: ltrace misread the arguments");
}

TEST_CASE("every output format escapes names: JSON, CSV, SVG text and gnuplot strings") {
    CHECK(json_string("a\"b\\c\nd\x01") == "\"a\\\"b\\\\c\\nd\\u0001\"");
    CHECK(csv_field("plain") == "plain");
    CHECK(csv_field("a,b") == "\"a,b\"");
    CHECK(csv_field("say \"hi\"") == "\"say \"\"hi\"\"\"");
    CHECK(xml_text("a&b<c>'d\"") == "a&amp;b&lt;c&gt;&apos;d&quot;");
    CHECK(gnuplot_string("it's") == "'it''s'");
}

}  // namespace
}  // namespace edu::diff
