// tools/diff/replay.h: one workload through one stage, measured and validated.
// `replay` runs the workload twice through the stage's single-thread entry: a validating pass
// (payload patterns, overlap and alignment checked by the driver, the stage's checker, memory
// sampled after every operation) and a timed pass with no checks. Output: `Metrics`.
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

struct Metrics {
    std::string stage;
    uint64_t ops = 0;
    double seconds = 0;                     // timed pass (median of the repetitions)
    double ops_per_second = 0;
    uint64_t peak_live_requested = 0;       // bytes, driver-side
    uint64_t peak_footprint = 0;            // bytes held from the OS, at most, during the replay
    uint64_t final_footprint = 0;           // bytes still held after every block is freed
    // Footprints are the stage's whole holdings: a stage that kept memory from an earlier
    // workload starts this one with it, as a long-running program would.
    double utilisation = 0;                 // peak_live_requested / peak_footprint
    uint64_t fragmentation_at_peak = 0;     // usable - requested over live blocks, at the peak
    uint64_t os_calls[static_cast<unsigned>(OsCall::count)] = {};  // during the validating pass
    std::map<std::string, uint64_t> walk_counts;  // "<kind> <state>" -> entries, at the peak
    bool valid = true;
    std::string failure;                    // the first validation failure, if any
    std::vector<Sample> timeline;           // for plots
};

struct ReplayOptions {
    bool timed = true;                       // run the timed pass...
    unsigned repetitions = 3;                // ...this many times; the median is reported
    uint64_t check_every = 4096;             // stage checker period in the validating pass
    std::size_t timeline_points = 400;
    // Called after the operations listed in `pause_at` (1-based counts of operations done).
    std::vector<uint64_t> pause_at;
    std::function<void(const Stage&, uint64_t done)> on_pause;
    std::function<void(const Stage&, uint64_t done, uint64_t total)> on_progress;
};

Metrics replay(const Stage& stage, const Workload& workload, const ReplayOptions& options);

// The operation after which the program's live bytes peak (first such), computed from the
// workload alone.
uint64_t peak_op(const Workload& workload);

}  // namespace edu::diff
