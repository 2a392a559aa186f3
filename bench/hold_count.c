/* bench/hold_count.c: blocks of SIZE bytes (default 100,000), each written, held until malloc
 * says no; prints how many. The loop of tests/preload/limits.cc's `count`, in C: linking no
 * libstdc++, it has more of an address-space limit left for blocks (stage 4's chapter, [S4.66]).
 *   bazel build --config=opt //bench:hold_count
 *   LD_PRELOAD=LIB prlimit --as=$((40 << 20)) bazel-bin/bench/hold_count [SIZE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { kMaxCounted = 1 << 16 };
static void* blocks[kMaxCounted];

int main(int argc, char** argv) {
    size_t size = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    int n = 0;
    for (; n < kMaxCounted; ++n) {
        blocks[n] = malloc(size);
        if (!blocks[n]) break;
        memset(blocks[n], n & 0xff, size);
    }
    printf("%d blocks of %zu bytes\n", n, size);
    for (int i = 0; i < n; ++i) free(blocks[i]);
    return 0;
}
