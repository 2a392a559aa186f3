// contract/debug.h: debug mode for any stage (EDU_OPTIONS="debug=on"), written once.
// debug_entry(stage, inner) returns an Api that wraps `inner` as CS61's dmalloc wraps malloc:
// fences, fill bytes, a bounded quarantine, reports naming the misuse, a leak list at exit.
// The stages never know; the preload shim, the battery and the tools choose the layer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract/allocator.h"

namespace edu {

// A debug block lives inside an ordinary block of the stage, between fences:
//
//    inner block (from the stage)                                     inner + usable
//    +---------------------------+---------------------------+------------------------+
//    | FD FD FD ... front fence   | payload: n bytes, CD when | FD FD FD ... tail fence |
//    | max(16, alignment) bytes   | new, DD once freed        | >= 16 bytes             |
//    +---------------------------+---------------------------+------------------------+
//                                ^ the pointer the program gets
//
// Size, state and allocation number live in a side table (mmap'd, never in the heap), so no
// overflow can forge them and any pointer the table does not hold is an invalid free. A
// changed front byte is an underflow and a changed tail byte an overflow, found at free (or
// realloc) and at exit. A freed block is filled with DD and waits in a quarantine of at most
// kDebugQuarantineBlocks blocks and kDebugQuarantineBytes bytes; a byte no longer DD when it
// leaves (or at exit) was written after free. Freeing it again meanwhile is a double free.
inline constexpr uint8_t kDebugFenceByte = 0xfd;
inline constexpr uint8_t kDebugNewByte = 0xcd;
inline constexpr uint8_t kDebugDeadByte = 0xdd;
inline constexpr std::size_t kDebugFrontBytes = 16;
inline constexpr std::size_t kDebugTailBytes = 16;
inline constexpr std::size_t kDebugQuarantineBlocks = 256;
inline constexpr std::size_t kDebugQuarantineBytes = std::size_t{4} << 20;

// First byte in [from, to) that is not `byte`, or 0; whole words where it can (debug modes
// scan every block they free, so this loop is most of their cost).
uintptr_t first_byte_not(uintptr_t from, uintptr_t to, uint8_t byte);

// The debug layer over `inner` (a stage's single_thread or thread_safe entry), serialised by a
// lock of its own. One layer per distinct `inner`, up to eight per process; the same `inner`
// always gets the same layer. Its walk is the stage's (the inner blocks, fences and quarantine
// included); its stats count the program's requests and live blocks (a quarantined block is
// not live), with the stage's footprint and system calls.
const Api& debug_entry(const Stage& stage, const Api& inner);

// Whether `api` is a debug layer (so a caller can tell what it holds).
bool is_debug_entry(const Api& api);

// At exit: checks every block's fences and fills (one line and abort at the first damaged
// one), then lists the blocks still live, at most `max_lines` of them, and a total line.
// Returns the number of live blocks. `api` must come from debug_entry.
uint64_t debug_finish(const Api& api, unsigned max_lines);

// Lets every quarantined block go (each checked first): the stage then holds only the blocks
// the program holds, e.g. before an option that needs an empty heap. `api` from debug_entry.
void debug_drain(const Api& api);

// fork(2) support for every layer in the process (the preload shim registers these).
void debug_prepare_fork();
void debug_after_fork_parent();
void debug_after_fork_child();

}  // namespace edu
