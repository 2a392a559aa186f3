// tools/diff/html.h: a workload's step-through, written as one self-contained HTML page.
// `record` replays a workload through a stage (replay.h) and walks the heap after every
// operation, keeping each step's changes and a full snapshot every so often; `write_html`
// puts the recordings and the page (page.html, page.js, embedded at build time) in one file.
// `heap_json` is the canonical form of a heap that the page's `edu.state()` also reports.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "tools/diff/replay.h"
#include "tools/diff/workload.h"

namespace edu::diff {

// Walker kind names ("block", "pool", "segment", ...) by number.
struct KindTable {
    std::vector<std::string> names;
    uint16_t index_of(const char* kind);
};

// One stage's replay of one workload, compactly: see html.cc for the byte format.
struct Recording {
    std::string stage;
    int number = 0;
    std::string summary;
    uint64_t base = 0;                  // the address offsets count from
    uint64_t keyframe_every = 0;        // operations between full snapshots
    std::string steps;                  // per operation: what changed in the walk
    std::vector<uint64_t> step_offsets; // where step k*keyframe_every+1 starts in `steps`
    std::vector<std::string> keyframes; // the whole walk after operation k*keyframe_every
    Metrics metrics;
    uint64_t max_entries = 0;           // the longest walk seen
    KindTable kinds;                    // the walker's kind names, by number
};

struct RecordOptions {
    uint64_t keyframe_every = 8192;     // operations between full snapshots
};

Recording record(const Stage& stage, const Workload& workload, const RecordOptions& options);
// A recording as the page reads it (one element of EDU_DATA.stages).
std::string recording_json(const Recording& recording);

// Writes the page: `stages` are recording_json's. Returns false with `error` set on failure.
bool write_html(const std::string& path, const std::string& title, const Workload& workload,
                const std::vector<std::string>& stages, std::string* error);

// The heap as the page's edu.state() reports it, the same in any process whatever the address
// space layout: each entry [region, offset, size, state, kind, depth], where `region` numbers
// the top-level (depth 0) entries by kind name, then address, `offset` counts from the start of
// the entry's region (the top-level entry before it in address order), and entries are in
// region order, then address order (then depth).
void heap_json(std::ostream& out, const Stage& stage);

// `stagediff --html=FILE`: records every stage, each in a child process of its own (fresh
// heaps, all at once), writes the page, reports on stderr. Returns the
// exit status (0, 1 when a stage failed validation, 2 when the file cannot be written).
int write_step_through(const std::string& path, const std::vector<const Stage*>& stages, const Workload& workload);

}  // namespace edu::diff
