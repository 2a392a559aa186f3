// tests/preload/usable_cost.c: asks malloc_usable_size ROUNDS times of each of 64 live blocks
// (56 of 16 to 456 bytes, as most of redis's are, then 1 KiB to 200 KB) after a second thread has run, so a drop-in library's lock is on, as in
// redis, which asks malloc_usable_size at every zmalloc and zfree to count its memory.
// usable_cost_test.sh counts its instructions under callgrind. Usage: usable_cost ROUNDS
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

enum { kBlocks = 64 };

static void* nothing(void* arg) { return arg; }

int main(int argc, char** argv) {
    long rounds = argc > 1 ? atol(argv[1]) : 1000;
    pthread_t thread;   // glibc never sets __libc_single_threaded back: the lock stays on
    if (pthread_create(&thread, NULL, nothing, NULL) != 0 || pthread_join(thread, NULL) != 0) return 2;
    void* blocks[kBlocks];
    for (int i = 0; i < kBlocks; i++) {
        size_t size = i < 56 ? 16 + (size_t)i * 8 : i == kBlocks - 1 ? 200000 : (size_t)1024 << (i - 56);
        blocks[i] = malloc(size);
        if (blocks[i] == NULL) return 2;
    }
    size_t sum = 0;
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < kBlocks; i++) sum += malloc_usable_size(blocks[i]);
    for (int i = 0; i < kBlocks; i++) free(blocks[i]);
    printf("%zu\n", sum / (size_t)rounds);
    return 0;
}
