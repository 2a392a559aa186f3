// tests/support.cc: the battery's shared helpers (see support.h). No test cases live here.
#include "tests/support.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>

#include "contract/mapped.h"

namespace edu::battery {

namespace {
const Stage* g_stage = nullptr;

uint64_t mix(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
}  // namespace

void set_stage(const Stage& s) { g_stage = &s; }

const Stage& stage() {
    if (g_stage == nullptr) {
        std::fprintf(stderr, "battery: no stage set (battery_main.cc sets it before the tests)\n");
        std::abort();
    }
    return *g_stage;
}

const Api& api() { return *stage().single_thread; }
const Api& shared_api() { return *stage().thread_safe; }

std::vector<uint64_t> seeds(std::initializer_list<uint64_t> defaults) {
    const char* text = std::getenv("EDU_BATTERY_SEED");
    if (text == nullptr || *text == 0) return std::vector<uint64_t>(defaults);
    char* end = nullptr;
    errno = 0;
    unsigned long long value = std::strtoull(text, &end, 0);
    if (errno != 0 || end == text || *end != 0) {
        std::fprintf(stderr, "battery: EDU_BATTERY_SEED=%s is not a number\n", text);
        std::abort();
    }
    return {static_cast<uint64_t>(value)};
}

uint64_t Rng::next() {
    state_ += 0x9e3779b97f4a7c15ull;
    return mix(state_);
}

uint64_t Rng::below(uint64_t bound) { return next() % bound; }

uint64_t Rng::range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }

namespace {
// The pattern of one block: 8-byte words, word w = key ^ (w * odd constant), key from the id.
// Whole words are written and compared at once (cheap under sanitizers too).
static_assert(std::endian::native == std::endian::little, "pattern_at reads words as x86-64 does");
inline uint64_t pattern_word(uint64_t key, std::size_t word) {
    return key ^ (static_cast<uint64_t>(word) * 0x9e3779b97f4a7c15ull);
}
inline unsigned char pattern_at(uint64_t key, std::size_t offset) {
    return static_cast<unsigned char>(pattern_word(key, offset >> 3) >> ((offset & 7) * 8));
}
}  // namespace

unsigned char pattern_byte(uint64_t id, std::size_t offset) {
    return pattern_at(mix(id + 1), offset);
}

void fill(void* block, uint64_t id, std::size_t from, std::size_t to) {
    auto* bytes = static_cast<unsigned char*>(block);
    const uint64_t key = mix(id + 1);
    std::size_t i = from;
    for (; i < to && i % 8 != 0; ++i) bytes[i] = pattern_at(key, i);
    for (; i + 8 <= to; i += 8) {
        uint64_t word = pattern_word(key, i >> 3);
        std::memcpy(bytes + i, &word, 8);
    }
    for (; i < to; ++i) bytes[i] = pattern_at(key, i);
}

std::ptrdiff_t first_mismatch(const void* block, uint64_t id, std::size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(block);
    const uint64_t key = mix(id + 1);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        std::memcpy(&word, bytes + i, 8);
        if (word != pattern_word(key, i >> 3)) break;   // the byte loop below finds which
    }
    for (; i < n; ++i)
        if (bytes[i] != pattern_at(key, i)) return static_cast<std::ptrdiff_t>(i);
    return -1;
}

std::ptrdiff_t first_nonzero(const void* block, std::size_t n) {
    const auto* bytes = static_cast<const unsigned char*>(block);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t word;
        std::memcpy(&word, bytes + i, 8);
        if (word != 0) break;
    }
    for (; i < n; ++i)
        if (bytes[i] != 0) return static_cast<std::ptrdiff_t>(i);
    return -1;
}

std::string Shadow::add(const Block& block) {
    uintptr_t start = reinterpret_cast<uintptr_t>(block.ptr);
    uintptr_t end = start + (block.usable > 0 ? block.usable : 1);  // a 0-byte block is a point
    auto next = spans_.upper_bound(start);
    auto describe = [&](uintptr_t s, uintptr_t e) {
        char line[200];
        std::snprintf(line, sizeof line,
                      "block %s (id %llu, %zu usable) overlaps live span [%s, %s)",
                      hex(block.ptr).c_str(), static_cast<unsigned long long>(block.id),
                      block.usable, hex(reinterpret_cast<void*>(s)).c_str(),
                      hex(reinterpret_cast<void*>(e)).c_str());
        return std::string(line);
    };
    if (next != spans_.end() && next->first < end) return describe(next->first, next->second);
    if (next != spans_.begin()) {
        auto prev = std::prev(next);
        if (prev->second > start) return describe(prev->first, prev->second);
    }
    spans_.emplace_hint(next, start, end);
    live_.push_back(block);
    return {};
}

void Shadow::remove(std::size_t index) {
    spans_.erase(reinterpret_cast<uintptr_t>(live_[index].ptr));
    live_[index] = live_.back();
    live_.pop_back();
}

CheckResult require_heap_ok(const Api& heap) {
    CheckResult result = heap.check();
    INFO("checker: " << std::string(result.message));
    REQUIRE(result.ok);
    return result;
}

bool check_heap_ok(const Api& heap) {
    CheckResult result = heap.check();
    INFO("checker: " << std::string(result.message));
    CHECK(result.ok);
    return result.ok;
}

std::string hex(const void* ptr) {
    char text[24];
    std::snprintf(text, sizeof text, "0x%llx",
                  static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(ptr)));
    return text;
}

bool is_aligned(const void* ptr, std::size_t alignment) {
    return reinterpret_cast<uintptr_t>(ptr) % alignment == 0;
}

std::string ChildOutcome::describe() const {
    char head[96];
    if (exited) std::snprintf(head, sizeof head, "exit %d", exit_code);
    else if (signaled)
        std::snprintf(head, sizeof head, "signal %d (%s)", signal, strsignal(signal));
    else std::snprintf(head, sizeof head, "unknown end");
    return std::string(head) + ", stderr: \"" + stderr_text + "\"";
}

std::size_t ChildOutcome::stderr_lines() const {
    std::size_t lines = 0;
    for (char c : stderr_text) lines += c == '\n';
    if (!stderr_text.empty() && stderr_text.back() != '\n') ++lines;  // an unterminated last line
    return lines;
}

void require_one_line_abort(const char* stage, const char* call, const void* ptr,
                            std::initializer_list<const char*> words, const std::function<void()>& body) {
    ChildOutcome outcome = run_in_child(body);
    INFO("child: " << outcome.describe());
    REQUIRE(outcome.signaled);
    CHECK(outcome.signal == SIGABRT);
    CHECK(outcome.stderr_lines() == 1);
    CHECK(!outcome.stderr_text.empty());
    CHECK(outcome.stderr_text.back() == '\n');
    std::string head = std::string("edu-alloc ") + stage + ": " + call + "(" + hex(ptr) + "): ";
    CHECK(outcome.stderr_text.find(head) == 0);
    for (const char* word : words)
        CHECK_MESSAGE(outcome.stderr_text.find(word) != std::string::npos, "expected to find: " << word);
}

ChildOutcome run_in_child(const std::function<void()>& body, unsigned seconds,
                          const Stage* hooks) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    std::fflush(nullptr);  // nothing buffered may be written twice
    if (hooks) hooks->prepare_fork();
    pid_t pid = ::fork();
    if (hooks && pid != 0) hooks->after_fork_parent();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (hooks) hooks->after_fork_child();
        ::close(fds[0]);
        ::dup2(fds[1], 2);
        ::close(fds[1]);
        // doctest catches fatal signals to report a crashed test; the child must die of them.
        for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTERM, SIGALRM})
            ::signal(sig, SIG_DFL);
        ::alarm(seconds);
        body();
        ::_exit(0);
    }
    ::close(fds[1]);
    ChildOutcome outcome;
    char chunk[512];
    for (;;) {
        ssize_t n = ::read(fds[0], chunk, sizeof chunk);
        if (n > 0) outcome.stderr_text.append(chunk, static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR) break;
    }
    ::close(fds[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    outcome.exited = WIFEXITED(status);
    if (outcome.exited) outcome.exit_code = WEXITSTATUS(status);
    outcome.signaled = WIFSIGNALED(status);
    if (outcome.signaled) outcome.signal = WTERMSIG(status);
    return outcome;
}

void child_expect(bool ok, const char* what) {
    if (ok) return;
    // Nothing useful can be done if stderr is gone; the exit code still says "failed".
    if (::write(2, what, std::strlen(what)) < 0 || ::write(2, "\n", 1) < 0) ::_exit(2);
    ::_exit(1);
}

void child_expect_heap_ok(const Api& api, const char* what) {
    CheckResult result = api.check();
    if (result.ok) return;
    char line[320];
    std::snprintf(line, sizeof line, "%s: checker: %s", what, result.message);
    child_expect(false, line);
}

namespace {
// A "Vm...: N kB" line of /proc/self/status, in bytes; 0 if it cannot be read.
uint64_t status_bytes(const char* format) {
    unsigned long kib = 0;
    if (FILE* f = std::fopen("/proc/self/status", "r")) {
        char line[256];
        while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, format, &kib) == 1) break;
        std::fclose(f);
    }
    return uint64_t{kib} * 1024;
}
}  // namespace

namespace {
constexpr std::size_t kPage = 4096;

uint8_t page_byte(std::size_t page) { return static_cast<uint8_t>(page * 37 + 11); }

// Pages [from, to) of `block` get their byte; pages [0, to) must hold theirs afterwards.
void write_pages(void* block, std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) static_cast<uint8_t*>(block)[i * kPage] = page_byte(i);
}
bool pages_hold(const void* block, std::size_t to) {
    for (std::size_t i = 0; i < to; ++i)
        if (static_cast<const uint8_t*>(block)[i * kPage] != page_byte(i)) return false;
    return true;
}

// One realloc of a mapped block to `size` bytes, checked as grow_mapped_in_steps says.
void* resize_checked(const Api& api, int owner, void* p, std::size_t size) {
    MappedTotals before = mapped_totals(owner);
    void* q = api.realloc(p, size);
    child_expect(q != nullptr, "realloc refused to resize a mapped block");
    MappedTotals after = mapped_totals(owner);
    child_expect(mapped_block_size(owner, q) >= size && api.usable_size(q) >= size, "the resized block's size is wrong");
    child_expect(q == p || mapped_block_size(owner, p) == 0, "the mapped table kept the old address");
    child_expect(after.blocks == before.blocks, "the resize changed the number of mapped blocks");
    child_expect(mapped_calls(after, OsCall::mmap) == mapped_calls(before, OsCall::mmap) &&
                     mapped_calls(after, OsCall::munmap) == mapped_calls(before, OsCall::munmap),
                 "the resize mapped or unmapped (a copy)");
    child_expect(mapped_calls(after, OsCall::mremap) == mapped_calls(before, OsCall::mremap) + 1, "the resize made no mremap");
    return q;
}
}  // namespace

void grow_mapped_in_steps(const Api& api, int owner, std::size_t first, std::size_t step, std::size_t last) {
    void* p = api.malloc(first);
    child_expect(p != nullptr && mapped_block_size(owner, p) != 0, "the first block is not in a mapping of its own");
    write_pages(p, 0, first / kPage);
    for (std::size_t size = first + step; size <= last; size += step) {
        p = resize_checked(api, owner, p, size);
        child_expect(pages_hold(p, (size - step) / kPage), "a step lost the block's bytes");
        write_pages(p, (size - step) / kPage, size / kPage);
    }
    rlimit limit{};
    child_expect(getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY, "no address-space limit");
    errno = 0;
    child_expect(api.realloc(p, limit.rlim_cur) == nullptr && errno == ENOMEM,
                 "a resize to the whole address-space limit did not fail with ENOMEM");
    child_expect(mapped_block_size(owner, p) >= last && pages_hold(p, last / kPage), "a refused resize changed the block");
    void* shrunk = resize_checked(api, owner, p, first);
    child_expect(shrunk == p, "shrinking moved the block");
    child_expect(pages_hold(shrunk, first / kPage), "shrinking lost the block's bytes");
    child_expect_heap_ok(api, "the heap check failed");
    api.free(shrunk);
}

MapCountFull::MapCountFull() {
    unsigned long limit = 0;
    if (FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
        if (std::fscanf(f, "%lu", &limit) != 1) limit = 0;
        std::fclose(f);
    }
    child_expect(limit != 0, "cannot read /proc/sys/vm/max_map_count");
    bytes_ = (limit + 64) * 2 * kPage;   // every other page read-only: two mappings more each
    void* got = mmap(nullptr, bytes_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    child_expect(got != MAP_FAILED, "no room for the map count's reservation");
    reservation_ = static_cast<unsigned char*>(got);
    while (2 * split_ + 2 < bytes_ / kPage && mprotect(reservation_ + (2 * split_ + 1) * kPage, kPage, PROT_READ) == 0)
        ++split_;
    child_expect(errno == ENOMEM, "the reservation did not reach the map count's limit");
    // Each mprotect above made two mappings; the last one or two the limit allows come singly,
    // alternately readable and not, so that neighbours do not merge.
    for (; single_count_ < std::size(singles_); ++single_count_) {
        void* page = mmap(nullptr, kPage, single_count_ % 2 ? PROT_NONE : PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED) break;
        singles_[single_count_] = page;
    }
    child_expect(single_count_ < std::size(singles_) && errno == ENOMEM, "mmap is not refused at the map count's limit");
}

void MapCountFull::release() {
    if (reservation_ == nullptr) return;
    // PROT_NONE again from the top: each page merges with its neighbours, two mappings fewer a
    // call and none needed, so that the munmaps below find room for any split they make.
    for (std::size_t i = split_; i-- > 0;) mprotect(reservation_ + (2 * i + 1) * kPage, kPage, PROT_NONE);
    munmap(reservation_, bytes_);
    for (unsigned i = 0; i < single_count_; ++i) munmap(singles_[i], kPage);
    reservation_ = nullptr;
    single_count_ = 0;
}

void expect_refused_but_given_back(const void* at, std::size_t bytes) {
    child_expect(mapping_permissions(at) == "rw-p", "the map count's limit did not refuse the call (the test proves nothing)");
    child_expect(resident_bytes(at, bytes) == 0, "memory given back at the map count's limit stays resident");
}

void small_blocks_from_larger_free_ones(const Api& api, const std::function<void*(std::size_t)>& take) {
    constexpr int kMost = 4096;
    static void* large[kMost];
    static void* small[kMost];
    int n = 0;
    while (n < kMost && (large[n] = take(4000)) != nullptr) ++n;
    child_expect(n > 100 && n < kMost, "4,000-byte blocks: no NULL, or too few before it");
    for (int i = 0; i < n; i += 2) api.free(large[i]);
    errno = 1234;
    int served = 0;
    while (served < kMost && (small[served] = take(600)) != nullptr) {
        child_expect(api.usable_size(small[served]) >= 4000, "the block is not a larger bin's");
        child_expect(errno == 1234, "errno changed by a malloc that succeeded");
        std::memset(small[served], 7, 600);
        ++served;
    }
    child_expect(served > 0, "600 bytes refused while 4,000-byte blocks were free");
    child_expect(served >= (n + 1) / 2, "a free larger block was left unused");
    child_expect(errno == ENOMEM, "NULL without ENOMEM");
    require_heap_ok(api);
    for (int i = 0; i < served; ++i) api.free(small[i]);
    for (int i = 1; i < n; i += 2) api.free(large[i]);
    require_heap_ok(api);
}

void aligned_blocks_from_larger_free_ones(const Api& api, const std::function<void*(std::size_t)>& take,
                                          const std::function<void*(std::size_t, std::size_t)>& take_aligned) {
    constexpr int kMost = 4096;
    constexpr std::size_t kAlign = 4096;
    static void* fives[kMost];
    static void* eights[kMost];
    static void* aligned[2 * kMost];
    int n5 = 0, n8 = 0, na = 0;
    bool more5 = true, more8 = true;
    while ((more5 || more8) && n5 < kMost && n8 < kMost) {
        if (more5) {
            fives[n5] = take(5000);
            if (fives[n5] != nullptr) ++n5;
            else more5 = false;
        }
        if (more8) {
            eights[n8] = take(8000);
            if (eights[n8] != nullptr) ++n8;
            else more8 = false;
        }
    }
    child_expect(!more5 && !more8, "5,000- and 8,000-byte blocks: no NULL");
    child_expect(n5 > 20 && n8 > 20, "too few 5,000- or 8,000-byte blocks before the NULL");
    auto take_one_aligned = [&](const char* when) {
        void* p = take_aligned(kAlign, 600);
        if (p != nullptr) {
            child_expect(reinterpret_cast<uintptr_t>(p) % kAlign == 0, when);
            std::memset(p, 7, 600);
        }
        return p;
    };
    while (na < kMost && (aligned[na] = take_one_aligned("an aligned block is not 4 KiB-aligned")) != nullptr) ++na;
    child_expect(na < kMost, "aligned blocks: no NULL");
    for (int i = 0; i < n5; i += 2) api.free(fives[i]);
    for (int i = 0; i < n8; i += 2) api.free(eights[i]);
    errno = 1234;
    int served = 0;
    while (na < 2 * kMost &&
           (aligned[na] = take_one_aligned("a larger bin's block that breaks the alignment served it")) != nullptr) {
        child_expect(api.usable_size(aligned[na]) >= 8000, "the block is not an 8,192-byte bin's");
        child_expect(errno == 1234, "errno changed by an aligned_alloc that succeeded");
        ++na;
        ++served;
    }
    child_expect(served >= (n8 + 1) / 2, "a free 8,192-byte block was left unused");
    child_expect(errno == ENOMEM, "NULL without ENOMEM");
    require_heap_ok(api);
    for (int i = 0; i < na; ++i) api.free(aligned[i]);
    for (int i = 1; i < n5; i += 2) api.free(fives[i]);
    for (int i = 1; i < n8; i += 2) api.free(eights[i]);
    require_heap_ok(api);
}

long minor_faults() {
    rusage use{};
    getrusage(RUSAGE_THREAD, &use);
    return use.ru_minflt;
}

void checker_names_page_grid_faults(const Api& api, uint64_t& block_size, uintptr_t& start) {
    require_heap_ok(api);
    uint64_t size = block_size;
    block_size = size + 1;   // odd: no class is
    CheckResult no_class = api.check();
    block_size = size;
    uintptr_t at = start;
    start = at + 1;          // odd: on no class's grid
    CheckResult off_grid = api.check();
    start = at;
    CHECK(std::string(no_class.message).find("page block size is no class") != std::string::npos);
    CHECK(std::string(off_grid.message).find("page start not on its block grid") != std::string::npos);
    check_heap_ok(api);
}

void checker_names_one_block_page_lists(const Api& api, const std::function<void(bool)>& damage) {
    require_heap_ok(api);
    damage(true);
    CheckResult damaged = api.check();
    damage(false);
    CHECK(std::string(damaged.message).find("one-block page in use must hold its block, its free and local_free lists empty") !=
          std::string::npos);
    check_heap_ok(api);
}

void reused_large_segment_keeps_its_reach(const Api& api, const std::function<void*(std::size_t)>& take,
                                          const std::function<const void*(const void*)>& segment_of,
                                          const std::function<bool(const void*)>& is_cached,
                                          std::size_t small_usable) {
    constexpr std::size_t kKiB = 1024;
    void* p = take(1024 * kKiB);
    REQUIRE(p != nullptr);
    const void* segment = segment_of(p);
    std::size_t usable = api.usable_size(p);
    api.free(p);
    REQUIRE(is_cached(segment));
    long faults = minor_faults();
    void* q = take(300 * kKiB);   // under half the reach, within a quarter (S3.96)
    long taken = minor_faults() - faults;
    REQUIRE(q != nullptr);
    CHECK(segment_of(q) == segment);
    CHECK(api.usable_size(q) == usable);
    if (!kUnderSanitizer) CHECK(taken == 0);
    require_heap_ok(api);
    api.free(q);
    void* r = take(200 * kKiB);   // under a quarter of it
    REQUIRE(r != nullptr);
    CHECK(segment_of(r) == segment);
    CHECK(api.usable_size(r) == small_usable);
    api.free(r);
    require_heap_ok(api);
}

std::vector<char*> middle_of_three_pages(const std::function<char*()>& take,
                                         const std::function<const void*(const void*)>& page_of,
                                         std::vector<char*>& kept) {
    std::vector<char*> middle;
    char* p = take();
    const void* first = page_of(p);
    for (; page_of(p) == first; p = take()) kept.push_back(p);
    const void* second = page_of(p);
    for (; page_of(p) == second; p = take()) middle.push_back(p);
    kept.push_back(p);
    return middle;
}

unsigned char* map_page_not_ours(void* at) {
    void* got = mmap(at, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    child_expect(got == at, "cannot map a page at the address asked for");
    std::memset(got, 0x5a, kPage);
    return static_cast<unsigned char*>(got);
}

bool page_not_ours_intact(const unsigned char* page) {
    for (std::size_t i = 0; i < kPage; ++i)
        if (page[i] != 0x5a) return false;
    return true;
}

bool lock_pages(const void* at, std::size_t bytes) { return syscall(SYS_mlock, at, bytes) == 0; }
bool unlock_pages(const void* at, std::size_t bytes) { return syscall(SYS_munlock, at, bytes) == 0; }

std::string mapping_permissions(const void* at) {
    auto address = reinterpret_cast<uintptr_t>(at);
    std::string found;
    if (FILE* f = std::fopen("/proc/self/maps", "r")) {
        unsigned long lo = 0, hi = 0;
        char permissions[8] = {};
        char line[512];
        while (std::fgets(line, sizeof line, f))
            if (std::sscanf(line, "%lx-%lx %7s", &lo, &hi, permissions) == 3 && lo <= address && address < hi) {
                found = permissions;
                break;
            }
        std::fclose(f);
    }
    return found;
}

std::size_t resident_bytes(const void* at, std::size_t bytes) {
    std::vector<unsigned char> pages((bytes + kPage - 1) / kPage);
    child_expect(mincore(const_cast<void*>(at), bytes, pages.data()) == 0, "mincore failed: a page is not mapped");
    std::size_t resident = 0;
    for (unsigned char page : pages) resident += (page & 1) * kPage;
    return resident;
}

uint64_t data_bytes() { return status_bytes("VmData: %lu kB"); }
uint64_t address_space_bytes() { return status_bytes("VmSize: %lu kB"); }

}  // namespace edu::battery
