// contract/os.cc: the system calls of os.h, counted by the stage that makes them.
#include "contract/os.h"

#include <sys/mman.h>
#include <sys/resource.h>

#include <cerrno>

namespace edu {

bool os_address_space_limited() {
    rlimit limit{};
    return getrlimit(RLIMIT_AS, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY;
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

void os_unmap(void* address, std::size_t size, OsCount count) {
    count(OsCall::munmap);
    ::munmap(address, size);
}

void os_decommit(void* address, std::size_t size, OsCount count) {
    count(OsCall::madvise);
    ::madvise(address, size, MADV_DONTNEED);
}

}  // namespace edu
