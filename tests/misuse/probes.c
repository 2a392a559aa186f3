/* tests/misuse/probes.c: one small program per kind of heap misuse, chosen by name
 * (`probes overflow`). Each does its one wrong thing, then a little ordinary work and exits 0,
 * so "exit 0" means the misuse went unseen. The allocator under test is whichever malloc the
 * process has (LD_PRELOAD); tests/misuse/misuse_test.py runs every probe under every one. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Ordinary work after the misuse: blocks of many sizes come and go, so an allocator that
 * checks its lists or its quarantine as it works has the chance to look. */
static void churn(void) {
    void* keep[64];
    for (int round = 0; round < 20; ++round) {
        for (int i = 0; i < 64; ++i) keep[i] = malloc((size_t)(16 + 24 * ((i + round) % 40)));
        for (int i = 0; i < 64; ++i) free(keep[i]);
    }
}

/* The compiler must not see through malloc and free (see -fno-builtin in BUILD), nor keep a
 * pointer it could prove dead: `sink` makes every block escape. */
static void* volatile sink;

static int overflow(void) { /* one byte past a 24-byte request */
    char* p = malloc(24);
    sink = p;
    p[24] = 'A';
    free(p);
    return 0;
}

static int underflow(void) { /* one byte before a block */
    char* p = malloc(24);
    sink = p;
    p[-1] = 'A';
    free(p);
    return 0;
}

/* One byte before a 16-byte block whose neighbour below is free: the byte lands in the last
 * byte of that free block, which holds free-list metadata in stages that keep a mark there. */
static int underflow_into_free(void) {
    char* b[64];
    for (int i = 0; i < 64; ++i) b[i] = malloc(16);
    sink = b;
    free(b[10]);
    b[11][-1] = 0x41;
    free(b[11]);
    /* Enough blocks of the class that every allocator hands out b[10] again, whatever order
     * its lists are in (kept: a probe may leak). */
    for (int i = 0; i < 5000; ++i) sink = malloc(16);
    return 0;
}

/* One byte past a 16-byte block whose neighbour is free: the byte lands in the neighbour's
 * free-list link in stages that keep it there, and the next mallocs follow it. */
static int overflow_into_free(void) {
    char* b[64];
    for (int i = 0; i < 64; ++i) b[i] = malloc(16);
    sink = b;
    free(b[11]);
    free(b[20]);
    b[10][16] = 0x41;
    for (int i = 0; i < 64; ++i)
        if (i != 11 && i != 20) free(b[i]);
    for (int i = 0; i < 200; ++i) b[i % 64] = malloc(16);
    return 0;
}

static int double_free(void) {
    char* p = malloc(24);
    sink = p;
    free(p);
    free(p);
    return 0;
}

static int double_free_between(void) { /* free(p); free(q); free(p) */
    char* p = malloc(24);
    char* q = malloc(24);
    sink = q;
    free(p);
    free(q);
    free(p);
    return 0;
}

static int interior_free(void) { /* 16 bytes into a 64-byte block: aligned, but not a block */
    char* p = malloc(64);
    sink = p;
    free(p + 16);
    return 0;
}

static int misaligned_free(void) {
    char* p = malloc(64);
    sink = p;
    free(p + 1);
    return 0;
}

static int foreign_free(void) { /* memory no malloc handed out */
    static _Alignas(64) char global[256];
    sink = global;
    free(global + 64);
    return 0;
}

static int write_after_free(void) { /* the first 16 bytes of a freed block overwritten */
    char* p = malloc(24);
    sink = p;
    free(p);
    memset(p, 'A', 16);
    return 0;
}

static int realloc_freed(void) {
    char* p = malloc(24);
    sink = p;
    free(p);
    sink = realloc(p, 100);
    return 0;
}

/* The last two are not misuse: C says the answer is NULL with errno ENOMEM, nothing else. */
static int calloc_overflow(void) {
    errno = 0;
    void* p = calloc(SIZE_MAX / 2, 4);
    if (p != NULL || errno != ENOMEM) {
        fprintf(stderr, "calloc(SIZE_MAX / 2, 4) returned %p, errno %d\n", p, errno);
        return 1;
    }
    return 0;
}

static int huge_malloc(void) {
    errno = 0;
    void* p = malloc(SIZE_MAX - 64);
    if (p != NULL || errno != ENOMEM) {
        fprintf(stderr, "malloc(SIZE_MAX - 64) returned %p, errno %d\n", p, errno);
        return 1;
    }
    return 0;
}

static const struct {
    const char* name;
    int (*run)(void);
} kProbes[] = {
    {"overflow", overflow},
    {"overflow_into_free", overflow_into_free},
    {"underflow", underflow},
    {"underflow_into_free", underflow_into_free},
    {"double_free", double_free},
    {"double_free_between", double_free_between},
    {"interior_free", interior_free},
    {"misaligned_free", misaligned_free},
    {"foreign_free", foreign_free},
    {"write_after_free", write_after_free},
    {"realloc_freed", realloc_freed},
    {"calloc_overflow", calloc_overflow},
    {"huge_malloc", huge_malloc},
};

int main(int argc, char** argv) {
    size_t count = sizeof kProbes / sizeof kProbes[0];
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (size_t i = 0; i < count; ++i) puts(kProbes[i].name);
        return 0;
    }
    for (size_t i = 0; argc == 2 && i < count; ++i) {
        if (strcmp(argv[1], kProbes[i].name) != 0) continue;
        int status = kProbes[i].run();
        churn();
        return status;
    }
    fprintf(stderr, "usage: probes --list | probes NAME\n");
    return 2;
}
