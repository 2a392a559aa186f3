// tools/diff/workload.h: what the stage diff replays, and where it comes from.
// A workload is a list of operations on numbered blocks, the malloc-lab trace model
// (`a id size`, `f id`, `r id size`, each optionally done by another thread: `f id @2`). It
// comes from a built-in generator or a trace file; parse errors name the line. Replaying it
// through a stage is replay.h's job.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

namespace edu::diff {

struct Op {
    enum Kind : uint8_t { alloc, free, realloc };
    Kind kind;
    uint32_t id;      // the block, numbered by the trace; kNoBlock: free(NULL)
    uint64_t size;    // bytes (alloc, realloc); 0 for free
    uint32_t line;    // the trace's line (a built-in's: the line in its --generate output)
    uint8_t thread = 1;  // who does it: 1 the replay's own thread, 2..kMaxThreads a helper ('@N')
};

// `f -1` in a trace: free(NULL), which must do nothing.
inline constexpr uint32_t kNoBlock = UINT32_MAX;

struct Workload {
    std::string name;
    std::vector<Op> ops;
    uint32_t ids = 0;                    // ids are 0..ids-1
    std::vector<std::string> warnings;   // "<source>:<line>: <what>", e.g. a header that disagrees
};

// What a trace may hold (documented in --help and docs/diffing.md). Beyond them the reader
// stops with an error naming the line, before anything is replayed.
inline constexpr uint64_t kMaxIds = 1u << 24;            // ids 0 .. 16777215
inline constexpr uint64_t kMaxSize = 1ull << 40;         // 1 TiB a request
inline constexpr uint64_t kMaxOps = 1u << 26;            // 67,108,864 operations
inline constexpr std::size_t kMaxLine = 4096;            // bytes a line
inline constexpr unsigned kMaxThreads = 4;               // threads @1 .. @4

// Text from a file, made safe to print: printable ASCII as is, anything else as \xNN,
// cut after `max` bytes with "...".
std::string printable(const std::string& text, std::size_t max = 60);

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

// Parses a malloc-lab trace: optional header lines (numbers only: mdriver's suggested heap
// size, number of ids, number of operations, weight), then one operation a line, optionally
// followed by the thread that does it (`f 3 @2`; `@1`, the default, is the replay's own
// thread); blank lines and lines starting with '#' are skipped. Both common dialects: `f -1` is
// free(NULL), and a realloc of an id never allocated is realloc(NULL, size), i.e. malloc. Checks that ids are used
// consistently: no free or realloc of a freed block, no alloc of a live id. A header whose counts
// disagree with the body is a warning. On error returns false and sets `error` to
// "<source>:<line>: <what>".
bool parse_trace(std::istream& in, const std::string& source, Workload* out, std::string* error);
bool parse_trace(const std::string& text, const std::string& source, Workload* out, std::string* error);

// The most bytes live at once, counting only requests of at most `servable` bytes (larger ones
// are expected to fail with ENOMEM, a correct answer), and the operation where that peak is;
// with `stop_above`, the first operation whose live bytes exceed it instead.
struct Peak {
    uint64_t bytes = 0;
    std::size_t op = 0;      // index into ops of the operation that reached it
};
Peak live_peak(const Workload& w, uint64_t servable, uint64_t stop_above = UINT64_MAX);

// Writes a workload as a malloc-lab trace (with the classic four header lines).
std::string format_trace(const Workload& w);

// Converts `ltrace -e malloc+free+calloc+realloc` output to a workload: addresses become ids,
// frees of unknown addresses are skipped (the program freed something allocated before
// tracing began), calloc becomes alloc of count*size (an overflowing product is an error).
// Calls made from inside the C library (`libc.so.6->malloc(...)`: its internal calls, whose
// arguments ltrace decodes wrongly) are dropped and counted in `dropped`.
bool parse_ltrace(std::istream& in, const std::string& source, Workload* out, std::string* error,
                  uint64_t* dropped = nullptr);
bool parse_ltrace(const std::string& text, const std::string& source, Workload* out, std::string* error,
                  uint64_t* dropped = nullptr);

}  // namespace edu::diff
