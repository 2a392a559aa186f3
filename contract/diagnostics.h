// contract/diagnostics.h: how a stage reports bad input, without allocating.
// `die` prints one line "edu-alloc <stage>: <call>(<pointer>): <what>" on stderr with write(2)
// and aborts; `LineWriter` formats into a fixed buffer for the stats printer and the checkers.
// Nothing here calls malloc: it runs inside the allocator, possibly as the process's malloc.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edu {

// Appends text and numbers to a caller's buffer, always NUL-terminated, silently truncating.
class LineWriter {
public:
    LineWriter(char* buffer, std::size_t capacity) : buf_(buffer), cap_(capacity) { buf_[0] = 0; }
    LineWriter& str(const char* s);
    LineWriter& dec(uint64_t value);
    LineWriter& hex(uint64_t value);          // 0x-prefixed
    LineWriter& ptr(const void* p) { return hex(reinterpret_cast<uintptr_t>(p)); }
    LineWriter& bytes(uint64_t value);        // 1536 -> "1.5 KiB"
    LineWriter& pad_to(std::size_t column);   // spaces up to a column
    const char* c_str() const { return buf_; }
    std::size_t size() const { return len_; }

private:
    char* buf_;
    std::size_t cap_;
    std::size_t len_ = 0;
};

// Writes all of `text` to file descriptor 2.
void write_stderr(const char* text);

// One line on stderr naming the stage, the call and the pointer, then abort(). The words are
// the call's: a stage that finds a freed block says "double free", which is right only for
// `free`; for realloc or usable_size the line says "use after free", and for an allocating
// call (the stage found the damage in its free lists) it names both possible causes.
[[noreturn]] void die(const char* stage, const char* call, const void* ptr, const char* what);

// A block a free list was about to hand out lacks the freed mark its stage writes into every
// free block (stages 2 and 3, [S2.28] and [S3.40]): something wrote into it after it was freed.
// `die` with the words both stages use: "free list corrupted: a free block lost its freed mark".
[[noreturn]] void die_lost_mark(const char* stage, const char* call, const void* block);

// The key of a stage's freed mark (stages 2 and 4 write address ^ key into free blocks,
// [S2.28] and [S4.48]): from getrandom(2), the clock if it has no entropy yet, top bit set.
// Drawn once, before the stage's first block exists.
uint64_t draw_mark_key();

// While one lives on this thread, `die` names `client` (the stage the program called) first
// and says which stage found the fault: stage 2 serves its large blocks from stage 1, and the
// program asked stage 2.
class OnBehalfOf {
public:
    explicit OnBehalfOf(const char* client);
    ~OnBehalfOf();
    OnBehalfOf(const OnBehalfOf&) = delete;
    OnBehalfOf& operator=(const OnBehalfOf&) = delete;

private:
    const char* saved_;
};

struct CheckResult;
// Records the first violated invariant in a checker's result: "<what> at <where> (<a> vs <b>)",
// the address and the two disagreeing counts being optional (0 = absent). Later calls keep the
// first message. Returns false, so a checker can `return violation(...)`.
bool violation(CheckResult* result, const char* what, uintptr_t where = 0, uint64_t a = 0, uint64_t b = 0);

// errno = ENOMEM, for the paths that return nullptr.
void set_enomem();
// The same, returning that nullptr, so a path that cannot serve a request ends with
// `return enomem();`.
void* enomem();

}  // namespace edu
