/* bench/raw_churn.c: BLOCKS live blocks of 600..1,200 bytes (default 20,000), each step freeing
 * a random one and allocating another in its place, STEPS times (default 200,000). Above 512
 * bytes every block is stage 2's raw block, so the steps exercise its raw table ([S2.34]):
 * stage 2's chapter counts the instructions with callgrind through the drop-in library.
 *   bazel build --config=opt //bench:raw_churn //stage2_pools:libedu_stage2.so
 *   LD_PRELOAD=LIB EDU_OPTIONS=stage1_brk.break=reserved valgrind --tool=callgrind \
 *       --callgrind-out-file=/dev/null bazel-bin/bench/raw_churn */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint32_t state = 0x2bd1 | 1;   /* a fixed seed: every run does the same steps */

static uint32_t next(void) {   /* XorShift32, as bench/suite/driver.cc */
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

static size_t block_size(void) { return 600 + next() % 601; }

static long count(const char* arg, long least) {   /* a whole number >= least, or -1 */
    char* end;
    long n = strtol(arg, &end, 10);
    return *arg && !*end && n >= least ? n : -1;
}

int main(int argc, char** argv) {
    long blocks = argc > 1 ? count(argv[1], 1) : 20000;
    long steps = argc > 2 ? count(argv[2], 0) : 200000;
    if (argc > 3 || blocks < 0 || steps < 0) return fprintf(stderr, "usage: raw_churn [BLOCKS [STEPS]]\n"), 2;
    void** block = malloc((size_t)blocks * sizeof *block);
    if (!block) return 1;
    for (long i = 0; i < blocks; ++i)
        if (!(block[i] = malloc(block_size()))) return fprintf(stderr, "malloc failed\n"), 1;
    for (long i = 0; i < steps; ++i) {
        long b = (long)(next() % (uint32_t)blocks);
        free(block[b]);
        if (!(block[b] = malloc(block_size()))) return fprintf(stderr, "malloc failed\n"), 1;
    }
    for (long i = 0; i < blocks; ++i) free(block[i]);
    free(block);
    printf("%ld blocks, %ld steps\n", blocks, steps);
    return 0;
}
