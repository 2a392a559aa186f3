// tools/diff/report.cc: tables, heap dumps, heap pictures and plots.
#include "tools/diff/report.h"

#include <cstdio>
#include <fstream>
#include <iomanip>
#include <sstream>

namespace edu::diff {
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
    add("peak live bytes", [](const Metrics& m) { return human_bytes(m.peak_live_requested); });
    add("peak footprint", [](const Metrics& m) { return human_bytes(m.peak_footprint); });
    add("final footprint", [](const Metrics& m) { return human_bytes(m.final_footprint); });
    add("utilisation", [](const Metrics& m) { return percent(m.utilisation); });
    add("internal fragmentation", [](const Metrics& m) { return human_bytes(m.fragmentation_at_peak); });
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
        add(std::string("os calls: ") + kOsCallNames[k], [k](const Metrics& m) { return std::to_string(m.os_calls[k]); });
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

std::string json_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out;
}

const char* colour_of(WalkState s) {
    switch (s) {
        case WalkState::used: return "#d9534f";
        case WalkState::free: return "#5cb85c";
        case WalkState::meta: return "#777777";
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
    out << title << "\n\n" << std::left << std::setw(static_cast<int>(label_width)) << "";
    for (const Metrics& m : runs) out << std::right << std::setw(static_cast<int>(cell_width)) << m.stage;
    out << "\n";
    for (const Row& r : rows) {
        out << std::left << std::setw(static_cast<int>(label_width)) << r.label;
        for (const std::string& c : r.cells) out << std::right << std::setw(static_cast<int>(cell_width)) << c;
        out << "\n";
    }
    for (const Metrics& m : runs)
        if (!m.valid) out << "\n" << m.stage << " FAILED validation: " << m.failure << "\n";
}

void print_json(std::ostream& out, const std::string& workload, const std::vector<Metrics>& runs) {
    out << "{\"workload\": \"" << json_escape(workload) << "\", \"stages\": [";
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const Metrics& m = runs[i];
        out << (i ? ", " : "") << "{\"stage\": \"" << json_escape(m.stage) << "\", \"operations\": " << m.ops
            << ", \"seconds\": " << m.seconds << ", \"ops_per_second\": " << m.ops_per_second
            << ", \"peak_live_bytes\": " << m.peak_live_requested << ", \"peak_footprint\": " << m.peak_footprint
            << ", \"final_footprint\": " << m.final_footprint << ", \"utilisation\": " << m.utilisation
            << ", \"internal_fragmentation\": " << m.fragmentation_at_peak << ", \"os_calls\": {";
        for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k)
            out << (k ? ", " : "") << "\"" << kOsCallNames[k] << "\": " << m.os_calls[k];
        out << "}, \"walk_at_peak\": {";
        bool first = true;
        for (const auto& [kind, n] : m.walk_counts) {
            out << (first ? "" : ", ") << "\"" << json_escape(kind) << "\": " << n;
            first = false;
        }
        out << "}, \"valid\": " << (m.valid ? "true" : "false") << ", \"failure\": \"" << json_escape(m.failure)
            << "\"}";
    }
    out << "]}\n";
}

void print_csv(std::ostream& out, const std::string& workload, const std::vector<Metrics>& runs) {
    out << "workload,stage,operations,seconds,ops_per_second,peak_live_bytes,peak_footprint,final_footprint,"
           "utilisation,internal_fragmentation";
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) out << ",os_" << kOsCallNames[k];
    out << ",valid\n";
    for (const Metrics& m : runs) {
        out << workload << "," << m.stage << "," << m.ops << "," << m.seconds << "," << m.ops_per_second << ","
            << m.peak_live_requested << "," << m.peak_footprint << "," << m.final_footprint << "," << m.utilisation
            << "," << m.fragmentation_at_peak;
        for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) out << "," << m.os_calls[k];
        out << "," << (m.valid ? "yes" : "no") << "\n";
    }
}

void print_heap(std::ostream& out, const Stage& stage, std::size_t max_lines) {
    struct Ctx {
        std::ostream* out;
        std::size_t lines = 0, max, more = 0;
        uintptr_t origin = 0;
    } ctx{&out, 0, max_lines, 0, 0};
    stage.single_thread->walk(
        [](const WalkEntry& e, void* raw) {
            auto* c = static_cast<Ctx*>(raw);
            auto at = reinterpret_cast<uintptr_t>(e.address);
            if (!c->origin) c->origin = at;
            if (c->lines++ >= c->max) {
                ++c->more;
                return true;
            }
            std::ostringstream line;
            line << std::string(2 + 2 * e.depth, ' ') << std::left << std::setw(8) << e.kind << std::setw(7)
                 << kWalkStateNames[static_cast<unsigned>(e.state)] << " +" << std::setw(10)
                 << static_cast<int64_t>(at - c->origin) << " " << human_bytes(e.size) << "\n";
            *c->out << line.str();
            return true;
        },
        &ctx);
    if (ctx.more) out << "  ... " << ctx.more << " more entries\n";
}

bool write_heap_picture(const Stage& stage, const std::string& path, const std::string& title) {
    struct Region {
        uintptr_t start;
        uint64_t size;
        std::string kind;
        std::vector<WalkEntry> parts;
    };
    std::vector<Region> regions;
    stage.single_thread->walk(
        [](const WalkEntry& e, void* raw) {
            auto* rs = static_cast<std::vector<Region>*>(raw);
            if (e.depth == 0) rs->push_back({reinterpret_cast<uintptr_t>(e.address), e.size, e.kind, {}});
            else if (!rs->empty()) rs->back().parts.push_back(e);
            return true;
        },
        &regions);
    const std::size_t shown = std::min<std::size_t>(regions.size(), 48);
    const double width = 1000, row = 22, left = 150, top = 40;
    std::ofstream svg(path);
    if (!svg) return false;
    svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << left + width + 20 << "\" height=\""
        << top + row * double(shown) + 40 << "\" font-family=\"monospace\" font-size=\"11\">\n"
        << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        << "<text x=\"10\" y=\"20\" font-size=\"14\">" << title << "</text>\n";
    uint64_t widest = 1;
    for (std::size_t i = 0; i < shown; ++i) widest = std::max(widest, regions[i].size);
    for (std::size_t i = 0; i < shown; ++i) {
        const Region& r = regions[i];
        double y = top + row * double(i), scale = width / double(widest);
        svg << "<text x=\"10\" y=\"" << y + 14 << "\">" << r.kind << " " << human_bytes(r.size) << "</text>\n"
            << "<rect x=\"" << left << "\" y=\"" << y << "\" width=\"" << double(r.size) * scale << "\" height=\""
            << row - 6 << "\" fill=\"#f0f0f0\" stroke=\"#999\"/>\n";
        for (const WalkEntry& e : r.parts) {
            if (e.size == 0) continue;
            double x = left + double(reinterpret_cast<uintptr_t>(e.address) - r.start) * scale;
            double w = std::max(0.5, double(e.size) * scale);
            double inset = 2.0 * (e.depth - 1);
            svg << "<rect x=\"" << x << "\" y=\"" << y + inset << "\" width=\"" << w << "\" height=\""
                << std::max(2.0, row - 6 - 2 * inset) << "\" fill=\"" << colour_of(e.state)
                << "\"><title>" << e.kind << " " << kWalkStateNames[static_cast<unsigned>(e.state)] << " "
                << e.size << " B</title></rect>\n";
        }
    }
    double y = top + row * double(shown) + 20;
    const WalkState states[] = {WalkState::used, WalkState::free, WalkState::meta, WalkState::unused};
    for (int i = 0; i < 4; ++i) {
        svg << "<rect x=\"" << left + 120 * i << "\" y=\"" << y - 10 << "\" width=\"12\" height=\"12\" fill=\""
            << colour_of(states[i]) << "\" stroke=\"#999\"/><text x=\"" << left + 120 * i + 16 << "\" y=\"" << y
            << "\">" << kWalkStateNames[i] << "</text>\n";
    }
    if (regions.size() > shown)
        svg << "<text x=\"10\" y=\"" << y << "\">+" << regions.size() - shown << " more</text>\n";
    svg << "</svg>\n";
    return bool(svg);
}

bool write_plot(const std::vector<Metrics>& runs, const std::string& path, const std::string& title,
                std::string* error) {
    bool png = path.size() > 4 && path.compare(path.size() - 4, 4, ".png") == 0;
    std::ostringstream script;
    script << "set terminal " << (png ? "pngcairo size 1000,600" : "svg size 1000,600 dynamic") << "\n"
           << "set output '" << path << "'\n"
           << "set title '" << title << "' noenhanced\n"
           << "set xlabel 'operations'\nset ylabel 'MiB'\nset key outside right noenhanced\nset grid\n";
    for (std::size_t i = 0; i < runs.size(); ++i) {
        script << "$d" << i << " << EOD\n";
        for (const Sample& s : runs[i].timeline)
            script << s.op << " " << double(s.footprint) / 1048576.0 << " " << double(s.live_requested) / 1048576.0 << "\n";
        script << "EOD\n";
    }
    script << "plot ";
    for (std::size_t i = 0; i < runs.size(); ++i) {
        script << (i ? ", " : "") << "$d" << i << " using 1:2 with lines lw 2 lc " << i + 1 << " title '"
               << runs[i].stage << " footprint', $d" << i << " using 1:3 with lines dt 2 lc " << i + 1 << " title '"
               << runs[i].stage << " live'";
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
