// stage2_pools/debug.h: the debug mode (option "debug"): fences around every block, fill
// bytes for new and freed memory, a quarantine, and a report naming what went wrong.
// Entry points: debug_malloc, debug_free, debug_realloc, debug_usable, debug_drain,
// debug_inspect (for the checker). Blocks come from pools or stage 1 as usual.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/debug.h"

namespace edu::stage2 {

// [S2.22] A debug block: the program's n bytes sit between fences inside an ordinary
// block (a pool block when it fits, else a stage-1 block), like CPython's PYTHONMALLOC=debug.
//
//    inner block                                                            inner end
//    +---------+---------------+----------------------------+------------------+
//    |  n (8)  | FD FD .. (8)  | payload: n bytes, CD when   | FD FD FD ...     |
//    |         | front fence   | new, DD once freed          | tail fence >= 8  |
//    +---------+---------------+----------------------------+------------------+
//                              ^ user pointer
//
// An aligned request (a > 16) puts the user pointer a bytes into an a-aligned stage-1 block
// and fills the extra front with FD too. At free: a front byte changed is an underflow, a
// tail byte changed an overflow; the block is then filled with DD and waits in a quarantine
// of at most kQuarantineSlots blocks and kQuarantineBytes bytes. When it leaves, any byte no
// longer DD means it was written after free. Each finding prints the block, its size and the
// bytes found, then aborts.
// The fill bytes are CPython's, as the contract's debug layer (contract/debug.h) uses them.
inline constexpr uint8_t kForbiddenByte = kDebugFenceByte;   // FD: fences (PYMEM_FORBIDDENBYTE)
inline constexpr uint8_t kCleanByte = kDebugNewByte;         // CD: new payload (PYMEM_CLEANBYTE)
inline constexpr uint8_t kDeadByte = kDebugDeadByte;         // DD: freed payload (PYMEM_DEADBYTE)
inline constexpr std::size_t kFrontBytes = 16;    // size word + front fence
inline constexpr std::size_t kTailBytes = 8;      // least tail fence
inline constexpr std::size_t kQuarantineSlots = 64;
inline constexpr std::size_t kQuarantineBytes = std::size_t{1} << 20;  // bigger: freed at once

// A word of heap memory, read without claiming a type for it.
inline uint64_t load_word(uintptr_t address) {
    uint64_t word;
    __builtin_memcpy(&word, reinterpret_cast<const void*>(address), sizeof word);
    return word;
}
inline constexpr uint64_t kForbiddenWord = kForbiddenByte * 0x0101010101010101ull;  // intact front fence
inline constexpr uint64_t kDeadWord = kDeadByte * 0x0101010101010101ull;  // a front fence after free

void* debug_malloc(std::size_t n, std::size_t alignment);
void debug_free(void* user, const char* call);
void* debug_realloc(void* user, std::size_t n);
std::size_t debug_usable(const void* user);

// Releases every quarantined block (checking it first), e.g. before debug mode is switched off.
void debug_drain();
uint64_t debug_quarantined();

// The checker's view of one debug block whose user pointer is `user` and inner block ends at
// `inner_end`: writes into `why` and returns false if a fence or a dead fill is damaged.
// `quarantined` says whether the block sits in quarantine (its front fence reads DD).
bool debug_inspect(uintptr_t inner, uintptr_t user, uintptr_t inner_end, bool* quarantined,
                   char* why, std::size_t why_size);

}  // namespace edu::stage2
