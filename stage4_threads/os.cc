// stage4_threads/os.cc: mmap and mprotect with their counts, and the footprint (munmap,
// madvise and exact mappings are contract/os.h's), all counted with relaxed atomics so that any
// thread may call them.
#include "stage4_threads/os.h"

#include <sys/mman.h>

#include <cerrno>

namespace edu::stage4 {
namespace {

OsCounters g_os;

void count(OsCall call) { g_os.calls[static_cast<unsigned>(call)].fetch_add(1, std::memory_order_relaxed); }

void* map(void* at, std::size_t size, int protection, int extra_flags) {
    count(OsCall::mmap);
    void* p = ::mmap(at, size, protection, MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

}  // namespace

const OsCounters& os_counters() { return g_os; }

// [S4.74] No MAP_NORESERVE (stage 3's S3.68): the reservation is PROT_NONE, which the
// system's commit does not charge; os_commit_range's mprotect is charged, so the overcommit
// policy refuses a block larger than memory and swap, as it refuses glibc's mmap. With the flag
// a 32 GiB block was granted on a 24 GiB machine.
void* os_reserve(std::size_t size) { return map(nullptr, size, PROT_NONE, 0); }
void* os_map(std::size_t size) { return map(nullptr, size, PROT_READ | PROT_WRITE, 0); }

bool os_map_writable_at(void* address, std::size_t size) { return edu::os_map_writable_at(address, size, count); }

bool os_commit_range(void* address, std::size_t size) {
    count(OsCall::mprotect);
    return ::mprotect(address, size, PROT_READ | PROT_WRITE) == 0;
}

bool os_release_range(void* address, std::size_t size) {
    int saved = errno;   // a free that gives memory back leaves errno alone, refused or not
    bool released = map(address, size, PROT_NONE, MAP_FIXED) != nullptr;
    if (!released) edu::os_decommit(address, size, count);   // [S4.76] the pages at least
    errno = saved;
    return released;
}

bool os_unmap(void* address, std::size_t size) { return edu::os_unmap(address, size, count); }

bool os_decommit(void* address, std::size_t size) {
    if (!edu::os_decommit(address, size, count)) return false;
    os_commit_bytes(-static_cast<int64_t>(size));
    return true;
}

void os_zero(void* block, std::size_t size) { zero_fill(block, size, count); }

void raise_peak(std::atomic<uint64_t>& peak, uint64_t value) {
    uint64_t seen = peak.load(std::memory_order_relaxed);
    while (seen < value && !peak.compare_exchange_weak(seen, value, std::memory_order_relaxed)) {
    }
}

void os_commit_bytes(int64_t bytes) {
    uint64_t now = g_os.footprint.fetch_add(static_cast<uint64_t>(bytes), std::memory_order_relaxed) +
                   static_cast<uint64_t>(bytes);
    g_os.changes.fetch_add(1, std::memory_order_relaxed);
    if (bytes > 0) raise_peak(g_os.peak_footprint, now);
}

}  // namespace edu::stage4
