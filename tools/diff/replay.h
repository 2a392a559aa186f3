// tools/diff/replay.h: one workload through one stage, measured and validated.
// `replay` runs a validating pass (payload patterns, overlap and alignment checked by the
// driver, the stage's checker, memory sampled after every operation) and timed passes with no
// checks, through the stage's single-thread entry, or its thread-safe one when some operations
// are other threads' ('@2': threads.h). `replay_isolated` does it in a child process (a fresh
// heap every time); `Metrics` cross the process boundary as text (`encode` / `decode`).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "tools/diff/workload.h"

namespace edu::diff {

struct Sample {
    uint64_t op;                 // operations done so far
    uint64_t live_requested;     // bytes the program holds
    uint64_t footprint;          // bytes the stage holds from the OS
};

// Utilisation, two ways (both in --help and docs/diffing.md):
//   utilisation         = live bytes / footprint, at the operation where live bytes peak:
//                         how tightly the heap is packed when the program needs the most;
//   mdriver_utilisation = peak live bytes / the largest footprint of the whole replay, i.e.
//                         CS:APP mdriver's peak payload over the heap's extent at the end of the
//                         trace, where the heap never shrinks.
struct Metrics {
    std::string stage;
    bool reference = false;                 // the C library's malloc: no checker, no walker
    uint64_t ops = 0;
    double seconds = 0;                     // timed passes: median, and the spread
    double seconds_min = 0, seconds_max = 0;
    unsigned repetitions = 0;
    double ops_per_second = 0;              // ops / median seconds
    uint64_t peak_live_requested = 0;       // bytes, driver-side
    uint64_t footprint_at_peak = 0;         // footprint after the operation where live bytes peak
    uint64_t peak_footprint = 0;            // bytes held from the OS, at most, during the replay
    uint64_t final_footprint = 0;           // bytes still held after every block is freed
    double utilisation = 0;                 // peak_live_requested / footprint_at_peak
    double mdriver_utilisation = 0;         // peak_live_requested / peak_footprint
    uint64_t fragmentation_at_peak = 0;     // usable - requested over live blocks, at the peak
    uint64_t os_calls[static_cast<unsigned>(OsCall::count)] = {};  // during the validating pass
    std::map<std::string, uint64_t> walk_counts;  // "<kind> <state>" -> entries, at the peak
    uint64_t enomem = 0;                    // requests answered NULL + ENOMEM (a correct answer)
    uint32_t enomem_line = 0;               // the trace line of the first
    bool valid = true;
    std::string failure;                    // the first validation failure, if any...
    uint32_t failure_line = 0;              // ...and the trace line of its operation (0: none)
    std::vector<Sample> timeline;           // for plots
    // What ReplayOptions::capture returned at each pause: (operations done, text), e.g. the heap
    // in heap_json's form for `--json --steps`, carried back from the child with the rest.
    std::vector<std::pair<uint64_t, std::string>> captured;
};

struct ReplayOptions {
    bool timed = true;                       // run the timed pass...
    unsigned repetitions = 3;                // ...this many times; min / median / max reported
    bool reference = false;                  // a stage with no checker and no walker (libc)
    // For the libc column: a program whose main() starts with reference_child_main (the
    // stagediff binary itself, "/proc/self/exe"). The child then execs it, so glibc's heap is
    // as fresh as the stages' (a forked child's would hold the parent's free chunks). Empty:
    // fork only.
    std::string reexec;
    // Where the validating pass writes the trace line of each operation before running it, so
    // that a parent can name the line whose operation killed its child (replay_isolated).
    volatile uint32_t* line_now = nullptr;
    uint64_t check_every = 4096;             // stage checker period in the validating pass
    std::size_t timeline_points = 400;
    // Called after the operations listed in `pause_at` (1-based counts of operations done).
    // `id_at` names the trace id of the live block at a payload address (-1: none).
    std::vector<uint64_t> pause_at;
    std::function<void(const Stage&, uint64_t done, const std::function<int64_t(uintptr_t)>& id_at)> on_pause;
    // Also called at those pauses; a non-empty answer (one line) is kept in Metrics::captured.
    std::function<std::string(const Stage&, uint64_t done)> capture;
    std::function<void(const Stage&, uint64_t done, uint64_t total)> on_progress;
};

// Blocks above this size get their pattern written and checked at sampled cache lines (the
// first, the last, and kSampledLines - 2 spread evenly between), so a 1 GiB block costs
// microseconds, not seconds and a gigabyte of touched pages.
inline constexpr uint64_t kFullPatternBytes = 64 * 1024;
inline constexpr uint64_t kSampledLines = 32;

Metrics replay(const Stage& stage, const Workload& workload, const ReplayOptions& options);

// `replay` in a child process (fork): the stage's heap, and the C library's, are the child's
// own, so a workload's figures do not depend on what ran before it. A child that dies (a
// crash in the stage, the OOM killer) gives an invalid Metrics saying how it died.
Metrics replay_isolated(const Stage& stage, const Workload& workload, const ReplayOptions& options);

// The exec'd side of ReplayOptions::reexec. Returns -1 when argv is not a reference child's
// (main goes on as usual), else the process's exit status.
int reference_child_main(int argc, char** argv, const Stage& stage);

std::string encode(const Metrics& m);
bool decode(const std::string& text, Metrics* m);

// The operation after which the program's live bytes peak (first such), computed from the
// workload alone.
uint64_t peak_op(const Workload& workload);

}  // namespace edu::diff
