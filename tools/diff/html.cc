// tools/diff/html.cc: recording a replay walk by walk, and writing the step-through page.
//
// The byte format (all integers LEB128 varints; `zig` is zigzag, so small negatives stay short):
//   op:       kind byte (0 alloc, 1 free, 2 realloc) | thread << 2 (1..4, '@N'), id, size (not
//             for free; a free(NULL) has id 4294967295)
//   entry:    zig(address - cursor) << 2 | depth, size, kind << 4 | state << 1 | has_id, then
//             if has_id the trace id + 1 (0: unknown); `cursor` is the previous address written
//             in the same run, 0 (the stage's base address) at the start of a run
//   step:     removed count, added count, the removed entries' addresses (first word only),
//             then the added entries; a used block without an id is the operation's own block
//             (its id is the operation's)
//   keyframe: entry count, then every entry followed by (keyframe step - step it appeared)
// A run restarts the cursor at each keyframe, so the page can decode from any keyframe on.
#include "tools/diff/html.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include <zlib.h>

#include "tools/diff/page_assets.h"
#include "tools/diff/report.h"

namespace edu::diff {
namespace {

struct Walked {
    uint64_t address;
    uint64_t size;
    uint16_t kind;
    uint8_t state;
    uint8_t depth;
    uint32_t id;      // trace id + 1 for used blocks, else 0
    uint64_t born;    // the operation after which it first appeared
    bool operator<(const Walked& o) const { return address != o.address ? address < o.address : depth < o.depth; }
    bool same_key(const Walked& o) const { return address == o.address && depth == o.depth; }
    bool same(const Walked& o) const { return same_key(o) && size == o.size && kind == o.kind && state == o.state; }
};

struct WalkContext {
    KindTable* kinds;
    std::vector<Walked>* out;
};

void walk_into(const Stage& stage, KindTable& kinds, std::vector<Walked>& out) {
    out.clear();
    WalkContext ctx{&kinds, &out};
    stage.single_thread->walk(
        [](const WalkEntry& e, void* raw) {
            auto* c = static_cast<WalkContext*>(raw);
            c->out->push_back({reinterpret_cast<uintptr_t>(e.address), e.size, c->kinds->index_of(e.kind),
                               static_cast<uint8_t>(e.state), static_cast<uint8_t>(std::min(e.depth, 3u)), 0, 0});
            return true;
        },
        &ctx);
    if (!std::is_sorted(out.begin(), out.end())) std::stable_sort(out.begin(), out.end());
}

void put_varint(std::string& s, uint64_t v) {
    while (v >= 0x80) {
        s += static_cast<char>((v & 0x7f) | 0x80);
        v >>= 7;
    }
    s += static_cast<char>(v);
}

uint64_t zig(int64_t v) { return (static_cast<uint64_t>(v) << 1) ^ static_cast<uint64_t>(v >> 63); }

class Encoder {
public:
    explicit Encoder(Recording& r) : r_(r) {}

    void restart() { cursor_ = 0; }

    void address(std::string& s, const Walked& e) {
        if (!have_base_) r_.base = e.address, have_base_ = true;
        int64_t offset = static_cast<int64_t>(e.address - r_.base);
        put_varint(s, zig(offset - cursor_) << 2 | e.depth);
        cursor_ = offset;
    }

    // `implied_id`: the page knows the id (the step's own block), so it is not written.
    void entry(std::string& s, const Walked& e, bool implied_id) {
        address(s, e);
        put_varint(s, e.size);
        bool explicit_id = e.state == static_cast<uint8_t>(WalkState::used) && !implied_id;
        put_varint(s, uint64_t{e.kind} << 4 | uint64_t{e.state} << 1 | explicit_id);
        if (explicit_id) put_varint(s, e.id);
    }

private:
    Recording& r_;
    bool have_base_ = false;
    int64_t cursor_ = 0;
};

class Recorder {
public:
    Recorder(const Stage& stage, const Workload& w, KindTable& kinds, const RecordOptions& o, Recording& r)
        : stage_(stage), w_(w), kinds_(kinds), o_(o), r_(r), enc_(r) {}

    void start() {
        walk_into(stage_, kinds_, prev_);
        keyframe(0);
    }

    // After operation `done` (1-based); `id_at` names the live block at an address (replay.h).
    void after(uint64_t done, const std::function<int64_t(uintptr_t)>& id_at) {
        walk_into(stage_, kinds_, cur_);
        const Op& op = w_.ops[done - 1];
        removed_.clear();
        added_.clear();
        std::size_t i = 0, j = 0;
        while (i < prev_.size() || j < cur_.size()) {
            if (j == cur_.size() || (i < prev_.size() && prev_[i] < cur_[j])) {
                removed_.push_back(i++);
            } else if (i == prev_.size() || cur_[j] < prev_[i]) {
                added_.push_back(j++);
            } else if (prev_[i].same(cur_[j])) {
                cur_[j].id = prev_[i].id;
                cur_[j].born = prev_[i].born;
                ++i, ++j;
            } else {
                removed_.push_back(i++);
                added_.push_back(j++);
            }
        }
        // New used blocks get their trace ids from the driver; the operation's own block (the
        // usual case) needs none written.
        for (std::size_t k : added_) {
            Walked& e = cur_[k];
            e.born = done;
            if (e.state == static_cast<uint8_t>(WalkState::used)) e.id = static_cast<uint32_t>(id_at(e.address) + 1);
        }
        put_varint(r_.steps, removed_.size());
        put_varint(r_.steps, added_.size());
        for (std::size_t k : removed_) enc_.address(r_.steps, prev_[k]);
        for (std::size_t k : added_) enc_.entry(r_.steps, cur_[k], cur_[k].id == op.id + 1);
        prev_.swap(cur_);
        r_.max_entries = std::max<uint64_t>(r_.max_entries, prev_.size());
        if (done % o_.keyframe_every == 0) keyframe(done);
    }

private:
    void keyframe(uint64_t done) {
        std::string s;
        enc_.restart();
        put_varint(s, prev_.size());
        for (const Walked& e : prev_) {
            enc_.entry(s, e, false);
            put_varint(s, done - e.born);
        }
        r_.keyframes.push_back(std::move(s));
        r_.step_offsets.push_back(r_.steps.size());
        enc_.restart();
    }

    const Stage& stage_;
    const Workload& w_;
    KindTable& kinds_;
    const RecordOptions& o_;
    Recording& r_;
    Encoder enc_;
    std::vector<Walked> prev_, cur_;
    std::vector<std::size_t> removed_, added_;
};

std::string base64(const std::string& in) {
    static const char table[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((in.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
        for (int k = 18; k >= 0; k -= 6) out += table[(v >> k) & 63];
    }
    if (i < in.size()) {
        uint32_t v = uint32_t(uint8_t(in[i])) << 16 | (i + 1 < in.size() ? uint32_t(uint8_t(in[i + 1])) << 8 : 0);
        out += table[(v >> 18) & 63];
        out += table[(v >> 12) & 63];
        out += i + 1 < in.size() ? table[(v >> 6) & 63] : '=';
        out += '=';
    }
    return out;
}

// zlib's format, which the browser's DecompressionStream("deflate") reads, then base64.
std::string packed(const std::string& in) {
    uLongf size = compressBound(static_cast<uLong>(in.size()));
    std::string out(size, '\0');
    if (compress2(reinterpret_cast<Bytef*>(out.data()), &size, reinterpret_cast<const Bytef*>(in.data()),
                  static_cast<uLong>(in.size()), 9) != Z_OK)
        return "";
    out.resize(size);
    return base64(out);
}

// A JSON string that is also safe inside a <script> element.
std::string js_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') out += '\\', out += static_cast<char>(c);
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            out += buf;
        } else out += static_cast<char>(c);
    }
    return out + "\"";
}

std::string encode_ops(const Workload& w) {
    std::string s;
    for (const Op& op : w.ops) {
        s += static_cast<char>(op.kind | op.thread << 2);
        put_varint(s, op.id);
        if (op.kind != Op::free) put_varint(s, op.size);
    }
    return s;
}

}  // namespace

uint16_t KindTable::index_of(const char* kind) {
    for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == kind) return static_cast<uint16_t>(i);
    names.emplace_back(kind);
    return static_cast<uint16_t>(names.size() - 1);
}

Recording record(const Stage& stage, const Workload& workload, const RecordOptions& options) {
    Recording r;
    r.stage = stage.name;
    r.number = stage.number;
    r.summary = stage.summary;
    r.keyframe_every = options.keyframe_every;
    Recorder recorder(stage, workload, r.kinds, options, r);
    ReplayOptions ro;
    ro.timed = false;
    ro.timeline_points = 1000;
    ro.pause_at.resize(workload.ops.size());
    for (uint64_t i = 0; i < workload.ops.size(); ++i) ro.pause_at[i] = i + 1;
    ro.on_pause = [&](const Stage&, uint64_t done, const std::function<int64_t(uintptr_t)>& id_at) {
        recorder.after(done, id_at);
    };
    recorder.start();
    r.metrics = replay(stage, workload, ro);
    return r;
}

std::string recording_json(const Recording& r) {
    std::ostringstream data;
    char base[24];
    std::snprintf(base, sizeof base, "0x%llx", static_cast<unsigned long long>(r.base));
    data << "{\"name\":" << js_string(r.stage) << ",\"number\":" << r.number << ",\"summary\":" << js_string(r.summary)
         << ",\"base\":\"" << base << "\",\"valid\":" << (r.metrics.valid ? "true" : "false")
         << ",\"failure\":" << js_string(r.metrics.failure) << ",\"peakFootprint\":" << r.metrics.peak_footprint
         << ",\"peakLive\":" << r.metrics.peak_live_requested << ",\"keyframeEvery\":" << r.keyframe_every
         << ",\"kinds\":[";
    for (std::size_t i = 0; i < r.kinds.names.size(); ++i) data << (i ? "," : "") << js_string(r.kinds.names[i]);
    data << "],\"timeline\":[";
    for (std::size_t i = 0; i < r.metrics.timeline.size(); ++i) {
        const Sample& t = r.metrics.timeline[i];
        data << (i ? "," : "") << t.op << "," << t.live_requested << "," << t.footprint;
    }
    data << "],\"stepOffsets\":[";
    for (std::size_t i = 0; i < r.step_offsets.size(); ++i) data << (i ? "," : "") << r.step_offsets[i];
    std::string keyframes;
    data << "],\"keyframeOffsets\":[";
    for (std::size_t i = 0; i < r.keyframes.size(); ++i) {
        data << (i ? "," : "") << keyframes.size();
        keyframes += r.keyframes[i];
    }
    data << "],\"steps\":\"" << packed(r.steps) << "\",\"keyframes\":\"" << packed(keyframes) << "\"}";
    return data.str();
}

bool write_html(const std::string& path, const std::string& title, const Workload& workload,
                const std::vector<std::string>& stages, std::string* error) {
    std::ostringstream data;
    data << "{\"title\":" << js_string(title) << ",\"workload\":" << js_string(workload.name)
         << ",\"opCount\":" << workload.ops.size() << ",\"ops\":\"" << packed(encode_ops(workload))
         << "\",\"states\":[";
    for (unsigned i = 0; i < kWalkStateCount; ++i) data << (i ? ",\"" : "\"") << kWalkStateNames[i] << "\"";
    data << "],\"stages\":[";
    for (std::size_t s = 0; s < stages.size(); ++s) data << (s ? ",\n" : "\n") << stages[s];
    data << "]}";

    // page.html holds the data marker before the script marker; neither is searched for in what
    // replaces the other, whatever a workload's name says.
    const std::string page = reinterpret_cast<const char*>(kPageHtml);
    const std::string data_marker = "/*EDU_DATA*/", script_marker = "/*EDU_SCRIPT*/";
    const std::size_t at_data = page.find(data_marker), at_script = page.find(script_marker);
    if (at_data == std::string::npos || at_script == std::string::npos || at_script < at_data)
        return *error = "the embedded page has lost its markers", false;
    std::ofstream out(path, std::ios::binary);
    if (!out) return *error = "cannot write '" + path + "'", false;
    out << page.substr(0, at_data) << "window.EDU_DATA = " << data.str() << ";"
        << page.substr(at_data + data_marker.size(), at_script - at_data - data_marker.size())
        << reinterpret_cast<const char*>(kPageJs) << page.substr(at_script + script_marker.size());
    if (!out.flush()) return *error = "cannot write '" + path + "'", false;
    return true;
}

namespace {

// Records one stage in a child process, so every stage starts from a fresh heap (stage 2 hands
// large blocks to stage 1, which would otherwise carry the stage-1 replay's leftovers), and a
// stage that crashes takes only its child down. The children run at the same time; each sends
// its stage's JSON through a pipe when it is done.
struct Child {
    const Stage* stage;
    pid_t pid = -1;
    int fd = -1;
};

Child start_recording(const Stage& stage, const Workload& workload, const RecordOptions& options) {
    Child c{&stage};
    int fds[2];
    if (pipe(fds) != 0) return c;
    std::cout.flush();
    std::cerr.flush();
    c.pid = fork();
    if (c.pid < 0) return c;
    if (c.pid == 0) {
        close(fds[0]);
        Recording r = record(stage, workload, options);
        std::string json = recording_json(r);
        if (!r.metrics.valid) std::cerr << "stagediff: " << r.stage << " FAILED validation: " << r.metrics.failure << "\n";
        for (std::size_t done = 0; done < json.size();) {
            ssize_t n = write(fds[1], json.data() + done, json.size() - done);
            if (n <= 0) _exit(3);
            done += static_cast<std::size_t>(n);
        }
        _exit(r.metrics.valid ? 0 : 1);
    }
    close(fds[1]);
    c.fd = fds[0];
    return c;
}

// The child's JSON, or "" if it could not run or died; `valid` says whether it passed.
std::string finish_recording(const Child& c, bool* valid) {
    if (c.pid < 0) {
        std::cerr << "stagediff: cannot start a process to record " << c.stage->name << "\n";
        return "";
    }
    std::string json;
    char buf[1 << 16];
    for (ssize_t n; (n = read(c.fd, buf, sizeof buf)) > 0;) json.append(buf, static_cast<std::size_t>(n));
    close(c.fd);
    int status = 0;
    waitpid(c.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) > 1) {
        std::cerr << "stagediff: " << c.stage->name << " died while recording (status " << status << ")\n";
        return "";
    }
    *valid = WEXITSTATUS(status) == 0;
    return json;
}

}  // namespace

int write_step_through(const std::string& path, const std::vector<const Stage*>& stages, const Workload& workload) {
    RecordOptions options;
    options.keyframe_every = std::clamp<uint64_t>(workload.ops.size() / 64, 64, 4096);
    std::vector<Child> children;
    for (const Stage* s : stages) {
        std::cerr << "stagediff: recording " << s->name << " (" << workload.ops.size() << " operations)\n";
        children.push_back(start_recording(*s, workload, options));
    }
    // A stage that died (in a lab handout: at a part's stub) is left out of the page; the
    // others are still worth stepping through. No page when none recorded.
    std::vector<std::string> recorded;
    std::string left_out;
    bool all_valid = true;
    for (const Child& c : children) {
        bool valid = false;
        std::string json = finish_recording(c, &valid);   // "" when the stage died
        all_valid = all_valid && valid && !json.empty();
        if (json.empty()) left_out += (left_out.empty() ? "" : ", ") + std::string(c.stage->name);
        else recorded.push_back(std::move(json));
    }
    if (recorded.empty()) return 1;
    // A trace by its file name: its full path (a folder of the student's, the teacher's) filled the
    // page's heading; page.js keeps it in the heading's tooltip (D.workload).
    const std::string shown = workload.name.substr(workload.name.find_last_of('/') + 1);
    std::string error, title = "workload " + shown + ": " + std::to_string(workload.ops.size()) +
                                   " operations on " + std::to_string(workload.ids) + " block ids";
    if (!write_html(path, title, workload, recorded, &error)) {
        std::cerr << "stagediff: " << error << "\n";
        return 2;
    }
    std::ifstream written(path, std::ios::binary | std::ios::ate);
    std::cerr << "stagediff: wrote " << path << " (" << human_bytes(static_cast<uint64_t>(written.tellg())) << ")"
              << (left_out.empty() ? "" : " without " + left_out + ", which died (see above)") << "\n";
    return all_valid ? 0 : 1;
}

void heap_json(std::ostream& out, const Stage& stage) {
    KindTable kinds;
    std::vector<Walked> heap;
    walk_into(stage, kinds, heap);
    // Each entry belongs to the top-level entry before it in address order (-1: none).
    struct Placed {
        long region;
        int64_t offset;
        const Walked* e;
    };
    std::vector<const Walked*> tops;
    for (const Walked& e : heap)
        if (e.depth == 0) tops.push_back(&e);
    std::stable_sort(tops.begin(), tops.end(),
                     [&](const Walked* x, const Walked* y) { return kinds.names[x->kind] < kinds.names[y->kind]; });
    std::map<const Walked*, long> number;
    for (std::size_t i = 0; i < tops.size(); ++i) number[tops[i]] = static_cast<long>(i);
    std::vector<Placed> placed;
    const Walked* top = nullptr;
    for (const Walked& e : heap) {
        if (e.depth == 0) top = &e;
        uint64_t start = top ? top->address : heap[0].address;
        placed.push_back({top ? number[top] : -1, static_cast<int64_t>(e.address - start), &e});
    }
    std::stable_sort(placed.begin(), placed.end(), [](const Placed& x, const Placed& y) { return x.region < y.region; });
    out << "[";
    for (std::size_t i = 0; i < placed.size(); ++i) {
        const Walked& e = *placed[i].e;
        out << (i ? "," : "") << "[" << placed[i].region << "," << placed[i].offset << "," << e.size << ",\""
            << kWalkStateNames[e.state] << "\"," << js_string(kinds.names[e.kind]) << "," << unsigned{e.depth} << "]";
    }
    out << "]";
}

}  // namespace edu::diff
