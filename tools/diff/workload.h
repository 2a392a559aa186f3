// tools/diff/workload.h: what the stage diff replays, and where it comes from.
// A workload is a list of operations on numbered blocks, the malloc-lab trace model
// (`a id size`, `f id`, `r id size`). It comes from a built-in generator or a trace file;
// parse errors name the line. Replaying it through a stage is replay.h's job.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edu::diff {

struct Op {
    enum Kind : uint8_t { alloc, free, realloc };
    Kind kind;
    uint32_t id;      // the block, numbered by the trace
    uint64_t size;    // bytes (alloc, realloc); 0 for free
};

struct Workload {
    std::string name;
    std::vector<Op> ops;
    uint32_t ids = 0;           // ids are 0..ids-1
};

// Built-in workloads, each a pure function of its seed.
//   ring:     HAKMEM's random mixed benchmark: a ring of slots, each step frees an occupied
//             slot or fills an empty one with 16 + (r & 1023) bytes (xorshift32 13/17/5).
//   fragment: interleaved small and large blocks; the small ones are freed, leaving holes
//             only small requests can use, then larger requests arrive.
//   realloc:  many blocks grown step by step with realloc, as a vector or string builder does.
//   phase:    allocate a lot, free most of it, allocate again: does the footprint come back?
std::vector<std::string> builtin_names();
// `scale` multiplies the number of operations (1 = the default size, a few seconds at most).
// Returns false for an unknown name.
bool make_builtin(const std::string& name, uint64_t seed, double scale, Workload* out);

// Parses a malloc-lab trace: optional header lines (numbers only), then one operation a line;
// blank lines and lines starting with '#' are skipped. Checks that ids are used consistently:
// no free or realloc of a block that is not live, no alloc of a live id. On error returns false
// and sets `error` to "<source>:<line>: <what>".
bool parse_trace(const std::string& text, const std::string& source, Workload* out, std::string* error);

// Writes a workload as a malloc-lab trace (with the classic four header lines).
std::string format_trace(const Workload& w);

// Converts `ltrace -e malloc+free+calloc+realloc` output to a workload: addresses become ids,
// frees of unknown addresses are skipped (the program freed something allocated before
// tracing began), calloc becomes alloc of count*size.
bool parse_ltrace(const std::string& text, const std::string& source, Workload* out, std::string* error);

}  // namespace edu::diff
