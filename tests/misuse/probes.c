/* tests/misuse/probes.c: one small program per kind of heap misuse, chosen by name
 * (`probes overflow`). Each does its one wrong thing, then a little ordinary work and exits 0,
 * so "exit 0" means the misuse went unseen. The last ones check an answer instead (ENOMEM,
 * EINVAL, a zeroed calloc): they print it, or say what they got and exit 1. The allocator
 * under test is whichever malloc the process has (LD_PRELOAD); tests/misuse/misuse_test.py
 * runs every probe under every one. */
#define _GNU_SOURCE /* memalign, valloc, pvalloc, reallocarray, malloc_usable_size, barriers */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
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

/* Overflows that reach further: `reach` bytes written past a 24-byte request whose next two
 * neighbours (b[11], b[12]) are free, so the bytes land in the block's rounding, then in the
 * next block's header or free-list link, then deeper. Then the block is freed and the class
 * allocated again, so the damaged neighbour is handed out and its link followed. Seven other
 * blocks of the class were freed first, as a program would: they fill glibc's tcache, so glibc
 * frees b[10] into a fast bin and checks the next chunk's size there, every run (its tcache
 * checks only the alignment of a link, which a random overwrite passes once in 16 runs under
 * ASLR, and then glibc dies of SIGSEGV). */
static int overflow_reaching(size_t reach) {
    char* b[64];
    for (int i = 0; i < 64; ++i) b[i] = malloc(24);
    sink = b;
    for (int i = 40; i < 47; ++i) free(b[i]);
    free(b[12]);
    free(b[11]);
    memset(b[10] + 24, 'A', reach);
    free(b[10]);
    for (int i = 0; i < 200; ++i) sink = malloc(24);
    return 0;
}
static int overflow_8(void) { return overflow_reaching(8); }
static int overflow_16(void) { return overflow_reaching(16); }
static int overflow_64(void) { return overflow_reaching(64); }

/* 16 bytes past what malloc_usable_size promises, at the end of a large block (100,000 bytes:
 * below glibc's mmap threshold, a stage 1 block in stages 1 and 2, a large page in 3 and 4)
 * with a live large neighbour allocated after it. */
static int overflow_large(void) {
    char* p = malloc(100000);
    char* q = malloc(100000);
    sink = q;
    memset(p + malloc_usable_size(p), 'A', 16);
    free(p);
    free(q);
    return 0;
}

/* A large block freed twice: 1 MiB (mapped on its own by glibc, a large page in stages 3 and
 * 4), then 100,000 bytes (in the heap for glibc and stages 1 and 2). Each has a live block
 * allocated after it, which keeps it away from the top of a heap that may shrink. */
static int double_free_huge(void) {
    char* p = malloc(1 << 20);
    char* q = malloc(24); /* keeps p away from the top of a heap, which may shrink */
    sink = q;
    free(p);
    free(p);
    return 0;
}

static int double_free_large(void) {
    char* p = malloc(100000);
    char* q = malloc(100000);
    sink = q;
    free(p);
    free(p);
    return 0;
}

/* A block aligned to 1 MiB (past every stage's ordinary alignment) freed twice. */
static int double_free_aligned(void) {
    char* p = memalign(1 << 20, 100);
    char* q = memalign(1 << 20, 100); /* keeps p's region of the heap in use */
    sink = q;
    free(p);
    free(p);
    return 0;
}

/* realloc moved the block, and the program frees the pointer it had before: a double free of
 * the old block, which realloc already freed. */
static int free_after_realloc(void) {
    char* p = malloc(24);
    char* neighbour = malloc(24); /* so that p cannot grow in place */
    sink = neighbour;
    char* q = realloc(p, 100000);
    sink = q;
    if (q == p) return 3; /* did not move: the probe proves nothing */
    free(p);
    free(q);
    return 0;
}

static int realloc_interior(void) { /* realloc of a pointer 16 bytes into a 64-byte block */
    char* p = malloc(64);
    sink = p;
    sink = realloc(p + 16, 200);
    return 0;
}

/* 8 bytes past a 24-byte block, then realloc grows it: an allocator that grows in place reads
 * the next block's header, which the overflow reached in glibc and stage 1. */
static int realloc_after_overflow(void) {
    char* b[8];
    for (int i = 0; i < 8; ++i) b[i] = malloc(24);
    sink = b;
    free(b[4]);
    memset(b[3] + 24, 'A', 8);
    sink = realloc(b[3], 40);
    return 0;
}

/* A pointer into the middle of large blocks: 64 KiB into a 1 MiB one, and 5 MiB into a
 * 16 MiB one (past a 4 MiB boundary, where a stage that finds a block's segment by rounding
 * the address down finds the program's own bytes; they hold 'A'). */
static int interior_free_huge(void) {
    char* p = malloc(1 << 20);
    sink = p;
    free(p + 65536);
    return 0;
}

static int interior_free_far(void) {
    size_t size = (size_t)16 << 20;
    char* p = malloc(size);
    sink = p;
    memset(p, 'A', size);
    free(p + ((size_t)5 << 20));
    return 0;
}

static int free_stack(void) {
    _Alignas(64) char local[256] = {0}; /* zeroed: what glibc reads as a header is the same every run */
    sink = local;
    free(local + 64);
    return 0;
}

/* malloc_usable_size asked about a block that is no longer the program's, and about memory
 * no malloc handed out. */
static int usable_size_freed(void) {
    char* p = malloc(24);
    sink = p;
    free(p);
    sink = (void*)malloc_usable_size(p);
    return 0;
}

static int usable_size_foreign(void) {
    static _Alignas(64) char global[256];
    sink = global;
    sink = (void*)malloc_usable_size(global + 64);
    return 0;
}

/* The classic free-list poisoning attack: a write after free replaces a freed block's link
 * with the address of the attacker's target (a static array that also carries stage 3's freed
 * mark, a public constant, in its second and third words), and the malloc after the one that
 * hands the block out again returns the target: the program then writes where the attacker
 * chose. Exit 4 says it did.
 * glibc mangles its links with the link's own address >> 12 (safe linking) and requires the
 * result to be 16-byte aligned, so a raw address passes its check when that nibble happens to
 * be 0: in that case the probe writes the target + 8, which the check refuses every run. */
static int poison_free_list(void) {
    static _Alignas(64) uint64_t target[8] = {0, 0xffffffffdeadf4eeu, 0xffffffffdeadf4eeu};
    char* a = malloc(24);
    char* gap = malloc(24); /* keeps a and p apart: no merging */
    char* p = malloc(24);
    char* q = malloc(24);
    char* c = malloc(24);
    sink = gap;
    sink = q;
    free(a); /* so that the list holds a block after p: its address is the one overwritten */
    free(p);
    free(c); /* and one before it: p is not the first block a list hands out after a refill */
    uintptr_t forged = (uintptr_t)target;
    if ((((uintptr_t)p >> 12) & 15) == 0) forged += 8;
    memcpy(p, &forged, sizeof forged);
    for (int i = 0; i < 5000; ++i) { /* until p comes back (first, in most allocators) */
        char* got = malloc(24);
        if (got != p) continue;
        char* next = malloc(24);
        if ((uintptr_t)next - (uintptr_t)target < sizeof target) {
            fprintf(stderr, "malloc returned %p, the forged address\n", (void*)next);
            return 4;
        }
        return 0;
    }
    return 0;
}

/* A large block (100,000 bytes, between two live ones) misused like a small one: its first 16
 * bytes written after free, then large blocks allocated again; the byte before it written. */
static int write_after_free_large(void) {
    char* before = malloc(100000);
    char* p = malloc(100000);
    char* after = malloc(100000);
    sink = before;
    sink = after;
    free(p);
    memset(p, 'A', 16);
    for (int i = 0; i < 4; ++i) sink = malloc(100000);
    return 0;
}

static int underflow_large(void) {
    char* before = malloc(100000);
    char* p = malloc(100000);
    sink = before;
    p[-1] = 'A';
    free(p);
    return 0;
}

/* A double free across threads: the block's owner frees it, then another thread frees it
 * again; and the other order, another thread first. The thread exists before the first free
 * (pthread_create allocates, and could be handed the freed block), and waits at a barrier for
 * its turn. */
static pthread_barrier_t turn;

static void* free_at_its_turn(void* p) {
    pthread_barrier_wait(&turn);
    free(p);
    return NULL;
}

static pthread_t thread_to_free(void* p) {
    pthread_t thread;
    if (pthread_barrier_init(&turn, NULL, 2) != 0 || pthread_create(&thread, NULL, free_at_its_turn, p) != 0) {
        fprintf(stderr, "cannot run a thread\n");
        exit(3);
    }
    return thread;
}

static int double_free_remote(void) {
    char* p = malloc(24);
    sink = p;
    pthread_t thread = thread_to_free(p);
    free(p);
    pthread_barrier_wait(&turn);
    pthread_join(thread, NULL);
    return 0;
}

/* The same when the page holds other live blocks of its owner, so that the thread that frees
 * remotely cannot tell from the page alone; then the owner allocates from the class again. */
static int double_free_remote_busy(void) {
    char* live[16];
    for (int i = 0; i < 16; ++i) live[i] = malloc(24);
    sink = live;
    char* p = live[8];
    pthread_t thread = thread_to_free(p);
    free(p);
    pthread_barrier_wait(&turn);
    pthread_join(thread, NULL);
    for (int i = 0; i < 5000; ++i) sink = malloc(24);
    return 0;
}

static int double_free_remote_first(void) {
    char* p = malloc(24);
    sink = p;
    pthread_t thread = thread_to_free(p);
    pthread_barrier_wait(&turn);
    pthread_join(thread, NULL);
    free(p);
    return 0;
}

/* The rest are not misuse: each checks an answer that C, POSIX or glibc fixes and prints it
 * (the table's cell), or says what it got instead and exits 1. Where they leave a choice
 * (realloc(p, 0), aligned_alloc with an odd alignment), the probe prints the choice made. */

/* A calloc'd block whose bytes are not all zero: says which, and returns 1. */
static int not_zeroed(const unsigned char* c, size_t count, size_t size) {
    for (size_t k = 0; k < count * size; ++k)
        if (c[k] != 0) {
            fprintf(stderr, "calloc(%zu, %zu) = %p: byte %zu is 0x%02x, not 0\n", count, size, (void*)c, k, c[k]);
            return 1;
        }
    return 0;
}

/* Memory freed dirty and handed out again by calloc must read zero: blocks recycled at every
 * size the stages treat differently (small, medium, large, huge, aligned), and pages emptied
 * and formatted again for another size (8 MiB of 48-byte blocks, then of 1000-byte, 20,000-
 * and 100,000-byte ones, each calloc'd in the memory the previous size left dirty). */
static int calloc_recycled(void) {
    static const size_t sizes[] = {24, 200, 1000, 5000, 20000, 100000, 600000, 3 << 20, 9 << 20};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
        size_t n = sizes[s];
        for (int round = 0; round < 3; ++round) {
            unsigned char* dirty[4];
            for (int i = 0; i < 4; ++i) {
                dirty[i] = round == 2 ? memalign(4096, n) : malloc(n);
                memset(dirty[i], 0xab, n);
            }
            for (int i = 0; i < 4; ++i) free(dirty[i]);
            for (int i = 0; i < 4; ++i) {
                dirty[i] = calloc(1, n);
                if (not_zeroed(dirty[i], 1, n)) return 1;
            }
            for (int i = 0; i < 4; ++i) free(dirty[i]);
        }
    }
    static const size_t classes[] = {48, 1000, 20000, 100000, 48};
    static unsigned char* blocks[(8 << 20) / 48];
    for (size_t c = 0; c + 1 < sizeof classes / sizeof classes[0]; ++c) {
        size_t count = (8 << 20) / classes[c];
        for (size_t i = 0; i < count; ++i) {
            blocks[i] = malloc(classes[c]);
            memset(blocks[i], 0xab, classes[c]);
        }
        for (size_t i = 0; i < count; ++i) free(blocks[i]);
        size_t size = classes[c + 1], again = (8 << 20) / size;
        for (size_t i = 0; i < again; ++i) {
            blocks[i] = calloc(size / 8, 8);
            if (not_zeroed(blocks[i], size / 8, 8)) return 1;
        }
        for (size_t i = 0; i < again; ++i) free(blocks[i]);
    }
    puts("zeroed");
    return 0;
}

/* realloc(p, 0): glibc frees p and returns NULL; the contract (contract/allocator.h) returns
 * a unique zero-size block, as malloc(0) does. Either way p is gone and errno stays. */
static int realloc_zero(void) {
    char* p = malloc(24);
    sink = p;
    errno = 0;
    char* q = realloc(p, 0);
    int saved = errno;
    if (saved != 0) {
        fprintf(stderr, "realloc(p, 0) returned %p, errno %d\n", (void*)q, saved);
        return 1;
    }
    puts(q == NULL ? "NULL" : "a block");
    free(q);
    return 0;
}

/* posix_memalign returns EINVAL (errno untouched) unless the alignment is a power of two and
 * a multiple of sizeof(void*). */
static int posix_memalign_invalid(void) {
    static const size_t bad[] = {0, 4, 24, 48, 100, 4097};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        void* p = sink;
        errno = 0;
        int r = posix_memalign(&p, bad[i], 64);
        if (r != EINVAL || errno != 0) {
            fprintf(stderr, "posix_memalign(&p, %zu, 64) returned %d, errno %d\n", bad[i], r, errno);
            return 1;
        }
    }
    puts("EINVAL");
    return 0;
}

/* aligned_alloc with a size that is not a multiple of the alignment: C17 (DR 460) and glibc
 * accept it. */
static int aligned_alloc_odd_size(void) {
    static const size_t align[] = {16, 64, 4096, 65536};
    for (size_t i = 0; i < sizeof align / sizeof align[0]; ++i) {
        errno = 0;
        char* p = aligned_alloc(align[i], align[i] + 1);
        if (p == NULL || (uintptr_t)p % align[i] != 0 || malloc_usable_size(p) < align[i] + 1) {
            fprintf(stderr, "aligned_alloc(%zu, %zu) returned %p, errno %d\n", align[i], align[i] + 1, (void*)p, errno);
            return 1;
        }
        memset(p, 0, align[i] + 1);
        free(p);
    }
    puts("a block");
    return 0;
}

/* memalign with alignment 0 (glibc: as malloc), with an alignment above 2^63, which no power
 * of two rounds up (glibc: EINVAL), and with 2^63, a power of two too large to serve (ENOMEM). */
static int memalign_zero(void) {
    char* p = memalign(0, 100);
    if (p == NULL || (uintptr_t)p % 16 != 0) {
        fprintf(stderr, "memalign(0, 100) returned %p, errno %d\n", (void*)p, errno);
        return 1;
    }
    free(p);
    puts("a block");
    return 0;
}

/* malloc(0): a unique block the program may free (C: NULL or a unique pointer; glibc and the
 * contract give a block). */
static int malloc_zero(void) {
    char* p = malloc(0);
    char* q = malloc(0);
    if (p == NULL || q == NULL || p == q) {
        fprintf(stderr, "malloc(0) returned %p and %p\n", (void*)p, (void*)q);
        return 1;
    }
    free(p);
    free(q);
    puts("a block");
    return 0;
}

/* reallocarray whose product overflows: NULL with ENOMEM, and the block untouched. */
static int reallocarray_overflow(void) {
    char* p = malloc(24);
    memset(p, 'x', 24);
    errno = 0;
    char* q = reallocarray(p, SIZE_MAX / 2, 4);
    if (q != NULL || errno != ENOMEM || p[23] != 'x' || malloc_usable_size(p) < 24) {
        fprintf(stderr, "reallocarray(p, SIZE_MAX / 2, 4) returned %p, errno %d\n", (void*)q, errno);
        return 1;
    }
    free(p);
    puts("ENOMEM");
    return 0;
}

/* valloc and pvalloc: page-aligned blocks; pvalloc rounds the size up to whole pages (and
 * pvalloc(0) is a block too). */
static int valloc_pvalloc(void) {
    size_t page = 4096;
    char* v = valloc(100);
    char* w = pvalloc(100);
    char* z = pvalloc(0);
    if (v == NULL || w == NULL || z == NULL || (uintptr_t)v % page || (uintptr_t)w % page || (uintptr_t)z % page ||
        malloc_usable_size(w) < page) {
        fprintf(stderr, "valloc(100) %p, pvalloc(100) %p (%zu usable), pvalloc(0) %p\n", (void*)v, (void*)w,
                w ? malloc_usable_size(w) : 0, (void*)z);
        return 1;
    }
    memset(w, 0, page);
    free(v);
    free(w);
    free(z);
    puts("a page");
    return 0;
}

/* aligned_alloc with an alignment that is not a power of two: C17 lets it fail (NULL); glibc
 * 2.36 rounds it up as memalign does (2.38 fails with EINVAL); prints which. */
static int aligned_alloc_not_power(void) {
    errno = 0;
    char* p = aligned_alloc(24, 48);
    if (p == NULL) {
        puts(errno == EINVAL ? "EINVAL" : "NULL, other errno");
        return 0;
    }
    int aligned = (uintptr_t)p % 32 == 0;
    free(p);
    puts(aligned ? "a block" : "a block, misaligned");
    return 0;
}

/* A call that must fail: NULL with errno `expected` (set by the call, errno was 0 before). */
static int null_with(int expected, const char* expected_name, void* p, const char* call) {
    int got = errno;
    if (p != NULL || got != expected) {
        fprintf(stderr, "%s returned %p, errno %d\n", call, p, got);
        return 1;
    }
    puts(expected_name);
    return 0;
}

static int memalign_unroundable(void) {
    errno = 0;
    return null_with(EINVAL, "EINVAL", memalign(SIZE_MAX / 2 + 2, 100), "memalign(SIZE_MAX / 2 + 2, 100)");
}

static int memalign_huge(void) {
    errno = 0;
    return null_with(ENOMEM, "ENOMEM", memalign(SIZE_MAX / 2 + 1, 100), "memalign(SIZE_MAX / 2 + 1, 100)");
}

/* C says the answer is NULL with errno ENOMEM, nothing else. */
static int calloc_overflow(void) {
    errno = 0;
    return null_with(ENOMEM, "ENOMEM", calloc(SIZE_MAX / 2, 4), "calloc(SIZE_MAX / 2, 4)");
}

static int huge_malloc(void) {
    errno = 0;
    return null_with(ENOMEM, "ENOMEM", malloc(SIZE_MAX - 64), "malloc(SIZE_MAX - 64)");
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
    {"poison_free_list", poison_free_list},
    {"calloc_overflow", calloc_overflow},
    {"huge_malloc", huge_malloc},
    {"overflow_8", overflow_8},
    {"overflow_16", overflow_16},
    {"overflow_64", overflow_64},
    {"overflow_large", overflow_large},
    {"double_free_large", double_free_large},
    {"double_free_huge", double_free_huge},
    {"double_free_aligned", double_free_aligned},
    {"free_after_realloc", free_after_realloc},
    {"realloc_interior", realloc_interior},
    {"realloc_after_overflow", realloc_after_overflow},
    {"interior_free_huge", interior_free_huge},
    {"interior_free_far", interior_free_far},
    {"free_stack", free_stack},
    {"write_after_free_large", write_after_free_large},
    {"underflow_large", underflow_large},
    {"double_free_remote", double_free_remote},
    {"double_free_remote_busy", double_free_remote_busy},
    {"double_free_remote_first", double_free_remote_first},
    {"usable_size_freed", usable_size_freed},
    {"usable_size_foreign", usable_size_foreign},
    {"calloc_recycled", calloc_recycled},
    {"realloc_zero", realloc_zero},
    {"posix_memalign_invalid", posix_memalign_invalid},
    {"aligned_alloc_odd_size", aligned_alloc_odd_size},
    {"memalign_zero", memalign_zero},
    {"memalign_unroundable", memalign_unroundable},
    {"memalign_huge", memalign_huge},
    {"malloc_zero", malloc_zero},
    {"reallocarray_overflow", reallocarray_overflow},
    {"valloc_pvalloc", valloc_pvalloc},
    {"aligned_alloc_not_power", aligned_alloc_not_power},
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
