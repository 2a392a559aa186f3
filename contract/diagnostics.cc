// contract/diagnostics.cc: allocation-free formatting and the abort-with-one-line path.
#include "contract/diagnostics.h"

#include "contract/allocator.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sys/random.h>
#include <unistd.h>

namespace edu {

LineWriter& LineWriter::str(const char* s) {
    while (*s && len_ + 1 < cap_) buf_[len_++] = *s++;
    buf_[len_] = 0;
    return *this;
}

LineWriter& LineWriter::dec(uint64_t value) {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value);
    char out[24];
    for (int i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
    out[n] = 0;
    return str(out);
}

LineWriter& LineWriter::hex(uint64_t value) {
    char out[19] = "0x";
    int n = 0;
    char digits[16];
    do {
        digits[n++] = "0123456789abcdef"[value & 15];
        value >>= 4;
    } while (value);
    for (int i = 0; i < n; ++i) out[2 + i] = digits[n - 1 - i];
    out[2 + n] = 0;
    return str(out);
}

LineWriter& LineWriter::bytes(uint64_t value) {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    unsigned unit = 0;
    uint64_t whole = value, tenths = 0;
    while (whole >= 1024 && unit < 4) {
        tenths = (whole % 1024) * 10 / 1024;
        whole /= 1024;
        ++unit;
    }
    dec(whole);
    if (unit > 0 && whole < 100) str(".").dec(tenths);
    return str(" ").str(units[unit]);
}

LineWriter& LineWriter::pad_to(std::size_t column) {
    while (len_ < column && len_ + 1 < cap_) buf_[len_++] = ' ';
    buf_[len_] = 0;
    return *this;
}

void write_stderr(const char* text) {
    std::size_t left = std::strlen(text);
    while (left > 0) {
        ssize_t n = ::write(2, text, left);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return;
        }
        text += n;
        left -= static_cast<std::size_t>(n);
    }
}

namespace {

// The stage the program called, while another stage works for it on this thread.
__attribute__((tls_model("initial-exec"))) thread_local const char* t_client = nullptr;

bool starts_with(const char* text, const char* prefix) {
    return std::strncmp(text, prefix, std::strlen(prefix)) == 0;
}

// "double free ..." said of a call that frees nothing, in the words of that call.
void cause(LineWriter& w, const char* call, const char* what) {
    const char* kDouble = "double free";
    if (std::strcmp(call, "free") == 0 || !starts_with(what, kDouble)) {
        w.str(what);
        return;
    }
    const char* rest = what + std::strlen(kDouble);
    if (std::strcmp(call, "realloc") == 0 || std::strcmp(call, "usable_size") == 0) {
        w.str("use after free: ").str(call).str(" of a block that is already free").str(rest);
    } else {
        w.str("free list corrupted: a double free, or a write into a free block (an overflow from "
              "its neighbour or a use after free)").str(rest);
    }
}

}  // namespace

OnBehalfOf::OnBehalfOf(const char* client) : saved_(t_client) { t_client = client; }
OnBehalfOf::~OnBehalfOf() { t_client = saved_; }

void die(const char* stage, const char* call, const void* ptr, const char* what) {
    char line[384];
    LineWriter w(line, sizeof line);
    w.str("edu-alloc ").str(t_client ? t_client : stage).str(": ").str(call).str("(").ptr(ptr).str("): ");
    cause(w, call, what);
    if (t_client) w.str(" (found by ").str(stage).str(", which holds ").str(t_client).str("'s large blocks)");
    write_stderr(w.str("\n").c_str());
    std::abort();
}

void die_lost_mark(const char* stage, const char* call, const void* block) {
    die(stage, call, block,
        "free list corrupted: a free block lost its freed mark (a write into it after free, or an "
        "underflow or overflow from a neighbour)");
}

bool violation(CheckResult* result, const char* what, uintptr_t where, uint64_t a, uint64_t b) {
    if (!result->ok) return false;
    result->ok = false;
    LineWriter w(result->message, sizeof result->message);
    w.str(what);
    if (where) w.str(" at ").hex(where);
    if (a || b) w.str(" (").dec(a).str(" vs ").dec(b).str(")");
    return false;
}

void set_enomem() { errno = ENOMEM; }

void* enomem() {
    set_enomem();
    return nullptr;
}

uint64_t draw_mark_key() {
    uint64_t key = 0;
    if (getrandom(&key, sizeof key, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof key))
        key = __builtin_ia32_rdtsc() * 0x9e3779b97f4a7c15ull ^ reinterpret_cast<uintptr_t>(&key);
    return key | (uint64_t{1} << 63);
}

}  // namespace edu
