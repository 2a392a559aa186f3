/* bench/large_written.c: the suite's malloc-large churn (20 buffers of 5..25 MiB, each step
 * replaces a random one; the driver's generator and seed) with every byte of each new buffer
 * written, STEPS times (default 1000); prints the peak resident set. The driver writes one byte
 * a buffer, so only the pages an allocator touches itself count there; here every page a block
 * reaches is resident, so the peak shows what an allocator keeps committed beyond its blocks
 * (stage 3's [S3.78], stage 4's [S4.85]).
 *   bazel build --config=opt //bench:large_written //stage3_segments:libedu_stage3.so
 *   LD_PRELOAD=LIB bazel-bin/bench/large_written 1000 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static uint32_t state = 0x1a2e | 1;   /* bench/suite/driver.cc's XorShift32 and malloc-large's seed */

static uint32_t next(void) {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
}

int main(int argc, char** argv) {
    long steps = argc > 1 ? atol(argv[1]) : 1000;
    void* buffer[20] = {NULL};
    size_t live = 0, peak_live = 0, size[20] = {0};
    for (long i = 0; i < steps; ++i) {
        unsigned b = next() % 20;
        free(buffer[b]);
        live -= size[b];
        size[b] = (5u << 20) + next() % (20u << 20);
        buffer[b] = malloc(size[b]);
        if (!buffer[b]) return fprintf(stderr, "malloc(%zu) failed\n", size[b]), 1;
        memset(buffer[b], 1, size[b]);
        live += size[b];
        if (live > peak_live) peak_live = live;
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("steps %ld, peak live %.1f MiB, peak resident %.1f MiB\n", steps, (double)peak_live / (1 << 20),
           (double)usage.ru_maxrss / 1024);
    for (unsigned b = 0; b < 20; ++b) free(buffer[b]);
    return 0;
}
