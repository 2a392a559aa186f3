/* bench/grow_realloc.c: one block grown by realloc from 1 MiB to 64 MiB in 1 MiB steps, one
 * byte written in each new page, ROUNDS times (default 20); prints the median round in ms and
 * checks the bytes. Under an address-space limit stages 3 and 4 keep such a block in a mapping
 * of its own ([S3.63], [S4.66]), which realloc resizes with mremap ([S3.64], [S4.70]).
 *   bazel build --config=opt //bench:grow_realloc //stage3_segments:libedu_stage3.so
 *   LD_PRELOAD=LIB prlimit --as=$((512 << 20)) strace -f -c -e trace=%memory bazel-bin/bench/grow_realloc */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum { kMiB = 1 << 20, kPage = 4096, kSteps = 64, kMaxRounds = 101 };

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int by_value(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

int main(int argc, char** argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20;
    if (rounds < 1 || rounds > kMaxRounds) return fprintf(stderr, "rounds: 1 to %d\n", kMaxRounds), 2;
    double ms[kMaxRounds];
    for (int r = 0; r < rounds; ++r) {
        double start = now_ms();
        unsigned char* p = NULL;
        for (size_t size = kMiB; size <= (size_t)kSteps * kMiB; size += kMiB) {
            unsigned char* q = realloc(p, size);
            if (!q) return fprintf(stderr, "realloc to %zu MiB failed\n", size / kMiB), 1;
            p = q;
            for (size_t at = size - kMiB; at < size; at += kPage) p[at] = (unsigned char)(at / kPage);
        }
        for (size_t at = 0; at < (size_t)kSteps * kMiB; at += kPage)
            if (p[at] != (unsigned char)(at / kPage)) return fprintf(stderr, "bytes lost at %zu\n", at), 1;
        free(p);
        ms[r] = now_ms() - start;
    }
    qsort(ms, (size_t)rounds, sizeof ms[0], by_value);
    printf("grow 1 -> %d MiB in 1 MiB steps: median %.2f ms of %d rounds\n", kSteps, ms[rounds / 2], rounds);
    return 0;
}
