// tools/diff/workload.cc: the built-in workloads, the malloc-lab trace reader and writer, and
// the ltrace converter. Everything is deterministic: a workload is a function of its seed.
#include "tools/diff/workload.h"

#include <algorithm>
#include <cctype>
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
        w->ops.push_back({Op::alloc, id, size});
        return id;
    }
    void free(uint32_t id) {
        w->ops.push_back({Op::free, id, 0});
        free_ids.push_back(id);
    }
    void realloc(uint32_t id, uint64_t size) { w->ops.push_back({Op::realloc, id, size}); }
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

bool parse_number(const std::string& word, uint64_t limit, uint64_t* out) {
    if (word.empty() || word.size() > 20) return false;
    for (char c : word)
        if (!std::isdigit(static_cast<unsigned char>(c))) return false;
    unsigned long long v = std::strtoull(word.c_str(), nullptr, 10);
    if (v > limit) return false;
    *out = v;
    return true;
}

std::vector<std::string> words(const std::string& line) {
    std::istringstream in(line);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

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

bool parse_trace(const std::string& text, const std::string& source, Workload* out, std::string* error) {
    constexpr uint64_t kMaxId = 1u << 24, kMaxSize = 1ull << 40;
    *out = Workload{};
    out->name = source;
    std::vector<uint32_t> state;  // 0 never seen, 1 live, 2 freed; with the line that did it
    std::vector<uint64_t> line_of;
    auto fail = [&](uint64_t line, const std::string& what) {
        *error = source + ":" + std::to_string(line) + ": " + what;
        return false;
    };
    std::istringstream in(text);
    std::string line;
    uint64_t number = 0;
    bool in_header = true;
    while (std::getline(in, line)) {
        ++number;
        std::vector<std::string> w = words(line);
        if (w.empty() || w[0][0] == '#') continue;
        uint64_t value;
        if (in_header && w.size() == 1 && parse_number(w[0], UINT64_MAX, &value)) continue;
        in_header = false;
        const std::string& verb = w[0];
        std::size_t want = verb == "f" ? 2 : 3;
        if ((verb != "a" && verb != "f" && verb != "r") || w.size() != want)
            return fail(number, "expected 'a <id> <size>', 'f <id>' or 'r <id> <size>', found '" + line + "'");
        uint64_t id, size = 0;
        if (!parse_number(w[1], kMaxId - 1, &id)) return fail(number, "bad block id '" + w[1] + "'");
        if (want == 3 && !parse_number(w[2], kMaxSize, &size)) return fail(number, "bad size '" + w[2] + "'");
        if (id >= state.size()) {
            state.resize(id + 1, 0);
            line_of.resize(id + 1, 0);
        }
        if (verb == "a") {
            if (state[id] == 1)
                return fail(number, "block " + std::to_string(id) + " is already live (allocated at line " +
                                        std::to_string(line_of[id]) + ")");
            state[id] = 1;
            out->ops.push_back({Op::alloc, static_cast<uint32_t>(id), size});
        } else if (state[id] != 1) {
            std::string what = state[id] == 2 ? (verb == "f" ? "double free of block " : "realloc of freed block ")
                                              : "unknown block id ";
            what += std::to_string(id);
            if (state[id] == 2) what += " (freed at line " + std::to_string(line_of[id]) + ")";
            return fail(number, what);
        } else if (verb == "f") {
            state[id] = 2;
            out->ops.push_back({Op::free, static_cast<uint32_t>(id), 0});
        } else {
            out->ops.push_back({Op::realloc, static_cast<uint32_t>(id), size});
        }
        line_of[id] = number;
    }
    out->ids = static_cast<uint32_t>(state.size());
    return true;
}

std::string format_trace(const Workload& w) {
    std::ostringstream out;
    out << "0\n" << w.ids << "\n" << w.ops.size() << "\n1\n";
    for (const Op& op : w.ops) {
        switch (op.kind) {
            case Op::alloc: out << "a " << op.id << " " << op.size << "\n"; break;
            case Op::free: out << "f " << op.id << "\n"; break;
            case Op::realloc: out << "r " << op.id << " " << op.size << "\n"; break;
        }
    }
    return out.str();
}

bool parse_ltrace(const std::string& text, const std::string& source, Workload* out, std::string* error) {
    *out = Workload{};
    out->name = source;
    std::unordered_map<uint64_t, uint32_t> live;  // address -> id
    Builder b{out, {}};
    std::istringstream in(text);
    std::string line;
    uint64_t number = 0;
    auto number_at = [](const std::string& s, std::size_t pos, int base, bool* ok) {
        char* end = nullptr;
        unsigned long long v = std::strtoull(s.c_str() + pos, &end, base);
        *ok = end != s.c_str() + pos;
        return static_cast<uint64_t>(v);
    };
    while (std::getline(in, line)) {
        ++number;
        if (line.find("unfinished") != std::string::npos || line.find("resumed") != std::string::npos) {
            *error = source + ":" + std::to_string(number) +
                     ": interleaved threads ('unfinished' / 'resumed'); trace one thread, or run ltrace without -f";
            return false;
        }
        // Find the call: the earliest of the four names followed by '('.
        static const char* const kCalls[] = {"realloc(", "calloc(", "malloc(", "free("};
        std::size_t at = std::string::npos;
        const char* call = nullptr;
        for (const char* c : kCalls) {
            std::size_t p = line.find(c);
            if (p != std::string::npos && (p == 0 || !std::isalnum(static_cast<unsigned char>(line[p - 1])) || line[p - 1] == '>') &&
                p < at) {
                at = p;
                call = c;
            }
        }
        if (!call) continue;  // some other line ltrace prints (signals, exit)
        std::size_t args = at + std::string(call).size();
        std::size_t eq = line.rfind("= ");
        bool ok1 = true, ok2 = true, ok3 = true;
        std::string name(call, std::string(call).size() - 1);
        if (name == "free") {
            uint64_t addr = number_at(line, args, 16, &ok1);
            auto it = live.find(addr);
            if (ok1 && it != live.end()) {
                b.free(it->second);
                live.erase(it);
            }
            continue;
        }
        if (eq == std::string::npos) continue;
        uint64_t result = number_at(line, eq + 2, 16, &ok3);
        if (!ok3 || result == 0) continue;  // failed or nil: nothing allocated
        if (name == "malloc") {
            uint64_t size = number_at(line, args, 10, &ok1);
            if (!ok1) return *error = source + ":" + std::to_string(number) + ": cannot read malloc's size", false;
            live[result] = b.alloc(size);
        } else if (name == "calloc") {
            uint64_t count = number_at(line, args, 10, &ok1);
            std::size_t comma = line.find(',', args);
            uint64_t size = comma == std::string::npos ? 0 : number_at(line, comma + 1, 10, &ok2);
            if (!ok1 || !ok2 || comma == std::string::npos)
                return *error = source + ":" + std::to_string(number) + ": cannot read calloc's arguments", false;
            live[result] = b.alloc(count * size);
        } else {
            uint64_t old = number_at(line, args, 16, &ok1);
            std::size_t comma = line.find(',', args);
            uint64_t size = comma == std::string::npos ? 0 : number_at(line, comma + 1, 10, &ok2);
            if (!ok1 || !ok2 || comma == std::string::npos)
                return *error = source + ":" + std::to_string(number) + ": cannot read realloc's arguments", false;
            auto it = live.find(old);
            if (old == 0 || it == live.end()) {
                live[result] = b.alloc(size);
            } else {
                uint32_t id = it->second;
                live.erase(it);
                b.realloc(id, size);
                live[result] = id;
            }
        }
    }
    for (const auto& [addr, id] : live) {
        (void)addr;
        b.free(id);  // the program's leaks are freed at the end, so every stage drains
    }
    return true;
}

}  // namespace edu::diff
