// tests/preload/aligned.cc: proves the preloaded stage keeps the C contract of the whole family
// beyond malloc/free: posix_memalign, memalign, aligned_alloc, valloc, pvalloc, reallocarray,
// calloc, malloc_usable_size. It finds the stage through the library's edu_preload_stage
// export (so it refuses to pass unpreloaded), checks every result, and prints OK last.
// Alignments go up to 64 MiB on every stage.
// Built with -fno-builtin so the compiler cannot fold or drop the calls under test.
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include "contract/allocator.h"

namespace {

int g_failures = 0;

// Sizes the compiler must not see: it rightly warns about requests it can prove impossible.
volatile std::size_t g_half_max = SIZE_MAX / 2;
volatile std::size_t g_max = SIZE_MAX;

void expect(bool ok, const char* what) {
    if (!ok) {
        std::printf("FAILED: %s\n", what);
        ++g_failures;
    }
}

bool aligned_to(const void* p, std::size_t alignment) {
    return p != nullptr && reinterpret_cast<uintptr_t>(p) % alignment == 0;
}

// Writes every usable byte, so a usable size that lies shows up as heap damage.
void touch(void* p, std::size_t size) { std::memset(p, 0xa5, size); }

void posix_memalign_serves_every_power_of_two(std::size_t max_alignment) {
    for (std::size_t alignment = sizeof(void*); alignment <= max_alignment; alignment <<= 1) {
        const std::size_t sizes[] = {0, 1, alignment - 1, alignment + 1, 5000};
        for (std::size_t size : sizes) {
            void* p = nullptr;
            int rc = posix_memalign(&p, alignment, size);
            expect(rc == 0 && aligned_to(p, alignment), "posix_memalign: aligned block");
            if (p == nullptr) continue;
            expect(malloc_usable_size(p) >= size, "posix_memalign: usable size covers the request");
            touch(p, malloc_usable_size(p));
            free(p);
        }
    }
}

void posix_memalign_rejects_bad_alignments(std::size_t max_alignment) {
    const std::size_t bad_alignments[] = {0, 1, 4, 24, 3000};
    for (std::size_t bad : bad_alignments) {
        void* p = reinterpret_cast<void*>(0x1234);
        errno = 77;
        expect(posix_memalign(&p, bad, 16) == EINVAL, "posix_memalign: EINVAL for a bad alignment");
        expect(errno == 77, "posix_memalign: errno untouched");
        expect(p == reinterpret_cast<void*>(0x1234), "posix_memalign: *memptr untouched on error");
    }
    void* p = nullptr;
    errno = 77;
    expect(posix_memalign(&p, max_alignment * 2, 16) == ENOMEM, "posix_memalign: ENOMEM above the stage's limit");
    expect(errno == 77, "posix_memalign: errno untouched on ENOMEM");
}

void memalign_and_aligned_alloc(std::size_t max_alignment) {
    void* p = memalign(64, 100);
    expect(aligned_to(p, 64) && malloc_usable_size(p) >= 100, "memalign(64, 100)");
    free(p);
    p = memalign(48, 10);  // glibc rounds a non-power of two up: 64
    expect(aligned_to(p, 64), "memalign(48) rounds the alignment up to 64");
    free(p);
    p = aligned_alloc(4096, 3 * 4096);
    expect(aligned_to(p, 4096) && malloc_usable_size(p) >= 3 * 4096, "aligned_alloc(4096, 12 KiB)");
    if (p != nullptr) touch(p, malloc_usable_size(p));
    free(p);
    p = aligned_alloc(max_alignment, 1);
    expect(aligned_to(p, max_alignment), "aligned_alloc at the stage's max_alignment");
    free(p);
    errno = 0;
    expect(aligned_alloc(3, 10) == nullptr && errno == EINVAL, "aligned_alloc(3): NULL, EINVAL");
    errno = 0;
    expect(aligned_alloc(max_alignment * 2, 10) == nullptr && errno == ENOMEM,
           "aligned_alloc above the stage's limit: NULL, ENOMEM");
    errno = 0;
    expect(memalign(max_alignment * 2, 10) == nullptr && errno == ENOMEM, "memalign above the limit: NULL, ENOMEM");
}

// Every stage serves alignments up to at least 64 MiB, as glibc and mimalloc do. For 4, 16
// and 64 MiB, through each of the three calls: an aligned block whose ends can be written, two
// live at once, a realloc that grows one and keeps its bytes, one that shrinks the other, and
// the frees.
void large_alignments(std::size_t max_alignment) {
    expect(max_alignment >= (std::size_t{64} << 20), "max_alignment is at least 64 MiB");
    const std::size_t MiB = std::size_t{1} << 20;
    for (std::size_t alignment : {4 * MiB, 16 * MiB, 64 * MiB}) {
        if (alignment > max_alignment) break;
        const std::size_t size = alignment / 2 + 100;
        void* p = nullptr;
        expect(posix_memalign(&p, alignment, size) == 0 && aligned_to(p, alignment), "posix_memalign, 4-64 MiB");
        void* q = aligned_alloc(alignment, 3 * alignment);
        expect(aligned_to(q, alignment), "aligned_alloc, 4-64 MiB");
        void* r = memalign(alignment, 1);
        expect(aligned_to(r, alignment), "memalign, 4-64 MiB");
        if (p == nullptr || q == nullptr || r == nullptr) return;
        expect(malloc_usable_size(p) >= size && malloc_usable_size(q) >= 3 * alignment && malloc_usable_size(r) >= 1,
               "usable size of an over-aligned block covers the request");
        std::memset(p, 0x5a, size);
        static_cast<char*>(q)[3 * alignment - 1] = 1;
        free(r);
        void* grown = realloc(p, 2 * size);
        expect(grown != nullptr && static_cast<unsigned char*>(grown)[0] == 0x5a &&
                   static_cast<unsigned char*>(grown)[size - 1] == 0x5a,
               "realloc of an over-aligned block keeps its bytes");
        void* shrunk = realloc(q, 64);
        expect(shrunk != nullptr, "realloc shrinks an over-aligned block");
        free(grown);
        free(shrunk);
    }
}

void page_allocations() {
    std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* p = valloc(1);
    expect(aligned_to(p, page), "valloc: page aligned");
    free(p);
    p = pvalloc(1);
    expect(aligned_to(p, page) && malloc_usable_size(p) >= page, "pvalloc(1): one whole page");
    if (p != nullptr) touch(p, page);
    free(p);
    p = pvalloc(page + 1);
    expect(aligned_to(p, page) && malloc_usable_size(p) >= 2 * page, "pvalloc(page + 1): two whole pages");
    if (p != nullptr) touch(p, 2 * page);
    free(p);
    errno = 0;
    expect(pvalloc(g_max - 10) == nullptr && errno == ENOMEM, "pvalloc near SIZE_MAX: NULL, ENOMEM");
}

// The failing reallocarray leaves `p` valid, which the compiler cannot know.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuse-after-free"
void reallocarray_checks_the_product() {
    auto* p = static_cast<unsigned char*>(reallocarray(nullptr, 10, 8));
    expect(p != nullptr && malloc_usable_size(p) >= 80, "reallocarray(NULL, 10, 8) allocates 80 bytes");
    if (p == nullptr) return;
    for (int i = 0; i < 80; ++i) p[i] = static_cast<unsigned char>(i);
    errno = 0;
    expect(reallocarray(p, g_half_max, 3) == nullptr && errno == ENOMEM, "reallocarray overflow: NULL, ENOMEM");
    auto* q = static_cast<unsigned char*>(reallocarray(p, 1000, 8));
    if (q == nullptr) {
        expect(false, "reallocarray grows the block");
        free(p);
        return;
    }
    bool kept = true;
    for (int i = 0; kept && i < 80; ++i) kept = q[i] == i;
    expect(kept, "reallocarray keeps the contents (and the failed call left them alone)");
    free(q);
}
#pragma GCC diagnostic pop

void calloc_and_malloc_edges() {
    expect(malloc_usable_size(nullptr) == 0, "malloc_usable_size(NULL) is 0");
    void* dirty = malloc(4000);
    if (dirty != nullptr) touch(dirty, 4000);
    free(dirty);
    auto* z = static_cast<unsigned char*>(calloc(1000, 4));
    bool zero = z != nullptr;
    for (int i = 0; zero && i < 4000; ++i) zero = z[i] == 0;
    expect(zero, "calloc returns zeroed memory, even reusing a dirty block");
    free(z);
    errno = 0;
    expect(calloc(g_half_max, 3) == nullptr && errno == ENOMEM, "calloc overflow: NULL, ENOMEM");
    errno = 0;
    expect(malloc(g_max) == nullptr && errno == ENOMEM, "malloc(SIZE_MAX): NULL, ENOMEM");
    void* a = malloc(0);
    void* b = malloc(0);
    expect(a != nullptr && b != nullptr && a != b, "malloc(0) gives distinct blocks");
    free(a);
    free(b);
    free(nullptr);
}

}  // namespace

int main() {
    using StageFn = const edu::Stage* (*)();
    auto find = reinterpret_cast<StageFn>(dlsym(RTLD_DEFAULT, "edu_preload_stage"));
    if (find == nullptr) {
        std::printf("not running under an edu-alloc preload library (LD_PRELOAD)\n");
        return 1;
    }
    const edu::Stage& stage = *find();
    std::printf("stage %d: %s, max_alignment %zu\n", stage.number, stage.name, stage.max_alignment);

    posix_memalign_serves_every_power_of_two(stage.max_alignment);
    posix_memalign_rejects_bad_alignments(stage.max_alignment);
    memalign_and_aligned_alloc(stage.max_alignment);
    large_alignments(stage.max_alignment);
    page_allocations();
    reallocarray_checks_the_product();
    calloc_and_malloc_edges();

    if (g_failures != 0) {
        std::printf("%d checks failed\n", g_failures);
        return 1;
    }
    std::printf("OK\n");
    return 0;
}
