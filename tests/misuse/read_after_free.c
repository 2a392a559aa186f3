/* tests/misuse/read_after_free.c: reads a byte of a block after freeing it, then exits 0.
 * Under valgrind's memcheck with a stage preloaded, memcheck must report the invalid read
 * (memcheck_test.sh): it can only if the stage's blocks are announced to it. */
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    char* volatile p = malloc(40);
    if (p == NULL) return 1;
    p[0] = 7;
    free(p);
    char c = p[3]; /* the misuse */
    printf("read %d after free\n", c == 7);
    return 0;
}
