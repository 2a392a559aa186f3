// stage2_pools/os.cc: mmap and munmap, each call counted in Counters::os_calls and every byte
// in Counters::mapped_bytes (and the footprint peak).
#include "stage2_pools/os.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstdint>

#include "contract/os.h"
#include "stage2_pools/stats.h"
#include "stage2_pools/types.h"

namespace edu::stage2 {
namespace {

// A refused mapping leaves errno as it was: a caller that gives up says ENOMEM itself
// (enomem()), and one that goes on without it (a raw table that stays as it is, a small block
// from stage 1: [S2.31]) must leave errno untouched, as any call that succeeds does.
void* map_at(void* hint, std::size_t bytes) {
    ++g_heap.counters.os_calls[static_cast<unsigned>(OsCall::mmap)];
    int saved = errno;
    void* p = ::mmap(hint, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    errno = saved;
    return p == MAP_FAILED ? nullptr : p;
}

void count_call(OsCall call) { ++g_heap.counters.os_calls[static_cast<unsigned>(call)]; }

// errno kept, a refusal's pages given back ([S2.33]).
bool unmap_counted(void* address, std::size_t bytes) { return edu::os_unmap(address, bytes, &count_call); }

}  // namespace

void os_zero(void* block, std::size_t bytes) { zero_fill(block, bytes, &count_call); }

void* os_map(std::size_t bytes) {
    void* p = map_at(nullptr, bytes);
    if (p) note_mapped(bytes);
    return p;
}

// [S2.8] Aligned arenas. The kernel only promises page alignment. Asking at a hint first
// usually succeeds, since the kernel places mappings next to each other (downwards); when it
// does not, map `alignment` extra bytes, keep the aligned part and give back both ends:
//
//    p                  aligned                         aligned + bytes        p + over
//    |-- head (unmap) --|========= the arena ===========|-- tail (unmap) --|
void* os_map_aligned(std::size_t bytes, std::size_t alignment, void* hint) {
    if (hint) {
        void* p = map_at(hint, bytes);
        if (p && (reinterpret_cast<uintptr_t>(p) & (alignment - 1)) == 0) {
            note_mapped(bytes);
            return p;
        }
        if (p) unmap_counted(p, bytes);
    }
    std::size_t over = bytes + alignment;
    if (over < bytes) return nullptr;
    char* p = static_cast<char*>(map_at(nullptr, over));
    if (!p) return nullptr;
    uintptr_t start = reinterpret_cast<uintptr_t>(p);
    uintptr_t aligned = (start + alignment - 1) & ~(uintptr_t{alignment} - 1);
    std::size_t head = aligned - start;
    std::size_t tail = over - head - bytes;
    if (head) unmap_counted(p, head);
    if (tail) unmap_counted(reinterpret_cast<char*>(aligned) + bytes, tail);
    note_mapped(bytes);
    return reinterpret_cast<void*>(aligned);
}

bool os_unmap(void* address, std::size_t bytes) {
    if (!unmap_counted(address, bytes)) return false;
    note_unmapped(bytes);
    return true;
}

}  // namespace edu::stage2
