// tests/support.h: what every battery file shares: the stage under test, seeds and a random
// source, per-block byte patterns, the driver's shadow model of live blocks, and a forked child
// that runs a body and reports how it ended. Entry points: stage(), seeds(), Rng, fill/verify,
// Shadow, run_in_child. The tests themselves live in the theme files beside this one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "contract/mapped.h"

namespace edu::battery {

// ---- The stage under test -------------------------------------------------------------------
// Set once by the battery's main (tests/battery_main.cc) from EDU_STAGE_NUMBER.
void set_stage(const Stage& stage);
const Stage& stage();
const Api& api();        // stage().single_thread
const Api& shared_api(); // stage().thread_safe

// ---- Seeds and randomness -------------------------------------------------------------------
// The seeds a randomised test runs: `defaults`, or only $EDU_BATTERY_SEED when it is set
// (decimal or 0x-hex), so a failure reported with its seed replays exactly.
std::vector<uint64_t> seeds(std::initializer_list<uint64_t> defaults);

// splitmix64: small, fast, and the same sequence on every machine for a given seed.
class Rng {
public:
    explicit Rng(uint64_t seed) : state_(seed) {}
    uint64_t next();
    uint64_t below(uint64_t bound);                    // uniform in [0, bound), bound > 0
    uint64_t range(uint64_t lo, uint64_t hi);          // uniform in [lo, hi]
    bool per_mille(unsigned chance) { return below(1000) < chance; }

private:
    uint64_t state_;
};

// ---- Byte patterns --------------------------------------------------------------------------
// Byte `i` of block `id` is a function of both, so a byte that moved, was overwritten by a
// neighbour or was lost in a realloc shows up as a mismatch at a known offset.
unsigned char pattern_byte(uint64_t id, std::size_t offset);
void fill(void* block, uint64_t id, std::size_t from, std::size_t to);   // bytes [from, to)
// Offset of the first byte in [0, n) that differs from the pattern, or -1.
std::ptrdiff_t first_mismatch(const void* block, uint64_t id, std::size_t n);
// Offset of the first non-zero byte in [0, n), or -1.
std::ptrdiff_t first_nonzero(const void* block, std::size_t n);

// ---- Shadow model of live blocks ------------------------------------------------------------
// The driver's own record of what it holds, independent of the stage: every live block with
// its id, request and usable size, and an address-ordered map of [start, start + usable) spans
// that refuses any block overlapping another.
struct Block {
    uint64_t id;
    unsigned char* ptr;
    std::size_t size;     // bytes requested
    std::size_t usable;   // usable_size(ptr) when it was recorded
};

class Shadow {
public:
    // Records a block; returns "" or a sentence describing the overlap it would create.
    std::string add(const Block& block);
    // Forgets the block at `index` of live() (swap with the last).
    void remove(std::size_t index);
    const std::vector<Block>& live() const { return live_; }
    std::size_t size() const { return live_.size(); }
    void reserve(std::size_t n) { live_.reserve(n); }

private:
    std::vector<Block> live_;
    std::map<uintptr_t, uintptr_t> spans_;  // start -> end, disjoint
};

// ---- Heap invariants as assertions ----------------------------------------------------------
// Runs `api.check()` and fails the current test with the checker's message if it is not ok.
CheckResult require_heap_ok(const Api& api);
// The same as a CHECK: the case goes on (to restore what it damaged on purpose, say), and a
// failure still says what the checker found, which `CHECK(api.check().ok)` did not.
bool check_heap_ok(const Api& api);
// "0x..." in lower case without leading zeros, as edu::die prints pointers.
std::string hex(const void* ptr);
bool is_aligned(const void* ptr, std::size_t alignment);

// ---- Forked children ------------------------------------------------------------------------
// How a child ended and what it wrote on stderr.
struct ChildOutcome {
    bool exited = false;
    int exit_code = -1;
    bool signaled = false;
    int signal = 0;
    std::string stderr_text;
    std::string describe() const;   // "exit 0" / "signal 6 (Aborted)", then the stderr text
    std::size_t stderr_lines() const;
};

// Forks; the child sends stderr into a pipe, runs `body` and exits 0 if it returns. A child
// that hangs is killed by SIGALRM after `seconds`. With `hooks`, that stage's fork hooks run
// around the fork (prepare before, after_fork_parent / after_fork_child after), as
// pthread_atfork would run them in the preload shim.
ChildOutcome run_in_child(const std::function<void()>& body, unsigned seconds = 30,
                          const Stage* hooks = nullptr);

// Runs `body` in a child and requires the contract's answer to a bad pointer: SIGABRT after
// exactly one line, "edu-alloc <stage>: <call>(<ptr>): ...", which contains each of `words`.
// The battery and the stages' own death tests all ask this one question.
void require_one_line_abort(const char* stage, const char* call, const void* ptr,
                            std::initializer_list<const char*> words, const std::function<void()>& body);

// Inside a child: if `ok` is false, write `what` on stderr and exit 1 (no doctest there).
void child_expect(bool ok, const char* what);
// child_expect of the heap's check: on failure the child's line is WHAT, then what the checker
// found ("WHAT: checker: MESSAGE"), which `child_expect(api.check().ok, WHAT)` left out.
void child_expect_heap_ok(const Api& api, const char* what);

// The system calls of `kind` that a stage's mapped blocks made (contract/mapped.h's totals).
inline uint64_t mapped_calls(const MappedTotals& totals, OsCall kind) {
    return totals.os_calls[static_cast<unsigned>(kind)];
}

// Inside a child, for a stage that serves `first` bytes from a mapping of its own
// (contract/mapped.h; stage `owner`): a block grown by realloc from `first` bytes to `last` in
// steps of `step`, then shrunk back to `first`, keeps its bytes (one per page, written as it
// grows) and its place in the mapped table (one live block of the owner's, where realloc says
// it is), and is resized by mremap alone: one call a step, no mmap and no munmap (stages 3 and
// 4, [S3.64] and [S4.70]). At `last`, under the address-space limit the caller has set, a
// resize to the whole limit fails with ENOMEM and leaves the block as it was. Freed at the end.
void grow_mapped_in_steps(const Api& api, int owner, std::size_t first, std::size_t step, std::size_t last);

// Bytes of writable private memory this process holds: VmData of /proc/self/status, what a
// data limit (RLIMIT_DATA) is measured against; 0 if it cannot be read.
uint64_t data_bytes();
// Bytes of address space this process holds: VmSize, what an address-space limit (RLIMIT_AS,
// `ulimit -v`) is measured against; 0 if it cannot be read.
uint64_t address_space_bytes();

// ---- The map count ---------------------------------------------------------------------------
// Inside a child: the process's mappings filled up to the kernel's limit (vm.max_map_count,
// 65,530 by default) with mappings of its own, so that any system call that needs one mapping
// more fails with ENOMEM: an mmap anywhere, an munmap, mprotect or mmap(MAP_FIXED) that splits
// a mapping. Read-only pages alternate with PROT_NONE in one reservation, then single pages are
// mapped until the kernel refuses. release() (or the destructor) gives it all back. Nothing that
// allocates may run in between: a program at its limit is what this makes, so the stage under
// test is all that should run. Reports through child_expect if the limit is not reached.
class MapCountFull {
public:
    MapCountFull();
    ~MapCountFull() { release(); }
    MapCountFull(const MapCountFull&) = delete;
    MapCountFull& operator=(const MapCountFull&) = delete;
    void release();

private:
    unsigned char* reservation_ = nullptr;
    std::size_t bytes_ = 0;
    std::size_t split_ = 0;    // read-only pages made in the reservation
    void* singles_[64] = {};
    unsigned single_count_ = 0;
};

// Inside a child: [at, at + bytes) is still mapped writable (an munmap or mmap of it that was
// to give it back was refused: else the test proves nothing) and none of it is resident (its
// pages were given back all the same).
void expect_refused_but_given_back(const void* at, std::size_t bytes);
// Inside a child: blocks from `take` (one size class) until they reach the third of three
// pages in a row, `page_of` naming a block's page. The blocks of the second page are returned;
// those of the first page and the first block of the third are appended to `kept`.
std::vector<char*> middle_of_three_pages(const std::function<char*()>& take,
                                         const std::function<const void*(const void*)>& page_of,
                                         std::vector<char*>& kept);
// Inside a child, under a limit: blocks of 4,000 bytes from `take` until NULL, every other one
// freed, then 600-byte blocks until NULL. Each must be one of the freed larger blocks (usable
// size at least 4,000), every one of them must serve, errno stays untouched until the NULL, which
// says ENOMEM; the heap is checked, and all is freed (stages 3 and 4: [S3.75], [S4.82]).
void small_blocks_from_larger_free_ones(const Api& api, const std::function<void*(std::size_t)>& take);
// The same for aligned requests: blocks of 5,000 and 8,000 bytes from `take`, in turn, until
// both give NULL, then 600-byte blocks aligned to 4 KiB from `take_aligned` until NULL (whatever
// pages their own bin still had), then every other block of each size freed. Now only a larger
// bin can serve the aligned requests, and only one whose blocks are all 4 KiB-aligned may: the
// 8,192-byte bin, not 5,120 (a multiple of 1 KiB only). Each answer must be aligned and an
// 8,192-byte block, every freed one of them must serve, then NULL with ENOMEM; the heap is
// checked, and all is freed (stages 3 and 4: [S3.97], [S4.115]).
void aligned_blocks_from_larger_free_ones(const Api& api, const std::function<void*(std::size_t)>& take,
                                          const std::function<void*(std::size_t, std::size_t)>& take_aligned);
// Page faults the calling thread has taken so far that the kernel served without I/O.
long minor_faults();
// In-process, stages 3 and 4 ([S3.80], [S4.88], S3.96: one rule, segment_layout.h's
// large_reach): a 1 MiB block from `take`, freed (then `is_cached` of its segment must hold), and
// a 300 KiB block taken next reuses the segment with the first one's usable size, its tail guard
// written on a page already touched, so taking it faults no page (not checked under a sanitizer,
// whose shadow memory faults too); a 200 KiB block, under a quarter of that reach, then gets
// `small_usable`, its own size. The heap is checked and everything freed.
void reused_large_segment_keeps_its_reach(const Api& api, const std::function<void*(std::size_t)>& take,
                                          const std::function<const void*(const void*)>& segment_of,
                                          const std::function<bool(const void*)>& is_cached,
                                          std::size_t small_usable);
// In-process, stages 3 and 4 ([S3.29], [S4.35]: one check, segment_layout.h's check_page_grid):
// the checker names a page in use whose block size is no class (`block_size` one more) and one
// whose start is off its block grid (`start` one more), each damaged alone and restored before
// anything else runs; the heap checks clean before and after. The two fields are a page's.
void checker_names_page_grid_faults(const Api& api, uint64_t& block_size, uintptr_t& start);
// In-process, stages 3 and 4 ([S3.29], [S4.35]): a one-block page in use whose local_free holds
// a block is named in the same words by both checkers (`damage(true)` puts its block there,
// `damage(false)` takes it off again); the heap checks clean before and after.
void checker_names_one_block_page_lists(const Api& api, const std::function<void(bool)>& damage);
// Inside a child: a page of the test's own, a mapping not the stage's, at exactly `at` (one OS
// page, MAP_FIXED_NOREPLACE), its bytes 0x5a; and whether it still holds them.
unsigned char* map_page_not_ours(void* at);
bool page_not_ours_intact(const unsigned char* page);
// mlock and munlock of [at, at + bytes) by system call (the sanitizers' interceptors only
// pretend to lock): a locked page is one the kernel refuses to discard (madvise MADV_DONTNEED
// fails with EINVAL), as every page is under mlockall. True when done.
bool lock_pages(const void* at, std::size_t bytes);
bool unlock_pages(const void* at, std::size_t bytes);
// The permissions ("rw-p", "---p") of the mapping that holds `at`, from /proc/self/maps; ""
// when none does.
std::string mapping_permissions(const void* at);
// Bytes of [at, at + bytes) (page-aligned `at`) whose pages are resident (mincore); every page
// must be mapped.
std::size_t resident_bytes(const void* at, std::size_t bytes);

// Whether this build runs under AddressSanitizer or ThreadSanitizer: their shadow memory needs
// terabytes of address space and moves VmData while a child runs, so a test that sets an
// address-space or data limit skips itself there (`if (battery::kUnderSanitizer) return;`).
// Keep that line as written: tools/test finds the tests that hold such a case by it and runs them
// under UBSan alone, so their limit cases still meet a sanitizer.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kUnderSanitizer = true;
#else
inline constexpr bool kUnderSanitizer = false;
#endif

}  // namespace edu::battery
