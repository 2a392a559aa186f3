// tools/diff/report.cc: tables, heap dumps, heap pictures and plots.
#include "tools/diff/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <tuple>

namespace edu::diff {

const char* const kUtilisationDefinition =
    "live bytes / footprint, at the operation where the program's live bytes peak";
const char* const kMdriverDefinition =
    "peak live bytes / the largest footprint of the replay (mdriver: peak payload / heap extent at the end, "
    "the heap never shrinking)";

namespace {

std::string percent(double ratio) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(1) << ratio * 100 << "%";
    return s.str();
}

// Rows of the table: a label and one cell per run.
struct Row {
    std::string label;
    std::vector<std::string> cells;
};

std::vector<Row> rows_of(const std::vector<Metrics>& runs) {
    std::vector<Row> rows;
    auto add = [&](const std::string& label, auto cell) {
        Row r{label, {}};
        for (const Metrics& m : runs) r.cells.push_back(cell(m));
        rows.push_back(r);
    };
    add("operations / second", [](const Metrics& m) { return m.valid ? human_count(m.ops_per_second) : "-"; });
    add("timed passes: min..max ms", [](const Metrics& m) {  // both ends in one fixed format
        if (!m.valid || !m.repetitions) return std::string("-");
        std::ostringstream s;
        s << std::fixed << std::setprecision(3) << m.seconds_min * 1e3 << ".." << m.seconds_max * 1e3;
        return s.str();
    });
    add("peak live bytes", [](const Metrics& m) { return human_bytes(m.peak_live_requested); });
    add("footprint at that peak", [](const Metrics& m) { return human_bytes(m.footprint_at_peak); });
    add("peak footprint", [](const Metrics& m) { return human_bytes(m.peak_footprint); });
    add("final footprint", [](const Metrics& m) { return human_bytes(m.final_footprint); });
    add("utilisation", [](const Metrics& m) { return percent(m.utilisation); });
    add("mdriver utilisation", [](const Metrics& m) { return percent(m.mdriver_utilisation); });
    add("internal fragmentation", [](const Metrics& m) { return human_bytes(m.fragmentation_at_peak); });
    add("ENOMEM answers", [](const Metrics& m) { return std::to_string(m.enomem); });
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
        add(std::string("os calls: ") + kOsCallNames[k] + (k == unsigned(OsCall::mmap) || k == unsigned(OsCall::munmap) ? " ~" : ""),
            [k](const Metrics& m) { return m.reference ? std::string("-") : std::to_string(m.os_calls[k]); });
    std::map<std::string, bool> kinds;
    for (const Metrics& m : runs)
        for (const auto& [kind, n] : m.walk_counts) kinds[kind] = true;
    for (const auto& [kind, unused] : kinds) {
        (void)unused;
        add("at peak: " + kind, [kind = kind](const Metrics& m) {
            auto it = m.walk_counts.find(kind);
            return it == m.walk_counts.end() ? std::string("-") : std::to_string(it->second);
        });
    }
    add("valid", [](const Metrics& m) { return m.valid ? std::string("yes") : "NO"; });
    return rows;
}

// What a remote block's hover adds (the page says the same: page.js, MEANING).
constexpr const char* kRemoteMeaning =
    ": freed by a thread that does not own it, waiting on a cross-thread list (stage 4: its page's "
    "xthread_free, or the owner heap's delayed_free when the page was full) until the owner collects it";

const char* colour_of(WalkState s) {
    switch (s) {
        case WalkState::used: return "#d9534f";
        case WalkState::free: return "#5cb85c";
        case WalkState::meta: return "#777777";
        case WalkState::remote: return "#3b7dd8";
        default: return "#f0f0f0";
    }
}

}  // namespace

std::string human_bytes(uint64_t bytes) {
    static const char* const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(bytes);
    unsigned u = 0;
    while (v >= 1024 && u < 4) v /= 1024, ++u;
    std::ostringstream s;
    if (u == 0) s << bytes << " B";
    else s << std::fixed << std::setprecision(v < 10 ? 2 : 1) << v << " " << units[u];
    return s.str();
}

std::string human_count(double value) {
    std::ostringstream s;
    s << std::fixed << std::setprecision(2);
    if (value >= 1e9) s << value / 1e9 << " G";
    else if (value >= 1e6) s << value / 1e6 << " M";
    else if (value >= 1e3) s << value / 1e3 << " k";
    else s << value;
    return s.str();
}

void print_table(std::ostream& out, const std::string& title, const std::vector<Metrics>& runs) {
    std::vector<Row> rows = rows_of(runs);
    std::size_t label_width = 24, cell_width = 16;
    for (const Row& r : rows) label_width = std::max(label_width, r.label.size() + 2);
    for (const Metrics& m : runs) cell_width = std::max(cell_width, m.stage.size() + 2);
    for (const Row& r : rows)  // a wide cell (a long min..max) must not run into its neighbour
        for (const std::string& c : r.cells) cell_width = std::max(cell_width, c.size() + 2);
    out << title << "\n\n" << std::left << std::setw(static_cast<int>(label_width)) << "";
    for (const Metrics& m : runs) out << std::right << std::setw(static_cast<int>(cell_width)) << m.stage;
    out << "\n";
    for (const Row& r : rows) {
        out << std::left << std::setw(static_cast<int>(label_width)) << r.label;
        for (const std::string& c : r.cells) out << std::right << std::setw(static_cast<int>(cell_width)) << c;
        out << "\n";
    }
    out << "~ varies from run to run with address-space layout randomisation: a stage that maps an aligned\n"
           "  region gets an aligned address from the kernel in one call, or maps more and trims (more calls)\n";
}

std::string json_string(const std::string& s) {
    std::string out = "\"";
    static const char* const hex = "0123456789abcdef";
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') out += '\\', out += ch;
        else if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c < 0x20 || c == 0x7f) out += std::string("\\u00") + hex[c >> 4] + hex[c & 15];
        else if (c >= 0x80) out += std::string("\\u00") + hex[c >> 4] + hex[c & 15];  // bytes, not UTF-8: one code point each
        else out += ch;
    }
    return out + "\"";
}

std::string xml_text(const std::string& s) {
    std::string out;
    for (char ch : s) {
        auto c = static_cast<unsigned char>(ch);
        switch (ch) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&apos;"; break;
            default:
                if (c < 0x20 || c >= 0x7f) out += "?";  // not allowed in XML 1.0 (or not UTF-8)
                else out += ch;
        }
    }
    return out;
}

std::string csv_field(const std::string& s) {
    if (s.find_first_of(",\"\r\n") == std::string::npos && (s.empty() || (s.front() != ' ' && s.back() != ' ')))
        return s;
    std::string out = "\"";
    for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
    return out + "\"";
}

std::string gnuplot_string(const std::string& s) {
    std::string out = "'";
    for (char c : s) {
        if (c == '\'') out += "''";                              // gnuplot's quote in a '...' string
        else if (c == '\n' || c == '\r') out += ' ';
        else out += c;
    }
    return out + "'";
}

namespace {

std::string number(double v) {
    if (!std::isfinite(v)) return "null";
    std::ostringstream s;
    s << std::setprecision(9) << v;
    return s.str();
}

void json_metrics(std::ostream& out, const Metrics& m) {
    out << "{\"stage\": " << json_string(m.stage) << ", \"reference\": " << (m.reference ? "true" : "false")
        << ", \"valid\": " << (m.valid ? "true" : "false") << ", \"failure\": " << json_string(m.failure)
        << ", \"failure_line\": " << m.failure_line << ", \"enomem\": " << m.enomem << ", \"enomem_line\": "
        << m.enomem_line << ", \"operations\": " << m.ops << ", \"repetitions\": " << m.repetitions
        << ", \"seconds\": " << number(m.seconds) << ", \"seconds_min\": " << number(m.seconds_min)
        << ", \"seconds_max\": " << number(m.seconds_max) << ", \"ops_per_second\": " << number(m.ops_per_second)
        << ", \"peak_live_bytes\": " << m.peak_live_requested << ", \"footprint_at_peak\": " << m.footprint_at_peak
        << ", \"peak_footprint\": " << m.peak_footprint << ", \"final_footprint\": " << m.final_footprint
        << ", \"utilisation\": " << number(m.utilisation) << ", \"mdriver_utilisation\": "
        << number(m.mdriver_utilisation) << ", \"internal_fragmentation\": " << m.fragmentation_at_peak
        << ", \"os_calls\": ";
    if (m.reference) {
        out << "null";
    } else {
        out << "{";
        for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
            out << (k ? ", " : "") << json_string(kOsCallNames[k]) << ": " << m.os_calls[k];
        out << "}";
    }
    out << ", \"walk_at_peak\": {";
    bool first = true;
    for (const auto& [kind, n] : m.walk_counts) {
        out << (first ? "" : ", ") << json_string(kind) << ": " << n;
        first = false;
    }
    // --steps: the heap after each step asked for, as edu.state() gives it (html.h, heap_json).
    out << "}, \"steps\": [";
    for (std::size_t i = 0; i < m.captured.size(); ++i)
        out << (i ? ", " : "") << "{\"after\": " << m.captured[i].first << ", \"heap\": " << m.captured[i].second << "}";
    out << "]}";
}

// Per column, over the traces: the mean utilisations (of the valid traces) and the throughput
// of all of them together (total operations / total median seconds), as mdriver averages.
struct Mean {
    std::string stage;
    std::size_t valid = 0, traces = 0;
    double utilisation = 0, mdriver = 0, ops = 0, seconds = 0;
    double ops_per_second() const { return seconds > 0 ? ops / seconds : 0; }
};

std::vector<Mean> means_of(const std::vector<TraceResult>& results) {
    std::vector<Mean> means;
    for (const TraceResult& r : results) {
        for (std::size_t c = 0; c < r.runs.size(); ++c) {
            if (means.size() <= c) means.push_back(Mean{r.runs[c].stage});
            Mean& mean = means[c];
            const Metrics& m = r.runs[c];
            ++mean.traces;
            if (!m.valid) continue;
            ++mean.valid;
            mean.utilisation += m.utilisation;
            mean.mdriver += m.mdriver_utilisation;
            mean.ops += double(m.ops);
            mean.seconds += m.seconds;
        }
    }
    for (Mean& m : means)
        if (m.valid) m.utilisation /= double(m.valid), m.mdriver /= double(m.valid);
    return means;
}

}  // namespace

void print_json(std::ostream& out, const std::vector<TraceResult>& results) {
    out << "{\"tool\": \"stagediff\", \"format\": 1,\n \"definitions\": {\"utilisation\": "
        << json_string(kUtilisationDefinition) << ", \"mdriver_utilisation\": " << json_string(kMdriverDefinition)
        << ", \"ops_per_second\": \"operations / median seconds of the timed passes\"},\n"
        << " \"os_calls_vary_with_layout\": [\"mmap\", \"munmap\"],\n \"traces\": [";
    bool all_valid = true;
    for (std::size_t t = 0; t < results.size(); ++t) {
        const TraceResult& r = results[t];
        out << (t ? ",\n  " : "\n  ") << "{\"name\": " << json_string(r.name) << ", \"operations\": " << r.ops
            << ", \"ids\": " << r.ids << ", \"warnings\": [";
        for (std::size_t i = 0; i < r.warnings.size(); ++i) out << (i ? ", " : "") << json_string(r.warnings[i]);
        out << "], \"results\": [";
        for (std::size_t i = 0; i < r.runs.size(); ++i) {
            out << (i ? ",\n    " : "\n    ");
            json_metrics(out, r.runs[i]);
            all_valid = all_valid && r.runs[i].valid;
        }
        out << "]}";
    }
    out << "],\n \"mean\": [";
    std::vector<Mean> means = means_of(results);
    for (std::size_t i = 0; i < means.size(); ++i) {
        const Mean& m = means[i];
        out << (i ? ",\n  " : "\n  ") << "{\"stage\": " << json_string(m.stage) << ", \"traces\": " << m.traces
            << ", \"valid_traces\": " << m.valid << ", \"utilisation\": " << number(m.utilisation)
            << ", \"mdriver_utilisation\": " << number(m.mdriver) << ", \"ops_per_second\": "
            << number(m.ops_per_second()) << "}";
    }
    out << "],\n \"valid\": " << (all_valid ? "true" : "false") << "}\n";
}

void print_csv(std::ostream& out, const std::vector<TraceResult>& results) {
    out << "workload,stage,reference,valid,enomem,operations,seconds,ops_per_second,peak_live_bytes,"
           "footprint_at_peak,peak_footprint,final_footprint,utilisation,mdriver_utilisation,internal_fragmentation";
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) out << ",os_" << kOsCallNames[k];
    out << ",failure\n";
    for (const TraceResult& r : results) {
        for (const Metrics& m : r.runs) {
            out << csv_field(r.name) << "," << csv_field(m.stage) << "," << (m.reference ? "yes" : "no") << ","
                << (m.valid ? "yes" : "no") << "," << m.enomem << "," << m.ops << "," << number(m.seconds) << ","
                << number(m.ops_per_second) << "," << m.peak_live_requested << "," << m.footprint_at_peak << ","
                << m.peak_footprint << "," << m.final_footprint << "," << number(m.utilisation) << ","
                << number(m.mdriver_utilisation) << "," << m.fragmentation_at_peak;
            for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
                out << "," << (m.reference ? std::string() : std::to_string(m.os_calls[k]));
            out << "," << csv_field(m.failure) << "\n";
        }
    }
}

void print_trace_table(std::ostream& out, const std::vector<TraceResult>& results) {
    if (results.empty()) return;
    const std::vector<Mean> means = means_of(results);
    std::size_t name_width = 12, cell = 10;
    for (const TraceResult& r : results) name_width = std::max(name_width, std::min<std::size_t>(r.name.size(), 40) + 2);
    for (const Mean& m : means) cell = std::max(cell, m.stage.size() + 2);
    auto label = [&](const std::string& name) {
        std::string n = name.size() > 40 ? "..." + name.substr(name.size() - 37) : name;
        out << "  " << std::left << std::setw(static_cast<int>(name_width)) << n;
    };
    auto cellout = [&](const std::string& c) { out << std::right << std::setw(static_cast<int>(cell)) << c; };
    unsigned reps = 0;
    for (const TraceResult& r : results)
        for (const Metrics& m : r.runs) reps = std::max(reps, m.repetitions);
    out << "per trace: " << results.size() << (results.size() == 1 ? " trace" : " traces")
        << ", each replayed in a fresh process per column\n"
        << "  util      " << kUtilisationDefinition << "\n"
        << "  mdriver   " << kMdriverDefinition << "\n"
        << "  Kops/s    thousands of operations per second, "
        << (reps ? "median of " + std::to_string(reps) + " timed passes (mean row: all operations / all seconds)"
                 : std::string("not measured (--no-time)"))
        << "\n\n";
    out << "  " << std::left << std::setw(static_cast<int>(name_width)) << "" << std::right << std::setw(10) << "ops";
    for (const Mean& m : means) cellout(m.stage);
    out << "\n";
    struct Section {
        const char* title;
        std::string (*cell)(const Metrics&);
        std::string (*mean)(const Mean&);
    };
    const Section sections[] = {
        {"valid",
         [](const Metrics& m) { return !m.valid ? std::string("NO") : m.enomem ? std::string("ENOMEM") : std::string("yes"); },
         [](const Mean& m) {
             return m.valid == m.traces ? std::string("yes") : std::to_string(m.valid) + "/" + std::to_string(m.traces);
         }},
        {"util", [](const Metrics& m) { return m.valid ? percent(m.utilisation) : std::string("-"); },
         [](const Mean& m) { return m.valid ? percent(m.utilisation) : std::string("-"); }},
        {"mdriver", [](const Metrics& m) { return m.valid ? percent(m.mdriver_utilisation) : std::string("-"); },
         [](const Mean& m) { return m.valid ? percent(m.mdriver) : std::string("-"); }},
        {"Kops/s",
         [](const Metrics& m) {
             if (!m.valid || !m.repetitions) return std::string("-");
             std::ostringstream s;
             s << std::fixed << std::setprecision(0) << m.ops_per_second / 1000;
             return s.str();
         },
         [](const Mean& m) {
             if (!m.valid || m.seconds <= 0) return std::string("-");
             std::ostringstream s;
             s << std::fixed << std::setprecision(0) << m.ops_per_second() / 1000;
             return s.str();
         }},
    };
    for (const Section& sec : sections) {
        out << sec.title << "\n";
        uint64_t ops = 0;
        for (const TraceResult& r : results) {
            label(r.name);
            out << std::right << std::setw(10) << r.ops;
            ops += r.ops;
            for (const Metrics& m : r.runs) cellout(sec.cell(m));
            out << "\n";
        }
        label("mean");
        out << std::right << std::setw(10) << ops;
        for (const Mean& m : means) cellout(sec.mean(m));
        out << "\n";
    }
}

void print_failures(std::ostream& out, const std::vector<TraceResult>& results) {
    for (const TraceResult& r : results) {
        for (const Metrics& m : r.runs) {
            if (!m.valid)
                out << r.name << ":" << m.failure_line << ": " << m.stage << " FAILED validation: " << m.failure << "\n";
            else if (m.enomem)
                out << r.name << ":" << m.enomem_line << ": " << m.stage << ": ENOMEM (NULL) for " << m.enomem
                    << (m.enomem == 1 ? " request" : " requests") << " it could not serve (a correct answer)\n";
        }
    }
}

namespace {

// An offset from the heap's first region as every tool writes it (docs/diffing.md): decimal,
// signed, "+16" or "-4295753728" for a region below the first. `v` is the address difference
// modulo 2^64, as unsigned arithmetic leaves it.
std::string offset_text(uint64_t v) {
    const auto s = static_cast<int64_t>(v);
    return s < 0 ? "-" + std::to_string(uint64_t{0} - v) : "+" + std::to_string(v);
}
std::string offset_text(int64_t v) { return offset_text(static_cast<uint64_t>(v)); }

}  // namespace

std::vector<HeapLine> heap_lines(const Stage& stage) {
    struct Ctx {
        std::vector<HeapLine> lines;
        uintptr_t origin = 0;
    } ctx;
    stage.single_thread->walk(
        [](const WalkEntry& e, void* raw) {
            auto* c = static_cast<Ctx*>(raw);
            auto at = reinterpret_cast<uintptr_t>(e.address);
            if (!c->origin) c->origin = at;
            const auto offset = static_cast<int64_t>(at - c->origin);
            std::ostringstream line;
            // The kind, indented by depth, in one column as wide as the widest (stage 3's
            // "segment metadata" two levels down), so the states line up.
            line << std::left << std::setw(24) << std::string(2 + 2 * e.depth, ' ') + e.kind << ' ' << std::setw(7)
                 << kWalkStateNames[static_cast<unsigned>(e.state)] << ' ' << std::setw(11)
                 << offset_text(at - c->origin) << " "
                 << human_bytes(e.size);
            c->lines.push_back({offset, line.str()});
            return true;
        },
        &ctx);
    return std::move(ctx.lines);
}

void print_heap(std::ostream& out, const std::vector<HeapLine>& heap, std::size_t max_lines,
                const std::string& how_to_see_all) {
    for (std::size_t i = 0; i < heap.size() && i < max_lines; ++i) out << heap[i].text << "\n";
    if (heap.size() > max_lines)
        out << "  ... " << heap.size() - max_lines << " more entries (" << how_to_see_all << ")\n";
}

void print_heap(std::ostream& out, const Stage& stage, std::size_t max_lines, const std::string& how_to_see_all) {
    print_heap(out, heap_lines(stage), max_lines, how_to_see_all);
}

void print_heap_changes(std::ostream& out, const std::vector<HeapLine>& before, const std::vector<HeapLine>& now,
                        const std::string& since, std::size_t max_lines, const std::string& how_to_see_all) {
    // Each side sorted by text, so one merge pass finds the lines only one side has.
    auto sorted = [](const std::vector<HeapLine>& v) {
        std::vector<const HeapLine*> s;
        for (const HeapLine& l : v) s.push_back(&l);
        std::sort(s.begin(), s.end(), [](const HeapLine* a, const HeapLine* b) { return a->text < b->text; });
        return s;
    };
    const std::vector<const HeapLine*> b = sorted(before), n = sorted(now);
    struct Change {
        int64_t offset;
        char sign;
        const std::string* text;
    };
    std::vector<Change> changes;
    std::size_t i = 0, j = 0;
    while (i < b.size() || j < n.size()) {
        if (j == n.size() || (i < b.size() && b[i]->text < n[j]->text)) {
            changes.push_back({b[i]->offset, '-', &b[i]->text});
            ++i;
        } else if (i == b.size() || n[j]->text < b[i]->text) {
            changes.push_back({n[j]->offset, '+', &n[j]->text});
            ++j;
        } else {
            ++i, ++j;
        }
    }
    if (changes.empty()) return;
    // By offset, a region before what it holds (walk order: shallower first), "-" before "+".
    auto key = [](const Change& c) {
        return std::make_tuple(c.offset, c.text->find_first_not_of(' '), c.sign == '-' ? 0 : 1);
    };
    std::stable_sort(changes.begin(), changes.end(), [&](const Change& x, const Change& y) { return key(x) < key(y); });
    out << "  changed since " << since << " (-: then, +: now):\n";
    for (std::size_t k = 0; k < changes.size() && k < max_lines; ++k)   // the sign in the indent
        out << changes[k].sign << ' ' << changes[k].text->substr(2) << "\n";
    if (changes.size() > max_lines)
        out << "  ... " << changes.size() - max_lines << " more changes (" << how_to_see_all << ")\n";
}

bool write_heap_picture(const Stage& stage, const std::string& path, const std::string& title,
                        const PictureOptions& options, std::string* error) {
    std::string ignored;
    std::string& why = error ? *error : ignored;
    struct Entry {
        int64_t at;  // offset from the first region: below it, negative
        uint64_t size;
        const char* kind;
        WalkState state;
        unsigned depth;
        uintptr_t address;
    };
    struct Walk {
        uintptr_t origin = 0;
        bool started = false;
        std::vector<Entry> entries;
    } walk;
    stage.single_thread->walk(
        [](const WalkEntry& e, void* raw) {
            auto* w = static_cast<Walk*>(raw);
            auto a = reinterpret_cast<uintptr_t>(e.address);
            if (!w->started) w->origin = a, w->started = true;
            w->entries.push_back({static_cast<int64_t>(a - w->origin), e.size, e.kind, e.state, e.depth, a});
            return true;
        },
        &walk);
    // The regions to draw, clipped to the zoom range (signed: regions below the first count too).
    const bool zoom = options.to > options.from;
    const int64_t lo = zoom ? options.from : INT64_MIN, hi = zoom ? options.to : INT64_MAX;
    auto end_of = [](const Entry& e) { return e.at + static_cast<int64_t>(e.size); };
    struct Span {
        int64_t start, end;
        std::string label;
    };
    std::vector<Span> spans;
    for (const Entry& e : walk.entries) {
        if (e.depth != 0 || e.at >= hi || end_of(e) <= lo) continue;
        spans.push_back({std::max(e.at, lo), std::min(end_of(e), hi),
                         std::string(e.kind) + " at " + offset_text(e.at) + ", " + human_bytes(e.size)});
    }
    if (spans.empty()) return why = "no region of " + std::string(stage.name) + "'s heap lies in that range", false;
    // Scale: the fewest bytes a pixel (a power of two) that keeps the picture within kMaxRows.
    const double row_px = 1024;
    const uint64_t kMaxRows = 160;
    uint64_t bpp = 1;
    auto rows_at = [&](uint64_t b) {
        uint64_t rows = 0, per_row = b * static_cast<uint64_t>(row_px);
        for (const Span& s : spans) rows += (static_cast<uint64_t>(s.end - s.start) + per_row - 1) / per_row;
        return rows;
    };
    while (rows_at(bpp) > kMaxRows && bpp < (1ull << 40)) bpp *= 2;
    const uint64_t per_row = bpp * static_cast<uint64_t>(row_px);
    const double left = 110, top = 64, row_h = 20, region_gap = 22;
    std::ostringstream body;
    double y = top;
    for (const Span& s : spans) {
        body << "<text x=\"10\" y=\"" << y + 12 << "\" font-weight=\"bold\">" << xml_text(s.label) << "</text>\n";
        y += region_gap - 4;
        const double region_top = y;
        // The row frames, each labelled with the offset it starts at.
        for (int64_t r = s.start; r < s.end; r += static_cast<int64_t>(per_row)) {
            double w = double(std::min(per_row, static_cast<uint64_t>(s.end - r))) / double(bpp);
            body << "<text x=\"10\" y=\"" << y + 13 << "\">" << offset_text(r) << "</text>"
                 << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << w << "\" height=\"" << row_h - 4
                 << "\" fill=\"#ffffff\" stroke=\"#bbbbbb\"/>\n";
            y += row_h;
        }
        // Blocks, cut where rows wrap; sub-pixel neighbours of one state merged into one run.
        auto place = [&](int64_t at) {  // row index and x of an offset inside this span
            const auto in = static_cast<uint64_t>(at - s.start);
            return std::pair<double, double>{region_top + double(in / per_row) * row_h,
                                             left + double(in % per_row) / double(bpp)};
        };
        double run_x0 = -1, run_x1 = -1, run_y = -1;
        const char* run_colour = nullptr;
        auto flush_run = [&] {
            if (run_colour)
                body << "<rect x=\"" << run_x0 << "\" y=\"" << run_y + 2 << "\" width=\"" << std::max(0.5, run_x1 - run_x0)
                     << "\" height=\"" << row_h - 8 << "\" fill=\"" << run_colour << "\"/>\n";
            run_colour = nullptr;
        };
        for (const Entry& e : walk.entries) {
            if (e.depth == 0 || e.size == 0 || e.at >= s.end || end_of(e) <= s.start) continue;
            int64_t a = std::max(e.at, s.start), b = std::min(end_of(e), s.end);
            int64_t id = e.state == WalkState::used && options.id_at ? options.id_at(e.address) : -1;
            const double inset = std::min(6.0, 2.0 * (e.depth - 1));
            while (a < b) {
                int64_t row_end = s.start + static_cast<int64_t>((static_cast<uint64_t>(a - s.start) / per_row + 1) * per_row);
                int64_t piece_end = std::min(b, row_end);
                auto [py, px] = place(a);
                double pw = double(piece_end - a) / double(bpp);
                if (pw < 1.0) {  // too thin to see alone: extend the current run
                    if (!run_colour || run_colour != colour_of(e.state) || run_y != py || px > run_x1 + 0.5) {
                        flush_run();
                        run_colour = colour_of(e.state), run_x0 = px, run_y = py;
                    }
                    run_x1 = px + pw;
                } else {
                    flush_run();
                    body << "<rect x=\"" << px << "\" y=\"" << py + inset << "\" width=\"" << pw << "\" height=\""
                         << std::max(2.0, row_h - 4 - 2 * inset) << "\" fill=\"" << colour_of(e.state)
                         << "\" stroke=\"#ffffff\" stroke-width=\"0.5\"><title>"
                         << xml_text(std::string(e.kind) + " " + kWalkStateNames[static_cast<unsigned>(e.state)] + " " +
                                     std::to_string(e.size) + " B at " + offset_text(e.at) +
                                     (id >= 0 ? ", trace id " + std::to_string(id) : std::string()) +
                                     (e.state == WalkState::remote ? kRemoteMeaning : ""))
                         << "</title></rect>\n";
                    std::string text = id >= 0 ? std::to_string(id) : std::string();
                    if (!text.empty() && pw >= 7.0 * double(text.size()) + 4)
                        body << "<text x=\"" << px + pw / 2 << "\" y=\"" << py + 12
                             << "\" text-anchor=\"middle\" fill=\"white\" font-size=\"10\">" << text << "</text>\n";
                }
                a = piece_end;
            }
        }
        flush_run();
        y += 6;
    }
    // The axis: ticks at every eighth of a row, in bytes from the row's start.
    std::ostringstream axis;
    for (int k = 0; k <= 8; ++k) {
        double x = left + row_px * k / 8;
        axis << "<line x1=\"" << x << "\" y1=\"" << top - 14 << "\" x2=\"" << x << "\" y2=\"" << top - 6
             << "\" stroke=\"#333\"/><text x=\"" << x << "\" y=\"" << top - 18 << "\" text-anchor=\"middle\">"
             << xml_text("+" + human_bytes(per_row * static_cast<uint64_t>(k) / 8)) << "</text>\n";
    }
    std::ofstream svg(path);
    if (!svg) return why = "cannot write " + path, false;
    const double height = y + 40, legend_y = y + 20;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + row_px + 20 << "\" height=\"" << height
        << "\" font-family=\"monospace\" font-size=\"11\">\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        << "<text x=\"10\" y=\"18\" font-size=\"14\">" << xml_text(title) << "</text>\n"
        << "<text x=\"10\" y=\"" << top - 30 << "\">"
        << xml_text("1 pixel = " + human_bytes(bpp) + ", a row = " + human_bytes(per_row) +
                    (zoom ? ", zoomed to " + offset_text(lo) + "-" + offset_text(hi) : std::string()) +
                    "; offsets from the heap's first region")
        << "</text>\n"
        << axis.str() << body.str();
    for (unsigned i = 0; i < kWalkStateCount; ++i)
        svg << "<rect x=\"" << left + 120 * i << "\" y=\"" << legend_y - 10 << "\" width=\"12\" height=\"12\" fill=\""
            << colour_of(static_cast<WalkState>(i)) << "\" stroke=\"#999\"/><text x=\"" << left + 120 * i + 16 << "\" y=\"" << legend_y
            << "\">" << kWalkStateNames[i] << "</text>\n";
    svg << "</svg>\n";
    if (!svg) return why = "cannot write " + path, false;
    return true;
}

bool write_plot(const std::vector<Metrics>& runs, const std::string& path, const std::string& title,
                std::string* error) {
    bool png = path.size() > 4 && path.compare(path.size() - 4, 4, ".png") == 0;
    std::ostringstream script;
    script << "set terminal " << (png ? "pngcairo size 1000,600" : "svg size 1000,600 dynamic") << "\n"
           << "set output " << gnuplot_string(path) << "\n"
           << "set title " << gnuplot_string(title) << " noenhanced\n"
           << "set xlabel 'operations'\nset ylabel 'MiB'\nset key outside right noenhanced\nset grid\n";
    for (std::size_t i = 0; i < runs.size(); ++i) {
        script << "$d" << i << " << EOD\n";
        for (const Sample& s : runs[i].timeline)
            script << s.op << " " << double(s.footprint) / 1048576.0 << " " << double(s.live_requested) / 1048576.0 << "\n";
        script << "EOD\n";
    }
    script << "plot ";
    for (std::size_t i = 0; i < runs.size(); ++i) {
        script << (i ? ", " : "") << "$d" << i << " using 1:2 with lines lw 2 lc " << i + 1 << " title "
               << gnuplot_string(runs[i].stage + " footprint") << ", $d" << i << " using 1:3 with lines dt 2 lc "
               << i + 1 << " title " << gnuplot_string(runs[i].stage + " live");
    }
    script << "\n";
    FILE* gp = popen("gnuplot 2>&1", "w");
    if (!gp) return *error = "cannot run gnuplot (tools/setup installs it)", false;
    std::string text = script.str();
    fwrite(text.data(), 1, text.size(), gp);
    int status = pclose(gp);
    if (status != 0) return *error = "gnuplot failed (is it installed? tools/setup installs gnuplot-nox)", false;
    return true;
}

}  // namespace edu::diff
