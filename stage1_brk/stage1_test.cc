// stage1_brk/stage1_test.cc: stage 1's own behaviour, one mechanism per test case.
// Most cases drive the NASM core on a simulated break (reserved_break.h), so addresses are exact
// and a failing sbrk or a foreign sbrk user can be staged; the last cases use the real break
// and the descriptor. The shared battery (tests/) covers the contract; this covers the design.
#include <doctest/doctest.h>

#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "stage1_brk/core.h"
#include "stage1_brk/reserved_break.h"
#include "stage1_brk/stage1.h"
#include "tests/support.h"

namespace edu::stage1 {
namespace {

ReservedBreak* g_break = nullptr;
void* isolated_sbrk(intptr_t increment) { return g_break->sbrk(increment); }

struct Row {
    uint64_t kind, address, size;
};

std::vector<Row> walk() {
    std::vector<Row> rows;
    s1_walk(
        [](void* ctx, uint64_t kind, uint64_t address, uint64_t size) {
            static_cast<std::vector<Row>*>(ctx)->push_back({kind, address, size});
            return 1;
        },
        &rows);
    return rows;
}

std::vector<Row> blocks() {  // used and free blocks only
    std::vector<Row> rows;
    for (const Row& r : walk())
        if (r.kind == S1_KIND_USED || r.kind == S1_KIND_FREE) rows.push_back(r);
    return rows;
}

uint64_t header(const void* p) { return reinterpret_cast<uint64_t>(p) - 8; }

uint64_t check() {
    S1Report r;
    return s1_check(&r);
}

// Each test gets a fresh heap on a fresh simulated break with the default tunables.
struct IsolatedHeap {
    ReservedBreak brk;
    IsolatedHeap() {
        g_break = &brk;
        s1_reset();
        s1_sbrk_hook = &isolated_sbrk;
        s1_set_fit(S1_FIT_FIRST);
        s1_grow_margin = 1024 * 1024;
        s1_trim_threshold = 128 * 1024;
        s1_trim_fixed = 1;   // the threshold alone, as the trim option sets it; [S1.43]'s cases clear it
        s1_purge_floor = 4 << 20;
    }
    ~IsolatedHeap() {
        s1_sbrk_hook = nullptr;
        s1_reset();
    }
};

TEST_CASE_FIXTURE(IsolatedHeap, "the first block follows the region's end word and ends at the epilogue fence") {
    void* p = s1_malloc(1);
    REQUIRE(p != nullptr);
    std::vector<Row> rows = walk();
    REQUIRE(rows.size() == 3);  // region, used, epilogue: an empty heap has no margin
    CHECK(rows[0].kind == S1_KIND_REGION);
    CHECK(rows[1].kind == S1_KIND_USED);
    CHECK(rows[1].address == rows[0].address + kS1RegionHeader);  // no prologue [S1.37]
    CHECK(rows[1].address == header(p));
    CHECK(rows[1].size == kS1MinBlock);
    CHECK(rows[2].kind == S1_KIND_FENCE);
    CHECK(rows[0].size == kS1RegionHeader + kS1MinBlock + 8);  // end word, block, epilogue
    CHECK(rows[0].size == brk.used());  // the region covers exactly what sbrk gave
    CHECK(s1_footprint == brk.used());
    CHECK(s1_brk_calls == 1);
}

// Room at the end of the heap for the cases that want a free rest behind their blocks.
void make_room() { REQUIRE(s1_free(s1_malloc(4000)) == S1_OK); }

TEST_CASE_FIXTURE(IsolatedHeap, "free coalesces with both neighbours") {
    make_room();
    void* a = s1_malloc(100);
    void* b = s1_malloc(200);
    void* c = s1_malloc(300);
    void* guard = s1_malloc(16);  // keeps c away from the trailing free block
    REQUIRE(s1_free(a) == S1_OK);
    REQUIRE(s1_free(c) == S1_OK);
    REQUIRE(blocks().size() == 5);  // free a, used b, free c, guard, rest
    REQUIRE(s1_free(b) == S1_OK);
    std::vector<Row> rows = blocks();
    REQUIRE(rows.size() == 3);  // one free run a+b+c, guard, rest
    CHECK(rows[0].kind == S1_KIND_FREE);
    CHECK(rows[0].address == header(a));
    CHECK(rows[0].size == 112 + 208 + 320);  // 100, 200, 300 bytes plus a header, rounded to 16
    CHECK(check() == S1_CHECK_OK);
    CHECK(s1_free(guard) == S1_OK);
    CHECK(blocks().size() == 1);  // everything merged back into one block
}

TEST_CASE_FIXTURE(IsolatedHeap, "a remainder too small to stand alone is not split off") {
    void* a = s1_malloc(100);  // 112-byte block: a header and 104 usable bytes
    void* fence = s1_malloc(16);
    REQUIRE(s1_free(a) == S1_OK);
    void* b = s1_malloc(80);  // wants 96: the 16 left over cannot be a block
    CHECK(b == a);
    CHECK(s1_usable_size(b) == 104);
    void* c = s1_malloc(50);  // wants 80 from a fresh 128 block? no: comes from the rest
    CHECK(header(c) > header(fence));
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "first, next and best fit choose different blocks") {
    // Free blocks of 256, 96 and 320 bytes, separated by used blocks. LIFO list order after the
    // frees: 320, 96, 256, then the heap's trailing block. Each request below needs 96 bytes.
    void* big = s1_malloc(240);
    void* s1 = s1_malloc(16);
    void* small = s1_malloc(80);
    void* s2 = s1_malloc(16);
    void* mid = s1_malloc(300);
    void* s3 = s1_malloc(16);
    s1_free(big);
    s1_free(small);
    s1_free(mid);
    (void)s1, (void)s2, (void)s3;

    SUBCASE("first fit takes the first block on the list that fits") {
        s1_fit_policy = S1_FIT_FIRST;
        CHECK(s1_malloc(80) == mid);  // 320 is first
        CHECK(header(s1_malloc(80)) == header(mid) + 96);  // then what was split off it
    }
    SUBCASE("best fit takes the smallest block that fits") {
        s1_fit_policy = S1_FIT_BEST;
        CHECK(s1_malloc(80) == small);  // 96 is an exact fit
    }
    SUBCASE("next fit resumes after its last hit") {
        s1_fit_policy = S1_FIT_NEXT;
        CHECK(s1_malloc(80) == mid);    // starts at the head: 320
        CHECK(s1_malloc(80) == small);  // resumes after 320's old place: 96
    }
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "the segregated fit files blocks by size class and takes the best of a class") {
    CHECK(s1_size_class(32) == 0);  // under the default policy the class is computed...
    s1_set_fit(S1_FIT_FIRST);
    CHECK(s1_size_class(4096) == 0);  // ...with one list for the others
    s1_set_fit(S1_FIT_SEG);
    CHECK(s1_size_class(48) == 1);
    CHECK(s1_size_class(496) == 29);
    CHECK(s1_size_class(512) == 30);
    CHECK(s1_size_class(1023 & ~15) == 33);
    CHECK(s1_size_class(1024) == 34);
    CHECK(s1_size_class(1ull << 30) == kS1Classes - 1);
    // Free blocks of 688, 560 and 608 bytes, all in class 30 (512-639) but 688 (class 31),
    // laid out in address order under first fit, then refiled.
    s1_set_fit(S1_FIT_FIRST);
    void* a = s1_malloc(672);
    void* g1 = s1_malloc(16);
    void* b = s1_malloc(544);
    void* g2 = s1_malloc(16);
    void* c = s1_malloc(592);
    void* g3 = s1_malloc(16);
    s1_free(a), s1_free(b), s1_free(c);
    s1_set_fit(S1_FIT_SEG);
    CHECK(check() == S1_CHECK_OK);
    CHECK(s1_malloc(530) == b);  // asize 560: class 30's best fit, though c was pushed last
    CHECK(s1_malloc(580) == c);  // asize 608: c, the only fit left in class 30
    // asize 624: class 30 is empty now, and the nearest class above holds a (688). A large
    // block goes at the back [S1.32]: the used part is a's last 624 bytes.
    void* d = s1_malloc(608);
    CHECK(header(d) == header(a) + 688 - 624);
    CHECK(check() == S1_CHECK_OK);
    (void)g1, (void)g2, (void)g3;
}

TEST_CASE_FIXTURE(IsolatedHeap, "a large block leaves the wilderness at the end when little would stay in front") {
    s1_grow_margin = 0;  // exact growths: the block sizes below are the whole story
    s1_set_fit(S1_FIT_SEG);
    void* a = s1_malloc(16);
    REQUIRE(s1_free(s1_malloc(1016)) == S1_OK);  // the wilderness: 1,024 bytes after a
    uint64_t wild = header(a) + kS1MinBlock;
    REQUIRE(blocks().back().kind == S1_KIND_FREE);
    REQUIRE(blocks().back().size == 1024);
    // asize 608 would leave 416 bytes in front of it: at the front instead [S1.32], so the
    // rest stays the heap's trailing free block.
    void* p = s1_malloc(600);
    CHECK(header(p) == wild);
    CHECK(blocks().back().kind == S1_KIND_FREE);
    CHECK(blocks().back().size == 1024 - 608);
    REQUIRE(s1_free(p) == S1_OK);
    // asize 320 leaves 704 in front, more than itself: at the back, as in any other hole.
    void* q = s1_malloc(300);
    CHECK(header(q) == wild + 1024 - 320);
    CHECK(blocks().back().kind == S1_KIND_USED);
    CHECK(check() == S1_CHECK_OK);
}

// [S1.44] In a hole, a large block takes the whole hole when what would stay is under a 16th of
// it: no sliver for a small block to take and pin the hole with. The wilderness keeps its rest.
TEST_CASE_FIXTURE(IsolatedHeap, "a large block takes its whole hole when under a 16th of it would stay") {
    s1_grow_margin = 0;  // exact growths: the block sizes below are the whole story
    void* a = s1_malloc(1016);  // laid out under first fit: a (1,024), guard, b (1,152), guard
    void* g1 = s1_malloc(16);
    void* b = s1_malloc(1144);
    void* g2 = s1_malloc(16);
    REQUIRE(s1_free(s1_malloc(1016)) == S1_OK);  // the wilderness: 1,024 bytes
    REQUIRE(s1_free(a) == S1_OK);
    REQUIRE(s1_free(b) == S1_OK);
    s1_set_fit(S1_FIT_SEG);
    // asize 976 in a's 1,024: 48 would stay, under 976 / 16 = 61, so the block is all of a
    void* p = s1_malloc(968);
    CHECK(p == a);
    CHECK(s1_usable_size(p) == 1024 - kS1Overhead);
    // asize 1,072 in b's 1,152: 80 would stay, at least 1,072 / 16 = 67: split, at the back
    void* q = s1_malloc(1060);
    CHECK(header(q) == header(b) + 80);
    // asize 976 again: only the wilderness fits, and keeps its 48 at the heap's end [S1.32]
    void* r = s1_malloc(968);
    CHECK(header(r) > header(g2));
    CHECK(blocks().back().kind == S1_KIND_FREE);
    CHECK(blocks().back().size == 48);
    CHECK(check() == S1_CHECK_OK);
    (void)g1;
}

TEST_CASE_FIXTURE(IsolatedHeap, "the segregated fit uses the wilderness only when nothing else fits") {
    s1_grow_margin = 0;  // exact growths: the block sizes below are the whole story
    void* hole = s1_malloc(3040);  // laid out under first fit: hole, guard, then the end
    void* guard = s1_malloc(16);
    REQUIRE(s1_free(s1_malloc(2600)) == S1_OK);  // the wilderness: about 2,620 bytes
    REQUIRE(s1_free(hole) == S1_OK);                // 3,056 bytes
    s1_set_fit(S1_FIT_SEG);
    uint64_t wilderness = blocks().back().size;
    REQUIRE(wilderness < 3056);
    REQUIRE(s1_size_class(wilderness) == s1_size_class(3056));  // one class: 2560-3071
    void* p = s1_malloc(2500);  // best fit in that class would be the wilderness: not taken
    CHECK(header(p) < header(guard));
    void* q = s1_malloc(2600);  // fits only the wilderness now
    CHECK(header(q) > header(guard));
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "switching to and from the segregated fit refiles every free block") {
    std::vector<void*> kept;
    for (int i = 0; i < 64; ++i) {
        void* p = s1_malloc(static_cast<size_t>(16 + 40 * i));
        if (i % 2) s1_free(p);
        else kept.push_back(p);
    }
    CHECK(check() == S1_CHECK_OK);
    s1_set_fit(S1_FIT_SEG);
    CHECK(check() == S1_CHECK_OK);  // each block on its class's list, the class map exact
    s1_set_fit(S1_FIT_BEST);
    CHECK(check() == S1_CHECK_OK);  // one list again
    s1_set_fit(S1_FIT_SEG);
    for (void* p : kept) CHECK(s1_free(p) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
    CHECK(blocks().size() == 1);
}

TEST_CASE_FIXTURE(IsolatedHeap, "the growth margin is a 256th of the heap, at most the option") {
    REQUIRE(s1_malloc(16) != nullptr);
    CHECK(s1_footprint == 32 + 8 + 8);  // block, end word and epilogue: no margin yet
    // [S1.38] A block for the back (S1_SPLIT_BACK bytes or more) grows the heap by exactly what
    // it lacks: nothing is left in front of it, nor behind.
    REQUIRE(s1_malloc(100000) != nullptr);
    CHECK(s1_footprint == 48 + 100016);
    CHECK(blocks().back().kind == S1_KIND_USED);
    // A small block adds the margin [S1.31]; it sits at the front of the grown block, so what
    // is left behind it is exactly the margin of that growth.
    uint64_t before = s1_footprint;
    REQUIRE(s1_malloc(16) != nullptr);
    CHECK(blocks().back().kind == S1_KIND_FREE);
    CHECK(blocks().back().size == ((before >> kS1GrowShift) & ~uint64_t{15}));  // a 256th
    // So does realloc growing the heap's last block, which may well grow again.
    void* tail = s1_malloc(1 << 20);  // takes the margin and exactly what it lacks
    REQUIRE(tail != nullptr);
    CHECK(blocks().back().kind == S1_KIND_USED);
    before = s1_footprint;
    REQUIRE(s1_realloc(tail, (1 << 20) + 1000) == tail);
    CHECK(blocks().back().kind == S1_KIND_FREE);
    CHECK(blocks().back().size == ((before >> kS1GrowShift) & ~uint64_t{15}));
    s1_grow_margin = 4096;
    REQUIRE(s1_realloc(tail, (1 << 21)) == tail);
    REQUIRE((s1_footprint >> kS1GrowShift) > 4096);
    CHECK(blocks().back().size == 4096);  // capped by the option
}

// [S1.42] Under the segregated fit, the growth for a small block adds a 32nd of the heap, not a
// 256th: the room in which [S1.32] puts small blocks at the front and large ones at the back.
// The list policies keep a 256th (they place every block at the front), and so does realloc's
// growth at the break.
TEST_CASE_FIXTURE(IsolatedHeap, "under the segregated fit a small block's growth adds a 32nd of the heap") {
    s1_set_fit(S1_FIT_SEG);
    REQUIRE(s1_malloc(100000) != nullptr);  // exact growth [S1.38]: no margin yet
    uint64_t before = s1_footprint;
    REQUIRE(s1_malloc(16) != nullptr);
    CHECK(blocks().back().kind == S1_KIND_FREE);
    CHECK(blocks().back().size == ((before >> kS1SmallGrowShift) & ~uint64_t{15}));  // a 32nd
    CHECK(s1_footprint == before + 32 + ((before >> kS1SmallGrowShift) & ~uint64_t{15}));
    // realloc growing the heap's last block keeps a 256th
    void* tail = s1_malloc(1 << 20);  // takes the margin and exactly what it lacks
    REQUIRE(tail != nullptr);
    CHECK(blocks().back().kind == S1_KIND_USED);
    before = s1_footprint;
    REQUIRE(s1_realloc(tail, (1 << 20) + 1000) == tail);
    CHECK(blocks().back().size == ((before >> kS1GrowShift) & ~uint64_t{15}));
    // the list policies keep a 256th for a small block too
    s1_set_fit(S1_FIT_BEST);
    REQUIRE(s1_malloc((1 << 20) + 4096) != nullptr);  // no hole that large: exact growth again
    before = s1_footprint;
    REQUIRE(s1_malloc(16) != nullptr);
    CHECK(blocks().back().size == ((before >> kS1GrowShift) & ~uint64_t{15}));
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "realloc grows into a following free block without moving") {
    void* a = s1_malloc(100);
    void* b = s1_malloc(500);
    void* fence = s1_malloc(16);
    std::memset(a, 0x5a, 100);
    s1_free(b);
    void* grown = s1_realloc(a, 400);
    CHECK(grown == a);
    for (int i = 0; i < 100; ++i) REQUIRE(static_cast<unsigned char*>(grown)[i] == 0x5a);
    CHECK(s1_usable_size(grown) >= 400);
    CHECK(header(fence) > header(grown) + 400);
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "realloc grows into a free predecessor, moving the payload down") {
    void* a = s1_malloc(200);
    char* b = static_cast<char*>(s1_malloc(100));
    void* fence = s1_malloc(16);
    for (int i = 0; i < 100; ++i) b[i] = static_cast<char>(i);
    REQUIRE(s1_free(a) == S1_OK);
    char* grown = static_cast<char*>(s1_realloc(b, 250));
    CHECK(grown == a);  // the run starts at the predecessor
    for (int i = 0; i < 100; ++i) REQUIRE(grown[i] == static_cast<char>(i));
    CHECK(s1_usable_size(grown) >= 250);
    CHECK(header(grown) + (s1_usable_size(grown) + kS1Overhead) <= header(fence));
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "a block grown by realloc takes exactly its size and gives the rest back") {
    void* p = s1_malloc(1000);
    void* fence = s1_malloc(10000);  // p's successor, then freed: room to grow forward
    void* guard = s1_malloc(16);
    REQUIRE(s1_free(fence) == S1_OK);
    REQUIRE(s1_realloc(p, 2000) == p);
    CHECK(s1_usable_size(p) + kS1Overhead == 2016);  // 2000 + a header, rounded: no slack
    std::vector<Row> rows = blocks();
    REQUIRE(rows.size() >= 3);  // p, the rest, guard (and perhaps the margin)
    CHECK(rows[1].kind == S1_KIND_FREE);  // the rest of the absorbed block
    CHECK(rows[1].size == 1008 + 10016 - 2016);
    CHECK(s1_realloc(p, 2009) == p);  // the next growth absorbs the rest again
    CHECK(s1_usable_size(p) + kS1Overhead == 2032);
    CHECK(s1_realloc(p, 100) == p);  // a shrink gives the tail back
    CHECK(s1_usable_size(p) < 200);
    CHECK(check() == S1_CHECK_OK);
    (void)guard;
}

TEST_CASE_FIXTURE(IsolatedHeap, "realloc shrinks in place and frees the tail") {
    void* a = s1_malloc(1000);
    void* fence = s1_malloc(16);
    (void)fence;
    CHECK(s1_realloc(a, 10) == a);
    std::vector<Row> rows = blocks();
    CHECK(rows[0].size == kS1MinBlock);
    CHECK(rows[1].kind == S1_KIND_FREE);
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "realloc at the end of the heap extends the break in place") {
    void* a = s1_malloc(16);
    void* b = s1_malloc(30000);  // takes the rest of the first growth, ends the heap
    REQUIRE(b != nullptr);
    uint64_t calls = s1_brk_calls;
    void* grown = s1_realloc(b, 200000);
    CHECK(grown == b);
    CHECK(s1_brk_calls == calls + 1);
    CHECK(check() == S1_CHECK_OK);
    (void)a;
}

TEST_CASE_FIXTURE(IsolatedHeap, "the heap gives the break back when its trailing free block passes the threshold") {
    void* small = s1_malloc(16);
    void* big = s1_malloc(1 << 20);
    uint64_t peak = s1_footprint;
    REQUIRE(peak > (1 << 20));
    s1_free(big);
    uint64_t keep = (peak >> kS1GrowShift) & ~uint64_t{15};  // the margin [S1.31] at the trim
    CHECK(s1_footprint < peak - (1 << 20) + keep + 4096);
    CHECK(s1_footprint == brk.used());
    CHECK(s1_peak_footprint == peak);
    std::vector<Row> rows = blocks();
    REQUIRE(rows.size() == 2);
    CHECK(rows[1].kind == S1_KIND_FREE);
    CHECK(rows[1].size >= keep);  // the margin is kept for the next request
    CHECK(check() == S1_CHECK_OK);
    (void)small;
}

// [S1.43] By default the trim follows large frees: a tail shorter than twice the largest block
// of 1 to 32 MiB freed so far, and than the live bytes, stays, so the next buffer of that size
// costs no sbrk (with the threshold alone, the free lowered the break and the malloc raised it
// again: two calls). A tail past either goes back: a longer one, or everything once the program
// frees the rest; and everything when the trim option fixes the threshold.
TEST_CASE_FIXTURE(IsolatedHeap, "a freed 20 MiB block's tail stays for the next buffer, and a longer tail goes back") {
    s1_trim_fixed = 0;   // the default
    constexpr uint64_t kMiB = 1 << 20;
    void* held = s1_malloc(24 * kMiB);   // live bytes below the tail
    void* big = s1_malloc(20 * kMiB);
    REQUIRE(big != nullptr);
    uint64_t calls = s1_brk_calls, footprint = s1_footprint;
    s1_free(big);
    CHECK(s1_trim_followed == 2 * (20 * kMiB + 16));   // the block: its payload and header, 16-aligned
    CHECK(s1_brk_calls == calls);    // kept: 20 MiB is less than twice 20 MiB and than 24 MiB live
    CHECK(s1_footprint == footprint);
    void* next = s1_malloc(12 * kMiB);
    CHECK(next == big);
    CHECK(s1_brk_calls == calls);    // no growth either
    CHECK(check() == S1_CHECK_OK);
    s1_free(next);
    void* huge = s1_malloc(48 * kMiB);   // over 32 MiB: glibc maps it; its free moves nothing
    REQUIRE(huge != nullptr);
    s1_free(huge);
    CHECK(s1_trim_followed == 2 * (20 * kMiB + 16));
    CHECK(s1_footprint < 24 * kMiB + 2 * kMiB);   // a 48 MiB tail passes 40 MiB: it went back, but the margin
    CHECK(check() == S1_CHECK_OK);
    s1_free(held);   // nothing live: the whole tail goes
    CHECK(s1_footprint < 2 * kMiB);
    CHECK(check() == S1_CHECK_OK);
    s1_trim_fixed = 1;   // as the trim option sets them: the threshold alone
    s1_trim_followed = 0;
    held = s1_malloc(24 * kMiB);
    big = s1_malloc(20 * kMiB);
    footprint = s1_footprint;
    s1_free(big);
    CHECK(s1_footprint < footprint - 19 * kMiB);
    CHECK(check() == S1_CHECK_OK);
    s1_free(held);
}

// [S1.36] mincore says which pages of a range are resident.
uint64_t resident_pages(uint64_t start, uint64_t end) {
    std::vector<unsigned char> pages((end - start) / 4096);
    REQUIRE(mincore(reinterpret_cast<void*>(start), end - start, pages.data()) == 0);
    uint64_t n = 0;
    for (unsigned char p : pages) n += p & 1;
    return n;
}

TEST_CASE_FIXTURE(IsolatedHeap, "the pages inside a large free block in the middle of the heap go back") {
    constexpr uint64_t kBig = 8 << 20;  // above the purge floor, and far above the live bytes
    char* big = static_cast<char*>(s1_malloc(kBig));
    void* small = s1_malloc(16);
    void* guard = s1_malloc(16);  // keeps big from ending the heap: the break cannot fall
    std::memset(big, 1, kBig);
    uint64_t start = (header(big) + 24 + 4095) & ~uint64_t{4095};
    uint64_t end = (header(big) + kBig) & ~uint64_t{4095};
    REQUIRE(resident_pages(start, end) == (end - start) / 4096);
    REQUIRE(s1_free(big) == S1_OK);
    CHECK(s1_madvise_calls == 1);
    CHECK(s1_dirty_bytes == 0);
    CHECK(resident_pages(start, end) == 0);  // dropped, though the heap still holds them
    CHECK(descriptor.single_thread->stats().os_calls[static_cast<unsigned>(OsCall::madvise)] == 1);
    REQUIRE(s1_free(small) == S1_OK);  // joins the run: 32 bytes wait, far below the floor
    CHECK(s1_madvise_calls == 1);
    CHECK(s1_dirty_bytes == kS1MinBlock);
    char* again = static_cast<char*>(s1_malloc(kBig));
    CHECK(again == big);  // reused: the pages come back, zero-filled
    CHECK(again[5000] == 0);
    CHECK(s1_dirty_bytes == 0);
    CHECK(check() == S1_CHECK_OK);
    (void)guard;
}

// mimalloc-bench's malloc-large pattern, a tenth of the size: 20 buffers of 0.5..2.5 MiB, each
// step replaces a random one. Before the budget, every free in the middle of the heap was a
// madvise (about 1,700 calls here); now the freed pages wait for the next allocation.
TEST_CASE_FIXTURE(IsolatedHeap, "large blocks freed and reallocated in a loop keep their pages") {
    s1_set_fit(S1_FIT_SEG);
    std::vector<char*> slots(20, nullptr);
    uint64_t x = 88172645463325252ull;  // xorshift64: the same churn on every run
    auto next = [&x] { return x ^= x << 13, x ^= x >> 7, x ^= x << 17; };
    for (int step = 0; step < 2000; ++step) {
        char*& slot = slots[next() % slots.size()];
        REQUIRE(s1_free(slot) == S1_OK);
        slot = static_cast<char*>(s1_malloc((512 << 10) + next() % (2 << 20)));
        REQUIRE(slot != nullptr);
        slot[0] = 1;
    }
    CHECK(s1_madvise_calls <= 10);
    CHECK(check() == S1_CHECK_OK);
    // The program frees everything but one buffer and goes quiet: what waits is bounded by
    // the floor (the live bytes are fewer).
    for (std::size_t i = 1; i < slots.size(); ++i) REQUIRE(s1_free(slots[i]) == S1_OK);
    CHECK(s1_dirty_bytes <= s1_purge_floor);
    CHECK(s1_madvise_calls > 0);
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "a foreign sbrk between growths starts a new fenced region") {
    void* a = s1_malloc(16);
    brk.bump(24);  // someone else takes 24 bytes: the break is no longer 16-aligned
    void* b = s1_malloc(100000);
    REQUIRE(b != nullptr);
    CHECK(reinterpret_cast<uint64_t>(b) % 16 == 0);
    int regions = 0;
    for (const Row& r : walk()) regions += r.kind == S1_KIND_REGION;
    CHECK(regions == 2);
    CHECK(check() == S1_CHECK_OK);
    CHECK(s1_free(a) == S1_OK);
    CHECK(s1_free(b) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
    alignas(16) char on_the_stack[16];
    CHECK(s1_free(on_the_stack) == S1_FOREIGN);
}

// [S1.40] A stray write can reach the words the region walk follows: the end word just before a
// region's first block (an underflow of that block) and the epilogue's link just past its last
// one (an overflow). The walk reports them instead of reading through them: before, a free of a
// pointer the walk had to look past (one on the stack, above the heap) followed the damaged word
// and died of SIGSEGV.
TEST_CASE_FIXTURE(IsolatedHeap, "a damaged end word or region link is reported, not followed") {
    void* first = s1_malloc(24);  // the region's first block: its end word lies just below
    void* last = s1_malloc(24);   // the heap's last block (no margin yet): the epilogue follows
    REQUIRE(first != nullptr);
    REQUIRE(last != nullptr);
    REQUIRE(check() == S1_CHECK_OK);
    alignas(16) char on_the_stack[16];
    auto* end_word = reinterpret_cast<uint64_t*>(header(first) - kS1RegionHeader);
    uint64_t* epilogue = reinterpret_cast<uint64_t*>(*end_word - 8);
    REQUIRE(reinterpret_cast<uint64_t>(epilogue) == header(last) + kS1MinBlock);
    const uint64_t good_end = *end_word, good_epilogue = *epilogue;

    for (uint64_t bad_end : {uint64_t{0}, good_end + 4096, good_end - 8, header(first) - kS1RegionHeader}) {
        CAPTURE(bad_end);
        *end_word = bad_end;  // an underflow of the first block
        CHECK(s1_validate(first) == S1_HEAP_DAMAGED);
        CHECK(s1_free(on_the_stack) == S1_HEAP_DAMAGED);
        CHECK(check() == S1_CHECK_REGION_END);
        *end_word = good_end;
    }
    for (uint64_t bad_link : {uint64_t{0x4141414141414140}, header(first) & ~uint64_t{15}, good_end + (1 << 20)}) {
        CAPTURE(bad_link);
        *epilogue = bad_link | (good_epilogue & 15);  // an overflow of the last block
        CHECK(s1_validate(last) == S1_OK);             // inside the region: no link is read
        CHECK(s1_free(on_the_stack) == S1_HEAP_DAMAGED);
        CHECK(check() == S1_CHECK_REGION_ORDER);
        *epilogue = good_epilogue;
    }
    CHECK(check() == S1_CHECK_OK);
    CHECK(s1_free(on_the_stack) == S1_FOREIGN);
    CHECK(s1_free(first) == S1_OK);
    CHECK(s1_free(last) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
}

// Someone else takes a page between s1_heap_grow's query of the break and its sbrk, once.
int g_races_left = 0;
void* racing_sbrk(intptr_t increment) {
    if (increment > 0 && g_races_left > 0 && --g_races_left == 0) g_break->bump(4096);
    return g_break->sbrk(increment);
}

TEST_CASE_FIXTURE(IsolatedHeap, "a break that moves between the query and the growth still yields a large enough block") {
    REQUIRE(s1_malloc(16) != nullptr);
    s1_sbrk_hook = &racing_sbrk;
    g_races_left = 1;
    void* p = s1_malloc(64000);  // the extension lands past someone else's page
    REQUIRE(p != nullptr);
    CHECK(g_races_left == 0);
    CHECK(s1_usable_size(p) >= 64000);
    CHECK(check() == S1_CHECK_OK);
    std::memset(p, 7, 64000);
    CHECK(s1_free(p) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
}

// Someone else moves the break by a few bytes just before a small extension's sbrk: the
// range the extension gets (32 bytes here) is too short to hold a region of its own.
uint64_t g_race_bytes = 0;
void* nudging_sbrk(intptr_t increment) {
    if (increment > 0 && g_race_bytes) g_break->bump(std::exchange(g_race_bytes, 0));
    return g_break->sbrk(increment);
}

TEST_CASE_FIXTURE(IsolatedHeap, "a range too short for a region, left by a moving break, is passed over") {
    for (uint64_t nudge : {8, 16, 24}) {
        CAPTURE(nudge);
        for (int fit : {S1_FIT_FIRST, S1_FIT_SEG}) {
            CAPTURE(fit);
            s1_reset();
            s1_sbrk_hook = &isolated_sbrk;
            s1_set_fit(fit);
            REQUIRE(s1_malloc(16) != nullptr);
            void* tail = s1_malloc(200);      // a 208-byte block that ends the heap...
            REQUIRE(s1_free(tail) == S1_OK);  // ...and is its trailing free block now
            s1_sbrk_hook = &nudging_sbrk;
            g_race_bytes = nudge;
            void* p = s1_malloc(220);  // 240 bytes: the extension asks for the 32 it lacks
            s1_sbrk_hook = &isolated_sbrk;
            REQUIRE(p != nullptr);
            CHECK(g_race_bytes == 0);  // the race happened
            CHECK(s1_usable_size(p) >= 220);
            CHECK(check() == S1_CHECK_OK);
            for (const Row& r : walk()) CHECK((r.kind != S1_KIND_FREE || r.size >= kS1MinBlock));
            std::memset(p, 7, 220);
            CHECK(s1_free(p) == S1_OK);
            CHECK(check() == S1_CHECK_OK);
        }
    }
}

// Someone else raises the break by a page between s1_heap_trim's query and its sbrk(-n).
bool g_trim_race_armed = false;
void* trim_racing_sbrk(intptr_t increment) {
    if (increment < 0 && g_trim_race_armed) {
        g_trim_race_armed = false;
        g_break->bump(4096);
    }
    return g_break->sbrk(increment);
}

TEST_CASE_FIXTURE(IsolatedHeap, "a trim that finds someone else's pages below the break puts the break back") {
    void* small = s1_malloc(16);
    void* big = s1_malloc(1 << 20);
    REQUIRE(big != nullptr);
    s1_sbrk_hook = &trim_racing_sbrk;
    g_trim_race_armed = true;
    std::vector<Row> before = blocks();
    uint64_t footprint = s1_footprint;
    REQUIRE(s1_free(big) == S1_OK);  // would trim: the heap ends in a 1 MiB free block
    CHECK_FALSE(g_trim_race_armed);  // the trim did try
    CHECK(brk.used() == footprint + 4096);  // our heap plus the other user's page, all there
    CHECK(s1_footprint == footprint);
    std::vector<Row> after = blocks();
    REQUIRE(after.size() == 2);  // small, then one free block up to the old end
    CHECK(after[1].kind == S1_KIND_FREE);
    CHECK(after[1].address + after[1].size == before.back().address + before.back().size);
    CHECK(check() == S1_CHECK_OK);
    (void)small;
}

// [S1.39] The kernel takes back the pages a lowered break gives up; the simulated break keeps
// them. This one takes them away too (PROT_NONE), so a read past the new break faults. It runs
// inside the NASM core, which no exception may cross: a failed mprotect is only counted here.
int g_mprotect_failures = 0;
void* unmapping_sbrk(intptr_t increment) {
    void* old = g_break->sbrk(increment);
    if (old == reinterpret_cast<void*>(-1) || increment == 0) return old;
    uint64_t from = reinterpret_cast<uint64_t>(old);
    uint64_t to = from + static_cast<uint64_t>(increment);
    auto page_up = [](uint64_t a) { return (a + 4095) & ~uint64_t{4095}; };
    if (increment < 0 && page_up(to) < page_up(from))
        g_mprotect_failures += mprotect(reinterpret_cast<void*>(page_up(to)), page_up(from) - page_up(to), PROT_NONE) != 0;
    if (increment > 0) {
        uint64_t lo = from & ~uint64_t{4095};
        g_mprotect_failures += mprotect(reinterpret_cast<void*>(lo), page_up(to) - lo, PROT_READ | PROT_WRITE) != 0;
    }
    return old;
}

TEST_CASE_FIXTURE(IsolatedHeap, "a trim reads nothing past the break it lowered, not even to check a link") {
    s1_sbrk_hook = &unmapping_sbrk;
    g_mprotect_failures = 0;
    brk.move_to(64 << 20);  // the first region lies high...
    void* x = s1_malloc(200000);
    void* guard = s1_malloc(16);  // (x is not the last block of its region)
    brk.move_to(0);  // ...and the newest one, which trims, below it
    void* big = s1_malloc(1 << 20);
    REQUIRE((x && guard && big));
    REQUIRE(reinterpret_cast<uint64_t>(big) < reinterpret_cast<uint64_t>(x));
    uint64_t before = s1_footprint;
    CHECK(s1_free(x) == S1_OK);  // x heads the free list...
    // ...so big's link is x, which the trim's unlink checks with s1_region_of: that walk passes
    // the newest region through its epilogue, which must already be at the lowered end.
    CHECK(s1_free(big) == S1_OK);
    CHECK(s1_footprint < before - (512 << 10));  // the break fell
    CHECK(check() == S1_CHECK_OK);
    CHECK(s1_free(guard) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
    CHECK(g_mprotect_failures == 0);
}

TEST_CASE_FIXTURE(IsolatedHeap, "realloc at the end of the heap asks the break only for what the block lacks") {
    REQUIRE(s1_malloc(16) != nullptr);
    void* b = s1_malloc(30000);
    uint64_t before = s1_footprint;
    REQUIRE(s1_realloc(b, 200000) == b);
    // 170000 more bytes at most, plus the margin, rounded to pages.
    CHECK(s1_footprint - before <= ((200000 - 30000 + s1_grow_margin + 4095) & ~uint64_t{4095}));
}

TEST_CASE_FIXTURE(IsolatedHeap, "a failed sbrk returns NULL with ENOMEM and leaves the heap unchanged") {
    void* a = s1_malloc(100);
    REQUIRE(a != nullptr);
    std::vector<Row> before = walk();
    uint64_t footprint = s1_footprint;
    brk.set_limit(brk.used() + 1000);
    CHECK(s1_malloc(1 << 20) == nullptr);
    CHECK(s1_status == S1_ENOMEM);
    CHECK(s1_realloc(a, 1 << 20) == nullptr);
    CHECK(s1_status == S1_ENOMEM);
    CHECK(s1_memalign(4096, 1 << 20) == nullptr);
    std::vector<Row> after = walk();
    REQUIRE(after.size() == before.size());
    for (std::size_t i = 0; i < after.size(); ++i) {
        CHECK(after[i].address == before[i].address);
        CHECK(after[i].size == before[i].size);
        CHECK(after[i].kind == before[i].kind);
    }
    CHECK(s1_footprint == footprint);
    CHECK(s1_malloc(static_cast<size_t>(-1)) == nullptr);
    CHECK(s1_status == S1_ENOMEM);
}

TEST_CASE_FIXTURE(IsolatedHeap, "bad pointers are classified and refused") {
    char* a = static_cast<char*>(s1_malloc(100));
    std::memset(a, 0, 100);
    CHECK(s1_free(a + 8) == S1_MISALIGNED);
    CHECK(s1_free(a + 16) == S1_NOT_A_BLOCK);
    int local = 0;
    CHECK(s1_free(&local) != S1_OK);
    CHECK(s1_free(a) == S1_OK);
    CHECK(s1_free(a) == S1_DOUBLE_FREE);  // now the head of a free block
    void* b = s1_malloc(16);
    void* c = s1_malloc(16);
    CHECK(s1_free(c) == S1_OK);
    CHECK(s1_free(b) == S1_OK);           // c is absorbed: its header is poisoned
    CHECK(s1_free(c) == S1_DOUBLE_FREE);
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "memalign gives the lead and the tail back as free blocks") {
    void* p = s1_memalign(4096, 100);
    REQUIRE(p != nullptr);
    CHECK(reinterpret_cast<uint64_t>(p) % 4096 == 0);
    CHECK(s1_usable_size(p) == 104);
    std::vector<Row> rows = blocks();
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].kind == S1_KIND_FREE);  // the lead
    CHECK(rows[1].address == header(p));
    CHECK(rows[2].kind == S1_KIND_FREE);  // the tail, merged with the rest
    CHECK(s1_free(p) == S1_OK);
    CHECK(blocks().size() == 1);
}

// The case that took 126 s on this stage when every aligned request walked the free list.
TEST_CASE_FIXTURE(IsolatedHeap, "aligned requests into a heap of holes take a bounded search and reuse the holes") {
    s1_set_fit(S1_FIT_SEG);
    std::vector<void*> blocks_(10000);
    for (void*& p : blocks_) {
        p = s1_memalign(256, 4096);
        REQUIRE(p != nullptr);
    }
    for (std::size_t i = 0; i < blocks_.size(); i += 2) REQUIRE(s1_free(blocks_[i]) == S1_OK);
    uint64_t footprint = s1_footprint;
    auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < blocks_.size(); i += 2) {
        blocks_[i] = s1_memalign(256, 4096);
        REQUIRE(blocks_[i] != nullptr);
        REQUIRE(reinterpret_cast<uint64_t>(blocks_[i]) % 256 == 0);
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    CHECK(seconds < 2.0);  // a few milliseconds; a walk of every hole per call took minutes
    CHECK(s1_footprint == footprint);  // every refill went into a hole: no growth
    CHECK(check() == S1_CHECK_OK);
    void* p = blocks_[42];
    REQUIRE(s1_free(p) == S1_OK);
    CHECK(s1_memalign(256, 4096) == p);  // the hole an identical aligned block left
    for (void* q : blocks_) REQUIRE(s1_free(q) == S1_OK);
    CHECK(check() == S1_CHECK_OK);
}

TEST_CASE_FIXTURE(IsolatedHeap, "an aligned request reuses a hole of exactly its size") {
    s1_set_fit(S1_FIT_SEG);
    void* a = s1_memalign(256, 4096);
    void* b = s1_memalign(256, 4096);
    void* c = s1_memalign(256, 4096);
    REQUIRE((a && b && c));
    // Fill every free gap the leads and tails left, so b's hole will be b alone.
    for (bool filled = true; filled;) {
        filled = false;
        std::vector<Row> rows = blocks();
        for (std::size_t i = 0; i + 1 < rows.size(); ++i) {
            if (rows[i].kind != S1_KIND_FREE) continue;
            REQUIRE(s1_malloc(rows[i].size - kS1Overhead) != nullptr);
            filled = true;
            break;
        }
    }
    REQUIRE(s1_free(b) == S1_OK);
    std::vector<Row> rows = blocks();
    uint64_t hole = 0;
    for (const Row& r : rows)
        if (r.kind == S1_KIND_FREE && r.address == header(b)) hole = r.size;
    REQUIRE(hole == s1_usable_size(a) + kS1Overhead);  // no room to slide: the hole is b
    uint64_t footprint = s1_footprint;
    CHECK(s1_memalign(256, 4096) == b);
    CHECK(s1_footprint == footprint);
    CHECK(check() == S1_CHECK_OK);
    (void)c;
}

TEST_CASE_FIXTURE(IsolatedHeap, "the checker names the first broken invariant") {
    make_room();
    char* a = static_cast<char*>(s1_malloc(100));
    char* b = static_cast<char*>(s1_malloc(100));
    S1Report r;
    REQUIRE(s1_check(&r) == S1_CHECK_OK);
    CHECK(r.used_blocks == 2);
    CHECK(r.used_bytes == 2 * 104);

    uint64_t* head = reinterpret_cast<uint64_t*>(b - 8);  // just past a's 104 usable bytes
    uint64_t saved = *head;
    *head ^= kS1PrevFree;  // a one-bit overflow from a: b now says that a is free
    CHECK(s1_check(&r) == S1_CHECK_FLAGS);
    CHECK(r.address == header(b));
    CHECK(s1_validate(a) == S1_NOT_A_BLOCK);  // and free(a) refuses a block b calls free
    *head = 8;  // a size no block can have
    CHECK(s1_check(&r) == S1_CHECK_BLOCK_SIZE);
    *head = saved;
    CHECK(s1_check(&r) == S1_CHECK_OK);

    // Nothing lies before the first block [S1.37]: its P bit set would send a coalesce into
    // the region's end word, so the checker refuses it.
    uint64_t first = 0;
    for (const Row& row : walk())
        if (!first && row.kind != S1_KIND_REGION) first = row.address;
    REQUIRE(first != 0);
    uint64_t* first_head = reinterpret_cast<uint64_t*>(first);
    saved = *first_head;
    *first_head |= kS1PrevFree;
    CHECK(s1_check(&r) == S1_CHECK_FLAGS);
    CHECK(r.address == first);
    *first_head = saved;
    CHECK(s1_check(&r) == S1_CHECK_OK);

    REQUIRE(s1_free(a) == S1_OK);  // a free block has a footer again
    uint64_t* footer = reinterpret_cast<uint64_t*>(a + 112 - 16);
    saved = *footer;
    *footer ^= 0x100;  // a write after free into its footer
    CHECK(s1_check(&r) == S1_CHECK_FOOTER);
    CHECK(r.address == header(a));
    *footer = saved;
    CHECK(s1_check(&r) == S1_CHECK_OK);
}

// [S1.39] A region is its end word (the 8 bytes before its first block) and its epilogue, whose
// size bits link to the next region. With no magic word, a damaged end word must still be
// refused: misaligned or too small at once, otherwise by the block walk, which must reach the
// epilogue exactly; a link that points back into the heap breaks the regions' order.
TEST_CASE_FIXTURE(IsolatedHeap, "the checker refuses a damaged region end word or epilogue link") {
    REQUIRE(s1_malloc(100) != nullptr);
    brk.bump(4096);  // someone else moves the break: the next growth is a second region
    REQUIRE(s1_malloc(100000) != nullptr);
    std::vector<uint64_t> regions;
    for (const Row& row : walk())
        if (row.kind == S1_KIND_REGION) regions.push_back(row.address);
    REQUIRE(regions.size() == 2);
    REQUIRE(check() == S1_CHECK_OK);
    uint64_t* end = reinterpret_cast<uint64_t*>(regions[0]);
    uint64_t* epilogue = reinterpret_cast<uint64_t*>(*end - 8);
    CHECK((*epilogue & ~uint64_t{15}) == regions[1]);  // the first region links to the second
    S1Report r;
    struct Damage {
        uint64_t* word;
        uint64_t value;
        uint64_t code, blamed;
    } cases[] = {
        {end, *end + 8, S1_CHECK_REGION_END, regions[0]},            // misaligned
        {end, regions[0] + 16, S1_CHECK_REGION_END, regions[0]},     // no room for a block
        {end, *end + 16, S1_CHECK_PAST_END, *end - 8},  // walks onto the epilogue: its link is no size
        {end, *end - 16, S1_CHECK_PAST_END, regions[0] + 8},         // the last block overruns
        {epilogue, regions[0] | kS1PrevFree | 1, S1_CHECK_EPILOGUE, *end - 8},  // wrong flags
        {epilogue, regions[0] | 1, S1_CHECK_REGION_ORDER, regions[0]},  // links back to itself
    };
    for (const Damage& d : cases) {
        uint64_t saved = *d.word;
        *d.word = d.value;
        CHECK(s1_check(&r) == d.code);
        CHECK(r.address == d.blamed);
        *d.word = saved;
        REQUIRE(check() == S1_CHECK_OK);
    }
}

// ---- The real break, through the descriptor ----

int count_regions() {
    int regions = 0;
    descriptor.single_thread->walk(
        [](const WalkEntry& e, void* ctx) {
            if (std::strcmp(e.kind, "region") == 0) ++*static_cast<int*>(ctx);
            return true;
        },
        &regions);
    return regions;
}

TEST_CASE("another sbrk user moving the real break costs a region, not the heap") {
    s1_reset();
    const Api& api = *descriptor.single_thread;
    void* ours = api.malloc(100000);
    REQUIRE(ours != nullptr);
    REQUIRE(sbrk(4096) != reinterpret_cast<void*>(-1));  // someone else takes a page
    void* theirs = std::malloc(100000);  // glibc's main arena may move the break too
    void* more = api.malloc(200000);
    REQUIRE(more != nullptr);
    CHECK(count_regions() >= 2);
    CheckResult c = api.check();
    CHECK_MESSAGE(c.ok, c.message);
    api.free(ours);
    api.free(more);
    std::free(theirs);
    c = api.check();
    CHECK_MESSAGE(c.ok, c.message);
    CHECK(c.live_blocks == 0);
}

// [S1.41] A mapping just above the real break (the wall): the kernel refuses to move the break
// into it. The wall goes, and the break is libc's again, however the test ends.
struct WalledBreak {
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    void* wall = reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(sbrk(0)) + (64 << 10)) & ~(page - 1));
    bool built = mmap(wall, page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0) == wall;
    ~WalledBreak() {
        if (built) munmap(wall, page);
        descriptor.set_option("break", "sbrk");
    }
};

TEST_CASE("a break that cannot grow moves to a private reservation instead of failing") {
    s1_reset();
    const Api& api = *descriptor.single_thread;
    void* first = api.malloc(1000);
    REQUIRE(first != nullptr);
    WalledBreak walled;
    REQUIRE(walled.built);
    errno = 0;
    CHECK(api.malloc(std::size_t{8} << 30) == nullptr);   // more than the reservation holds
    CHECK(errno == ENOMEM);
    CHECK(std::strcmp(descriptor.get_option("break"), "sbrk") == 0);
    CHECK(api.malloc(SIZE_MAX / 2) == nullptr);   // refused by its size: no reservation tried
    CHECK(std::strcmp(descriptor.get_option("break"), "sbrk") == 0);
    void* big = api.malloc(16u << 20);   // cannot fit below the wall
    REQUIRE(big != nullptr);
    CHECK(std::strcmp(descriptor.get_option("break"), "reserved") == 0);
    std::memset(big, 1, 16u << 20);
    void* moved = api.realloc(first, 4u << 20);
    REQUIRE(moved != nullptr);
    CheckResult c = api.check();
    CHECK_MESSAGE(c.ok, c.message);
    CHECK(c.live_blocks == 2);
    api.free(big);
    api.free(moved);
}

TEST_CASE("options select the fit policy and the growth tunables") {
    CHECK(descriptor.set_option("fit", "best"));
    CHECK(std::strcmp(descriptor.get_option("fit"), "best") == 0);
    CHECK(s1_fit_policy == S1_FIT_BEST);
    CHECK(descriptor.set_option("trim", "off"));
    CHECK(std::strcmp(descriptor.get_option("trim"), "off") == 0);
    CHECK(descriptor.set_option("margin", "65536"));
    CHECK(std::strcmp(descriptor.get_option("margin"), "65536") == 0);
    CHECK_FALSE(descriptor.set_option("fit", "worst"));
    CHECK_FALSE(descriptor.set_option("margin", "lots"));
    CHECK_FALSE(descriptor.set_option("colour", "blue"));
    CHECK(descriptor.get_option("colour") == nullptr);
    CHECK(std::strcmp(descriptor.get_option("break"), "sbrk") == 0);
    CHECK_FALSE(descriptor.set_option("break", "heap"));
    CHECK(descriptor.set_option("fit", "seg"));
    CHECK(descriptor.set_option("trim", "131072"));
    CHECK(descriptor.set_option("margin", "1048576"));
}

TEST_CASE("options set at run time wait for the stage lock") {
    descriptor.prepare_fork();  // takes the thread-safe entry's lock, as a malloc in flight would
    std::atomic<bool> done{false};
    std::thread setter([&] {
        descriptor.set_option("fit", "best");
        done = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    CHECK_FALSE(done.load());
    descriptor.after_fork_parent();
    setter.join();
    CHECK(done.load());
    CHECK(std::strcmp(descriptor.get_option("fit"), "best") == 0);
    CHECK(descriptor.set_option("fit", "seg"));
}

TEST_CASE("the reserved break serves the heap from a private mapping and can be switched back") {
    const Api& api = *descriptor.single_thread;
    REQUIRE(descriptor.set_option("break", "reserved"));
    CHECK(std::strcmp(descriptor.get_option("break"), "reserved") == 0);
    void* before = sbrk(0);
    void* p = api.malloc(32u << 20);  // far beyond valgrind's 8 MiB brk segment
    REQUIRE(p != nullptr);
    CHECK(sbrk(0) == before);  // the real break did not move
    std::memset(p, 1, 32u << 20);
    api.free(p);
    REQUIRE(descriptor.set_option("break", "sbrk"));
    void* q = api.malloc(1 << 20);
    REQUIRE(q != nullptr);
    CheckResult c = api.check();
    CHECK_MESSAGE(c.ok, c.message);
    api.free(q);
}

// [S1.25] The unlink attack: after free(a), the program writes through its stale pointer into
// a's links, choosing `next` so that unlinking a would store a's `prev` (0: it is the head) at
// &victim. The next malloc takes a off the list; the safe-unlinking check must stop it first.
TEST_CASE("a write after free into a block's links is caught before the unlink writes") {
    const Api& api = *descriptor.single_thread;
    static uint64_t victim = 0x1234;
    void* a = api.malloc(100);
    void* guard = api.malloc(100);  // keeps a from merging with the free rest of the heap
    REQUIRE(a != nullptr);
    REQUIRE(guard != nullptr);
    battery::require_one_line_abort("stage1_brk", "malloc", a, {"corrupted free list"}, [&] {
        api.free(a);
        uint64_t forged = reinterpret_cast<uint64_t>(&victim) - 16;  // next.prev is at next + 16
        std::memcpy(a, &forged, 8);  // a's first payload word is its `next` link
        void* b = api.malloc(100);  // takes a off the list: the unlink would write victim
        battery::child_expect(victim == 0x1234, "the unlink wrote to the program-chosen address");
        (void)b;
    });
    CHECK(victim == 0x1234);
    api.free(a);
    api.free(guard);
}

// [S1.50] core.h is the C view of types.inc, and the twin takes its layout from core.h: each
// constant that both name must hold the value the core assembles with, or the adapter, the twin
// and these tests would read a layout the core does not use. types.inc is read as text (each
// `%define NAME VALUE`, VALUE a number, a shift, a sum or an earlier name, up to its comment).
class IncDefines {
public:
    explicit IncDefines(const char* path) {
        FILE* file = std::fopen(path, "r");
        REQUIRE_MESSAGE(file != nullptr, "cannot read " << path);
        char line[512];
        while (std::fgets(line, sizeof line, file)) {
            std::string text(line);
            text = text.substr(0, text.find(';'));
            char name[128];
            int used = 0;
            if (std::sscanf(text.c_str(), " %%define %127s %n", name, &used) != 1) continue;
            text_ = text.substr(static_cast<std::size_t>(used));
            at_ = 0;
            if (text_.find_first_not_of(" \t\r\n") == std::string::npos) continue;   // a guard
            values_[name] = sum();
        }
        std::fclose(file);
    }
    bool has(const std::string& name) const { return values_.count(name) != 0; }
    uint64_t operator[](const std::string& name) const { return values_.at(name); }

private:
    void skip() { while (at_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[at_]))) ++at_; }
    uint64_t sum() {
        uint64_t v = shift();
        for (skip(); at_ < text_.size() && (text_[at_] == '+' || text_[at_] == '-'); skip()) {
            char op = text_[at_++];
            uint64_t w = shift();
            v = op == '+' ? v + w : v - w;
        }
        return v;
    }
    uint64_t shift() {
        uint64_t v = primary();
        for (skip(); text_.compare(at_, 2, "<<") == 0; skip()) {
            at_ += 2;
            v <<= primary();
        }
        return v;
    }
    uint64_t primary() {
        skip();
        if (text_[at_] == '(') {
            ++at_;
            uint64_t v = sum();
            skip();
            REQUIRE_MESSAGE(text_[at_] == ')', "unbalanced: " << text_);
            ++at_;
            return v;
        }
        std::size_t end = at_;
        while (end < text_.size() && (std::isalnum(static_cast<unsigned char>(text_[end])) || text_[end] == '_')) ++end;
        std::string token = text_.substr(at_, end - at_);
        at_ = end;
        REQUIRE_MESSAGE(!token.empty(), "cannot read: " << text_);
        if (std::isdigit(static_cast<unsigned char>(token[0]))) return std::stoull(token, nullptr, 0);
        REQUIRE_MESSAGE(has(token), token << " is used before it is defined");
        return values_.at(token);
    }

    std::map<std::string, uint64_t> values_;
    std::string text_;
    std::size_t at_ = 0;
};

TEST_CASE("core.h and the twin use the layout constants that types.inc assembles with") {
    IncDefines inc("stage1_brk/types.inc");
    const std::pair<const char*, uint64_t> mirrored[] = {
        {"S1_ALLOC", kS1Alloc}, {"S1_PREV_FREE", kS1PrevFree}, {"S1_FLAGS", kS1Flags},
        {"S1_ALIGN", kS1Align}, {"S1_OVERHEAD", kS1Overhead}, {"S1_MIN_BLOCK", kS1MinBlock},
        {"S1_MAX_REQUEST", kS1MaxRequest}, {"S1_POISON", kS1Poison}, {"S1_PAGE", kS1Page},
        {"S1_TRIM_FOLLOW_MIN", kS1TrimFollowMin}, {"S1_TRIM_FOLLOW_MAX", kS1TrimFollowMax},
        {"S1_GROW_SHIFT", kS1GrowShift}, {"S1_SMALL_GROW_SHIFT", kS1SmallGrowShift},
        {"S1_GROW_MARGIN", S1_GROW_MARGIN}, {"S1_GROW_EXACT", S1_GROW_EXACT}, {"S1_GROW_WIDE", S1_GROW_WIDE},
        {"S1_MAX_ALIGNMENT", kS1MaxAlignment}, {"S1_NEXT", kS1Next}, {"S1_PREV", kS1Prev},
        {"S1_REGION_END", kS1RegionEnd}, {"S1_REGION_HEADER", kS1RegionHeader},
        {"S1_OK", S1_OK}, {"S1_ENOMEM", S1_ENOMEM}, {"S1_FOREIGN", S1_FOREIGN}, {"S1_MISALIGNED", S1_MISALIGNED},
        {"S1_NOT_A_BLOCK", S1_NOT_A_BLOCK}, {"S1_DOUBLE_FREE", S1_DOUBLE_FREE}, {"S1_HEAP_DAMAGED", S1_HEAP_DAMAGED},
        {"S1_FIT_FIRST", S1_FIT_FIRST}, {"S1_FIT_NEXT", S1_FIT_NEXT}, {"S1_FIT_BEST", S1_FIT_BEST},
        {"S1_FIT_SEG", S1_FIT_SEG}, {"S1_CLASSES", kS1Classes}, {"S1_SEG_SCAN", kS1SegScan},
        {"S1_SPLIT_BACK", kS1SplitBack}, {"S1_SLIVER_SHIFT", kS1SliverShift},
        {"S1_KIND_REGION", S1_KIND_REGION}, {"S1_KIND_FENCE", S1_KIND_FENCE}, {"S1_KIND_USED", S1_KIND_USED},
        {"S1_KIND_FREE", S1_KIND_FREE}, {"S1_CHECK_OK", S1_CHECK_OK}, {"S1_CHECK_REGION_END", S1_CHECK_REGION_END},
        {"S1_CHECK_REGION_ORDER", S1_CHECK_REGION_ORDER}, {"S1_CHECK_BLOCK_SIZE", S1_CHECK_BLOCK_SIZE},
        {"S1_CHECK_PAST_END", S1_CHECK_PAST_END}, {"S1_CHECK_FOOTER", S1_CHECK_FOOTER},
        {"S1_CHECK_FLAGS", S1_CHECK_FLAGS}, {"S1_CHECK_ADJACENT_FREE", S1_CHECK_ADJACENT_FREE},
        {"S1_CHECK_EPILOGUE", S1_CHECK_EPILOGUE}, {"S1_CHECK_LIST_FOREIGN", S1_CHECK_LIST_FOREIGN},
        {"S1_CHECK_LIST_LINK", S1_CHECK_LIST_LINK}, {"S1_CHECK_LIST_COUNT", S1_CHECK_LIST_COUNT},
        {"S1_CHECK_LIST_CLASS", S1_CHECK_LIST_CLASS},
        {"REPORT_CODE", offsetof(S1Report, code)}, {"REPORT_ADDRESS", offsetof(S1Report, address)},
        {"REPORT_USED_BLOCKS", offsetof(S1Report, used_blocks)}, {"REPORT_USED_BYTES", offsetof(S1Report, used_bytes)},
        {"REPORT_FREE_BLOCKS", offsetof(S1Report, free_blocks)}, {"REPORT_FREE_BYTES", offsetof(S1Report, free_bytes)},
        {"REPORT_REGIONS", offsetof(S1Report, regions)}, {"REPORT_HEAP_BYTES", offsetof(S1Report, heap_bytes)},
        {"S1_MADV_DONTNEED", MADV_DONTNEED}, {"S1_SYS_MADVISE", SYS_madvise},   // the system's own
    };
    for (const auto& [name, value] : mirrored) {
        INFO(std::string(name) << " in types.inc");
        REQUIRE(inc.has(name));
        CHECK(inc[name] == value);
    }
}

}  // namespace
}  // namespace edu::stage1

int main(int argc, char** argv) {
    doctest::Context context(argc, argv);
    return context.run();
}
