// stage4_threads/os.cc: mmap, munmap and madvise with their counts, and the footprint, all
// counted with relaxed atomics so that any thread may call them.
#include "stage4_threads/os.h"

#include <sys/mman.h>
#include <sys/resource.h>

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

void* os_reserve(std::size_t size) { return map(nullptr, size, PROT_NONE, MAP_NORESERVE); }
bool os_address_space_limited() {
    rlimit limit{};
    return getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
}

void* os_map(std::size_t size) { return map(nullptr, size, PROT_READ | PROT_WRITE, 0); }

bool os_map_writable_at(void* address, std::size_t size) {
    void* p = map(address, size, PROT_READ | PROT_WRITE, MAP_FIXED_NOREPLACE);
    if (p == nullptr || p == address) return p != nullptr;
    os_unmap(p, size);   // a kernel older than 4.17 took the flag for a hint and placed it elsewhere
    errno = EEXIST;
    return false;
}

bool os_commit_range(void* address, std::size_t size) {
    count(OsCall::mprotect);
    return ::mprotect(address, size, PROT_READ | PROT_WRITE) == 0;
}

void os_release_range(void* address, std::size_t size) {
    map(address, size, PROT_NONE, MAP_FIXED | MAP_NORESERVE);
}

void os_unmap(void* address, std::size_t size) {
    count(OsCall::munmap);
    ::munmap(address, size);
}

void os_decommit(void* address, std::size_t size) {
    count(OsCall::madvise);
    ::madvise(address, size, MADV_DONTNEED);
    os_commit_bytes(-static_cast<int64_t>(size));
}

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
