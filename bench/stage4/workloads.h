// bench/stage4/workloads.h: the three multi-threaded workloads of stage 4's benchmark, written
// against the plain malloc and free of the process (whichever allocator is preloaded).
// Entry points: run_larson, run_xmalloc, run_scratch. Each runs `threads` threads for about
// `seconds` and returns the operations done and the wall-clock time they took. Worker i runs
// on core i mod n of the n cores the process may use (pinned), so that two workers share a
// core only when there are more workers than cores, and the same ones in every run.
#pragma once

#include <cstdint>

namespace edu::bench {

struct Outcome {
    uint64_t operations;
    double seconds;
};

// larson-like: each of `threads` workers owns an array of blocks and replaces a random one
// (free, then malloc of 8..1000 bytes) again and again; every 500000 replacements its thread
// exits and a new thread inherits the array, so blocks outlive the threads that made them
// (they were first made by the main thread). 5000 blocks per worker and 100 rounds of 5000
// replacements per thread are the parameters of larson's usual run. Operation: one replacement.
Outcome run_larson(int threads, double seconds);

// xmalloc-like: threads in a ring; each allocates batches of blocks (16..512 bytes) and hands
// them to the next thread, and frees the batches the previous one hands it: every block dies
// on a thread that did not make it (with one thread, on its maker). Operation: one block made
// and freed.
Outcome run_xmalloc(int threads, double seconds);

// cache-scratch-like false-sharing probe: the main thread allocates one 8-byte object per
// thread, side by side, and hands them out; each thread frees its object, then allocates an
// 8-byte object, writes it 1000 times, frees it, and again. An allocator that gives threads
// objects on one cache line makes the writes slow. Operation: one write.
Outcome run_scratch(int threads, double seconds);

}  // namespace edu::bench
