// tools/diff/workload.cc: the built-in workloads, the malloc-lab trace reader and writer, and
// the ltrace converter. Everything is deterministic: a workload is a function of its seed.
#include "tools/diff/workload.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <sstream>
#include <unordered_map>

namespace edu::diff {
namespace {

// xorshift32 with HAKMEM's shifts (13, 17, 5); never returns 0 for a non-zero state.
struct XorShift32 {
    uint32_t x;
    explicit XorShift32(uint64_t seed) : x(static_cast<uint32_t>(seed * 2654435761u) | 1u) {}
    uint32_t next() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        return x;
    }
    uint32_t below(uint32_t n) { return next() % n; }
};

// Hands out ids and remembers which are live, so generators stay valid by construction.
struct Builder {
    Workload* w;
    std::vector<uint32_t> free_ids;
    uint32_t alloc(uint64_t size) {
        uint32_t id;
        if (!free_ids.empty()) {
            id = free_ids.back();
            free_ids.pop_back();
        } else {
            id = w->ids++;
        }
        w->ops.push_back({Op::alloc, id, size, line()});
        return id;
    }
    void free(uint32_t id) {
        w->ops.push_back({Op::free, id, 0, line()});
        free_ids.push_back(id);
    }
    void realloc(uint32_t id, uint64_t size) { w->ops.push_back({Op::realloc, id, size, line()}); }
    // The line the next operation takes in format_trace's output (after its four header lines).
    uint32_t line() const { return static_cast<uint32_t>(w->ops.size() + 5); }
};

void ring(uint64_t seed, double scale, Builder& b) {
    const uint32_t slots = 8192;
    const uint64_t cycles = static_cast<uint64_t>(200000 * scale);
    std::vector<int64_t> slot(slots, -1);
    XorShift32 rng(seed);
    auto step = [&] {
        uint32_t r = rng.next();
        int64_t& s = slot[r % slots];
        if (s >= 0) {
            b.free(static_cast<uint32_t>(s));
            s = -1;
        } else {
            s = b.alloc(16 + (r & 0x3ff));
        }
    };
    for (uint64_t i = 0; i < cycles / 10; ++i) step();  // the prefault pass
    for (uint64_t i = 0; i < cycles; ++i) step();
    for (int64_t s : slot)
        if (s >= 0) b.free(static_cast<uint32_t>(s));
}

void fragment(uint64_t seed, double scale, Builder& b) {
    XorShift32 rng(seed);
    const uint32_t pairs = static_cast<uint32_t>(8000 * scale);
    std::vector<uint32_t> large;
    for (int round = 0; round < 4; ++round) {
        std::vector<uint32_t> small;
        for (uint32_t i = 0; i < pairs; ++i) {
            small.push_back(b.alloc(16 + rng.below(49)));     // 16..64
            large.push_back(b.alloc(256 + rng.below(769)));   // 256..1024
        }
        for (uint32_t id : small) b.free(id);                 // holes only small blocks fit
        std::vector<uint32_t> medium;
        for (uint32_t i = 0; i < pairs / 2; ++i) medium.push_back(b.alloc(100 + rng.below(101)));
        for (uint32_t id : medium) b.free(id);
        // Free half of the large blocks, at random, before the next round.
        for (std::size_t i = large.size(); i > 1; --i) std::swap(large[i - 1], large[rng.below(static_cast<uint32_t>(i))]);
        for (std::size_t i = 0; i < large.size() / 2; ++i) b.free(large[i]);
        large.erase(large.begin(), large.begin() + static_cast<std::ptrdiff_t>(large.size() / 2));
    }
    for (uint32_t id : large) b.free(id);
}

void realloc_growth(uint64_t seed, double scale, Builder& b) {
    XorShift32 rng(seed);
    const uint32_t blocks = 256;
    const uint64_t target = static_cast<uint64_t>(16384 * scale);
    std::vector<uint32_t> id(blocks);
    std::vector<uint64_t> size(blocks, 16);
    for (uint32_t i = 0; i < blocks; ++i) id[i] = b.alloc(16);
    std::vector<uint32_t> growing(blocks);
    for (uint32_t i = 0; i < blocks; ++i) growing[i] = i;
    while (!growing.empty()) {
        uint32_t k = rng.below(static_cast<uint32_t>(growing.size()));
        uint32_t i = growing[k];
        size[i] += 16 + rng.below(241);
        b.realloc(id[i], size[i]);
        if (size[i] >= target) {
            growing[k] = growing.back();
            growing.pop_back();
        }
    }
    for (uint32_t i = 0; i < blocks; ++i) b.free(id[i]);
}

void phase(uint64_t seed, double scale, Builder& b) {
    XorShift32 rng(seed);
    const uint32_t n = static_cast<uint32_t>(50000 * scale);
    std::vector<uint32_t> live;
    for (uint32_t i = 0; i < n; ++i) live.push_back(b.alloc(16 + rng.below(497)));
    for (std::size_t i = live.size(); i > 1; --i) std::swap(live[i - 1], live[rng.below(static_cast<uint32_t>(i))]);
    std::size_t keep = live.size() / 10;  // free 90%, in random order
    for (std::size_t i = keep; i < live.size(); ++i) b.free(live[i]);
    live.resize(keep);
    for (uint32_t i = 0; i < n / 2; ++i) live.push_back(b.alloc(16 + rng.below(497)));
    for (uint32_t id : live) b.free(id);
}

struct Builtin {
    const char* name;
    void (*make)(uint64_t, double, Builder&);
};
constexpr Builtin kBuiltins[] = {
    {"ring", &ring},
    {"fragment", &fragment},
    {"realloc", &realloc_growth},
    {"phase", &phase},
};

bool parse_number(const std::string& word, uint64_t* out) {
    if (word.empty() || word.size() > 20) return false;
    for (char c : word)
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    errno = 0;
    unsigned long long v = std::strtoull(word.c_str(), nullptr, 10);
    if (errno) return false;
    *out = v;
    return true;
}

std::vector<std::string> words(const std::string& line) {
    std::vector<std::string> out;
    std::size_t i = 0;
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; };
    while (i < line.size()) {
        while (i < line.size() && blank(line[i])) ++i;
        std::size_t start = i;
        while (i < line.size() && !blank(line[i])) ++i;
        if (i > start) out.push_back(line.substr(start, i - start));
    }
    return out;
}

// Reads one line of at most kMaxLine bytes (NUL bytes included) into `line`. Returns false at
// the end of the input, or with `error` set when the line is longer.
bool read_line(std::istream& in, const std::string& source, uint64_t number, std::string& line, std::string* error) {
    static thread_local char buffer[kMaxLine + 2];
    in.getline(buffer, sizeof buffer);
    std::streamsize got = in.gcount();
    if (in.fail() && !in.eof() && got == static_cast<std::streamsize>(sizeof buffer - 1)) {
        *error = source + ":" + std::to_string(number) + ": line longer than " + std::to_string(kMaxLine) +
                 " bytes (starts '" + printable(std::string(buffer, 24), 24) + "')";
        return false;
    }
    if (got == 0 && in.fail()) return false;  // the end (or an unreadable input: the caller checks bad())
    bool had_newline = !in.eof();
    line.assign(buffer, static_cast<std::size_t>(got) - (had_newline ? 1 : 0));
    in.clear(in.rdstate() & ~std::ios::failbit);
    return true;
}

std::string at(const std::string& source, uint64_t line) { return source + ":" + std::to_string(line) + ": "; }

}  // namespace

std::vector<std::string> builtin_names() {
    std::vector<std::string> names;
    for (const Builtin& b : kBuiltins) names.push_back(b.name);
    return names;
}

bool make_builtin(const std::string& name, uint64_t seed, double scale, Workload* out) {
    for (const Builtin& b : kBuiltins) {
        if (name != b.name) continue;
        *out = Workload{};
        out->name = name;
        Builder builder{out, {}};
        b.make(seed, scale, builder);
        return true;
    }
    return false;
}

std::string printable(const std::string& text, std::size_t max) {
    std::string out;
    static const char* const hex = "0123456789abcdef";
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (i == max) return out + "...";
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f && c != '\\') out += static_cast<char>(c);
        else out += std::string("\\x") + hex[c >> 4] + hex[c & 15];
    }
    return out;
}

bool parse_trace(std::istream& in, const std::string& source, Workload* out, std::string* error) {
    *out = Workload{};
    out->name = source;
    error->clear();
    enum : uint8_t { unseen, live, freed };
    std::vector<uint8_t> state;
    std::vector<uint32_t> line_of;   // the line that last allocated or freed each id
    std::vector<std::pair<uint64_t, uint64_t>> header;  // (value, line)
    auto fail = [&](uint64_t line, const std::string& what) {
        *error = at(source, line) + what;
        return false;
    };
    std::string line;
    uint64_t number = 0;
    bool in_header = true;
    while (true) {
        if (!read_line(in, source, number + 1, line, error)) {
            if (!error->empty()) return false;
            break;
        }
        ++number;
        if (number > UINT32_MAX) return fail(number, "more than 4294967295 lines");
        std::vector<std::string> w = words(line);
        if (w.empty() || w[0][0] == '#') continue;
        uint64_t value = 0;
        if (in_header && w.size() == 1 && parse_number(w[0], &value)) {
            header.push_back({value, number});
            continue;
        }
        in_header = false;
        // `@N` after an operation: the thread that does it.
        uint8_t thread = 1;
        if (w.size() > 1 && w.back()[0] == '@') {
            uint64_t t = 0;
            if (!parse_number(w.back().substr(1), &t) || t < 1 || t > kMaxThreads)
                return fail(number, "bad thread '" + printable(w.back()) + "' (threads are @1..@" +
                                        std::to_string(kMaxThreads) + ")");
            thread = static_cast<uint8_t>(t);
            w.pop_back();
        }
        const std::string& verb = w[0];
        std::size_t want = verb == "f" ? 2 : 3;
        if ((verb != "a" && verb != "f" && verb != "r") || w.size() != want)
            return fail(number, "expected 'a <id> <size>', 'f <id>' or 'r <id> <size>', found '" + printable(line) + "'");
        if (out->ops.size() == kMaxOps)
            return fail(number, "more than " + std::to_string(kMaxOps) + " operations (the limit of a trace)");
        const auto at_line = static_cast<uint32_t>(number);
        if (verb == "f" && w[1] == "-1") {  // the other dialect's free(NULL)
            out->ops.push_back({Op::free, kNoBlock, 0, at_line, thread});
            continue;
        }
        uint64_t id = 0, size = 0;
        if (!parse_number(w[1], &id)) return fail(number, "bad block id '" + printable(w[1]) + "'");
        if (id >= kMaxIds)
            return fail(number, "block id " + w[1] + " is beyond the limit (ids are 0.." + std::to_string(kMaxIds - 1) + ")");
        if (want == 3 && !parse_number(w[2], &size)) return fail(number, "bad size '" + printable(w[2]) + "'");
        if (size > kMaxSize)
            return fail(number, "size " + w[2] + " is beyond the limit of " + std::to_string(kMaxSize) + " bytes (1 TiB)");
        if (id >= state.size()) {
            state.resize(id + 1, unseen);
            line_of.resize(id + 1, 0);
        }
        if (verb == "a") {
            if (state[id] == live)
                return fail(number, "block " + std::to_string(id) + " is already live (allocated at line " +
                                        std::to_string(line_of[id]) + ")");
            state[id] = live;
            out->ops.push_back({Op::alloc, static_cast<uint32_t>(id), size, at_line, thread});
        } else if (state[id] == freed) {
            return fail(number, std::string(verb == "f" ? "double free of block " : "realloc of freed block ") +
                                    std::to_string(id) + " (freed at line " + std::to_string(line_of[id]) + ")");
        } else if (verb == "f") {
            if (state[id] == unseen) return fail(number, "free of block " + std::to_string(id) + ", never allocated");
            state[id] = freed;
            out->ops.push_back({Op::free, static_cast<uint32_t>(id), 0, at_line, thread});
        } else {  // realloc; of an id never allocated: realloc(NULL, size), i.e. malloc
            state[id] = live;
            out->ops.push_back({Op::realloc, static_cast<uint32_t>(id), size, at_line, thread});
        }
        line_of[id] = at_line;
    }
    if (in.bad()) return fail(number + 1, "read error");
    if (out->ops.empty())
        return fail(number ? number : 1, number ? "no operations (only a header or comments)" : "no operations (the file is empty)");
    out->ids = static_cast<uint32_t>(state.size());
    // mdriver's header: suggested heap size, number of ids, number of operations, weight.
    if (header.size() >= 3) {
        if (header[1].first != out->ids)
            out->warnings.push_back(at(source, header[1].second) + "warning: the header says " +
                                    std::to_string(header[1].first) + " ids, the trace uses " + std::to_string(out->ids));
        if (header[2].first != out->ops.size())
            out->warnings.push_back(at(source, header[2].second) + "warning: the header says " +
                                    std::to_string(header[2].first) + " operations, the trace has " +
                                    std::to_string(out->ops.size()));
    }
    return true;
}

bool parse_trace(const std::string& text, const std::string& source, Workload* out, std::string* error) {
    std::istringstream in(text);
    return parse_trace(in, source, out, error);
}

Peak live_peak(const Workload& w, uint64_t servable, uint64_t stop_above) {
    std::vector<uint64_t> size(w.ids, 0);
    Peak peak;
    uint64_t live = 0;
    for (std::size_t i = 0; i < w.ops.size(); ++i) {
        const Op& op = w.ops[i];
        if (op.id == kNoBlock) continue;
        uint64_t now = op.kind == Op::free ? 0 : op.size;
        if (now > servable) {
            if (op.kind == Op::alloc) now = 0;       // fails: the id holds NULL
            else continue;                           // a failed realloc keeps the old block
        }
        live = live - size[op.id] + now;
        size[op.id] = now;
        if (live > peak.bytes) peak = {live, i};
        if (live > stop_above) break;
    }
    return peak;
}

std::string format_trace(const Workload& w) {
    std::ostringstream out;
    out << "0\n" << w.ids << "\n" << w.ops.size() << "\n1\n";
    for (const Op& op : w.ops) {
        switch (op.kind) {
            case Op::alloc: out << "a " << op.id << " " << op.size; break;
            case Op::free: out << "f " << (op.id == kNoBlock ? std::string("-1") : std::to_string(op.id)); break;
            case Op::realloc: out << "r " << op.id << " " << op.size; break;
        }
        if (op.thread != 1) out << " @" << unsigned{op.thread};
        out << "\n";
    }
    return out.str();
}

bool parse_ltrace(std::istream& in, const std::string& source, Workload* out, std::string* error, uint64_t* dropped) {
    *out = Workload{};
    out->name = source;
    error->clear();
    uint64_t dropped_here = 0;
    std::unordered_map<uint64_t, uint32_t> live;  // address -> id
    std::vector<uint32_t> released;                // ids of realloc(p, 0) = NULL (below)
    Builder b{out, {}};
    std::string line;
    uint64_t number = 0;
    auto fail = [&](const std::string& what) {
        *error = at(source, number ? number : 1) + what;
        return false;
    };
    auto number_at = [](const std::string& s, std::size_t pos, int base, bool* ok) {
        while (pos < s.size() && s[pos] == ' ') ++pos;
        char* end = nullptr;
        errno = 0;
        unsigned long long v = pos < s.size() && std::isxdigit(static_cast<unsigned char>(s[pos]))
                                   ? std::strtoull(s.c_str() + pos, &end, base) : 0;
        *ok = end && end != s.c_str() + pos && errno == 0;
        return static_cast<uint64_t>(v);
    };
    while (read_line(in, source, number + 1, line, error)) {
        ++number;
        if (line.find("unfinished") != std::string::npos || line.find("resumed") != std::string::npos)
            return fail("interleaved threads ('unfinished' / 'resumed'); trace one thread, or run ltrace without -f");
        // Find the call: the earliest of the four names followed by '('.
        static const char* const kCalls[] = {"realloc(", "calloc(", "malloc(", "free("};
        std::size_t call_at = std::string::npos;
        const char* call = nullptr;
        for (const char* c : kCalls) {
            std::size_t p = line.find(c);
            if (p != std::string::npos && (p == 0 || !std::isalnum(static_cast<unsigned char>(line[p - 1])) || line[p - 1] == '>') &&
                p < call_at) {
                call_at = p;
                call = c;
            }
        }
        if (!call) continue;  // some other line ltrace prints (signals, exit)
        // `libc.so.6->malloc(...)`: the C library calling itself (qsort, fopen, ...). The program
        // never made that call, and ltrace reads its arguments with the wrong prototype.
        std::size_t arrow = line.rfind("->", call_at);
        if (arrow != std::string::npos && arrow + 2 == call_at && line.compare(0, arrow, "libc.so.6") == 0) {
            ++dropped_here;
            continue;
        }
        if (out->ops.size() >= kMaxOps) return fail("more than " + std::to_string(kMaxOps) + " operations (the limit of a trace)");
        std::size_t args = call_at + std::strlen(call);
        std::size_t eq = line.rfind("= ");
        bool ok1 = true, ok2 = true, ok3 = true;
        std::string name(call, std::strlen(call) - 1);
        if (name == "free") {
            uint64_t addr = number_at(line, args, 16, &ok1);
            auto it = live.find(addr);
            if (ok1 && it != live.end()) {
                b.free(it->second);
                out->ops.back().line = static_cast<uint32_t>(number);
                live.erase(it);
            }
            continue;
        }
        if (eq == std::string::npos) continue;
        uint64_t result = number_at(line, eq + 2, 16, &ok3);
        if (name == "realloc" && (ok3 ? result == 0 : line.compare(eq + 2, 3, "nil") == 0)) {
            // realloc(p, 0) = NULL: glibc freed p (C17 leaves it to the implementation). Kept as
            // `r id 0`, which each stage answers its own way; p, no longer the program's, may come
            // back from a later malloc, so the id leaves `live` and is freed at the end.
            uint64_t first = number_at(line, args, 16, &ok1);
            std::size_t comma = line.find(',', args);
            uint64_t size = comma == std::string::npos ? 1 : number_at(line, comma + 1, 10, &ok2);
            auto it = ok1 && ok2 && size == 0 ? live.find(first) : live.end();
            if (first != 0 && it != live.end()) {
                b.realloc(it->second, 0);
                out->ops.back().line = static_cast<uint32_t>(number);
                released.push_back(it->second);
                live.erase(it);
            }
            continue;   // any other NULL: a failed realloc, which keeps the old block
        }
        if (!ok3 || result == 0) continue;  // failed or nil: nothing allocated
        uint64_t size = 0;
        if (name == "malloc") {
            size = number_at(line, args, 10, &ok1);
            if (!ok1) return fail("cannot read malloc's size in '" + printable(line) + "'");
        } else {
            uint64_t first = number_at(line, args, name == "calloc" ? 10 : 16, &ok1);
            std::size_t comma = line.find(',', args);
            size = comma == std::string::npos ? 0 : number_at(line, comma + 1, 10, &ok2);
            if (!ok1 || !ok2 || comma == std::string::npos)
                return fail("cannot read " + name + "'s arguments in '" + printable(line) + "'");
            if (name == "calloc") {
                if (first && size > UINT64_MAX / first)
                    return fail("calloc(" + std::to_string(first) + ", " + std::to_string(size) +
                                ") overflows, yet it returned a block: ltrace misread the arguments");
                size *= first;
            } else {
                auto it = live.find(first);
                if (first != 0 && it != live.end()) {
                    if (size > kMaxSize) return fail("size " + std::to_string(size) + " is beyond the limit of 1 TiB");
                    uint32_t id = it->second;
                    live.erase(it);
                    b.realloc(id, size);
                    out->ops.back().line = static_cast<uint32_t>(number);
                    live[result] = id;
                    continue;
                }
            }
        }
        if (size > kMaxSize) return fail("size " + std::to_string(size) + " is beyond the limit of 1 TiB");
        if (out->ids >= kMaxIds && b.free_ids.empty()) return fail("more than " + std::to_string(kMaxIds) + " blocks live at once");
        live[result] = b.alloc(size);
        out->ops.back().line = static_cast<uint32_t>(number);
    }
    if (!error->empty()) return false;
    for (const auto& [addr, id] : live) {
        (void)addr;
        b.free(id);  // the program's leaks are freed at the end, so every stage drains
        out->ops.back().line = static_cast<uint32_t>(number);
    }
    for (uint32_t id : released) {
        b.free(id);  // what the stages answered to realloc(p, 0); glibc's column frees NULL
        out->ops.back().line = static_cast<uint32_t>(number);
    }
    if (dropped) *dropped = dropped_here;
    if (out->ops.empty()) return fail("no malloc, calloc, realloc or free calls in this ltrace output");
    return true;
}

bool parse_ltrace(const std::string& text, const std::string& source, Workload* out, std::string* error, uint64_t* dropped) {
    std::istringstream in(text);
    return parse_ltrace(in, source, out, error, dropped);
}

}  // namespace edu::diff
