// stage3_segments/os.cc: mmap and mprotect with their counts, and the footprint; munmap,
// madvise and exact mappings are contract/os.h's, counted here.
#include "stage3_segments/os.h"

#include <sys/mman.h>

#include "stage3_segments/types.h"

namespace edu::stage3 {
namespace {

OsCounters g_os;

void count(OsCall call) { ++g_os.calls[static_cast<unsigned>(call)]; }

// [S3.68] No MAP_NORESERVE: a PROT_NONE mapping is not charged to the system's commit anyway,
// and without the flag the mprotect that makes part of it writable is, so the kernel's
// overcommit policy judges a block as it judges glibc's mmap. With the flag nothing was ever
// charged, and under the default policy (vm.overcommit_memory=0), which refuses a single
// request larger than memory and swap, malloc of 32 GiB to 64 TiB returned a block on a
// 24 GiB machine where glibc says ENOMEM (limits_test's `machine` mode).
void* map(void* at, std::size_t size, int flags) {
    count(OsCall::mmap);
    void* p = ::mmap(at, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    return p == MAP_FAILED ? nullptr : p;
}

void* map(std::size_t size) { return map(nullptr, size, 0); }

}  // namespace

const OsCounters& os_counters() { return g_os; }

void* os_map_aligned(std::size_t size, std::size_t alignment) {
    void* p = map(size);
    if (!p) return nullptr;
    auto a = reinterpret_cast<uintptr_t>(p);
    if ((a & (alignment - 1)) == 0) return p;
    os_unmap(p, size);
    if (size + alignment < size) return nullptr;
    p = map(size + alignment);
    if (!p) return nullptr;
    a = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (a + alignment - 1) & ~(alignment - 1);
    std::size_t head = aligned - a, tail = alignment - head;
    if (head) os_unmap(p, head);
    if (tail) os_unmap(reinterpret_cast<void*>(aligned + size), tail);
    return reinterpret_cast<void*>(aligned);
}

bool os_map_writable_at(void* at, std::size_t size) { return edu::os_map_writable_at(at, size, count); }

void* os_where_mappings_go() {
    void* probe = map(kOsPage);
    if (probe) os_unmap(probe, kOsPage);
    return probe;
}

bool os_make_writable(void* address, std::size_t size) {
    count(OsCall::mprotect);
    return ::mprotect(address, size, PROT_READ | PROT_WRITE) == 0;
}

bool os_commit(void* address, std::size_t size) {
    if (!os_make_writable(address, size)) return false;
    os_commit_bytes(static_cast<int64_t>(size));
    return true;
}

bool os_unmap(void* address, std::size_t size) { return edu::os_unmap(address, size, count); }

bool os_decommit(void* address, std::size_t size) {
    if (!edu::os_decommit(address, size, count)) return false;
    os_commit_bytes(-static_cast<int64_t>(size));
    return true;
}

void os_zero(void* block, std::size_t size) { zero_fill(block, size, count); }

void os_commit_bytes(int64_t bytes) {
    g_os.footprint += static_cast<uint64_t>(bytes);
    if (g_os.footprint > g_os.peak_footprint) g_os.peak_footprint = g_os.footprint;
}

}  // namespace edu::stage3
