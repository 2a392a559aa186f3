// contract/os.cc: the system calls of os.h, counted by the stage that makes them.
#include "contract/os.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace edu {

bool os_address_space_limited() {
    rlimit limit{};
    return getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
}

bool os_data_limited() {
    rlimit limit{};
    return getrlimit(RLIMIT_DATA, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
}

bool os_map_writable_at(void* at, std::size_t size, OsCount count) {
    count(OsCall::mmap);
    void* p = ::mmap(at, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (p == at) return true;
    if (p != MAP_FAILED) {   // placed elsewhere: an old kernel took the flag for a hint
        os_unmap(p, size, count);
        errno = EEXIST;
    }
    return false;
}

bool os_unmap(void* address, std::size_t size, OsCount count) {
    int saved = errno;
    count(OsCall::munmap);
    if (::munmap(address, size) == 0) return true;
    os_decommit(address, size, count);   // refused: the pages at least (it keeps errno)
    errno = saved;
    return false;
}

bool os_decommit(void* address, std::size_t size, OsCount count) {
    int saved = errno;
    count(OsCall::madvise);
    bool done = ::madvise(address, size, MADV_DONTNEED) == 0;
    errno = saved;
    return done;
}

namespace {

bool reads_zero(uintptr_t from, uintptr_t to) {
    for (auto* word = reinterpret_cast<const uint64_t*>(from); word < reinterpret_cast<const uint64_t*>(to); ++word)
        if (*word != 0) return false;
    return true;
}

}  // namespace

void zero_fill_large(void* p, std::size_t n, OsCount count) {
    auto start = reinterpret_cast<uintptr_t>(p), end = start + n;
    const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    uintptr_t first = (start + page - 1) & ~(page - 1), last = end & ~(page - 1);
    uintptr_t fresh = first;   // the first whole page that reads as zero, `last` if none
    while (fresh < last && !reads_zero(fresh, fresh + page)) fresh += page;
    if (fresh >= last) {
        std::memset(p, 0, n);
        return;
    }
    std::memset(p, 0, fresh - start);
    std::memset(reinterpret_cast<void*>(last), 0, end - last);
    int saved = errno;
    count(OsCall::madvise);
    if (::madvise(reinterpret_cast<void*>(fresh), last - fresh, MADV_DONTNEED) != 0)   // locked pages
        std::memset(reinterpret_cast<void*>(fresh), 0, last - fresh);                 // (mlockall) stay
    errno = saved;
}

}  // namespace edu
