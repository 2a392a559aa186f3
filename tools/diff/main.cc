// tools/diff/main.cc: `stagediff`, the same workload through every stage, side by side.
// Parses the command line, builds or reads the workloads, applies stage options, replays each
// workload through each chosen stage (replay.h) and prints the comparison (report.h).
// Stages are found in the registry, so a newly linked stage appears with no change here.
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iterator>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "contract/allocator.h"
#include "contract/options.h"
#include "tools/diff/replay.h"
#include "tools/diff/report.h"
#include "tools/diff/workload.h"

namespace edu::diff {
namespace {

struct Args {
    std::vector<std::string> workloads, traces, ltraces, stages, options;
    uint64_t seed = 1;
    double scale = 1.0;
    bool json = false, csv = false, timed = true, progress = false, list = false, help = false;
    std::string plot, picture_path, generate, convert;
    uint64_t picture_at = 0;
    std::vector<uint64_t> steps;
};

[[noreturn]] void usage_error(const std::string& what) {
    std::cerr << "stagediff: " << what << " (see --help)\n";
    std::exit(2);
}

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string part; std::getline(in, part, sep);)
        if (!part.empty()) out.push_back(part);
    return out;
}

uint64_t to_number(const std::string& text, const char* what) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || *end || errno || text[0] == '-') usage_error(std::string("bad ") + what + " '" + text + "'");
    return v;
}

// A path the user typed, relative to the directory they typed it in: under `bazel run` the
// tool runs in its runfiles tree and Bazel names the user's directory in BUILD_WORKING_DIRECTORY.
std::string user_path(const std::string& path) {
    const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
    if (path.empty() || path[0] == '/' || path == "-" || !cwd || !*cwd) return path;
    return std::string(cwd) + "/" + path;
}

// ---- The command line: one table --------------------------------------------------------------
// One row per option: its name, the placeholder of its value (nullptr for a switch), its group
// in --help, its help (lines after the first are indented under it) and what it does to Args.
// --help is printed from this table, so a new option is one row.
struct Flag {
    const char* name;
    const char* value;
    const char* group;
    const char* help;
    void (*apply)(Args& a, const std::string& value);
};

const Flag kFlags[] = {
    {"--workload", "NAME", "workloads (default: the built-in 'ring')",
     "a built-in workload: ring, fragment, realloc, phase, or 'all'; repeatable",
     [](Args& a, const std::string& v) { a.workloads.push_back(v); }},
    {"--trace", "FILE", nullptr, "a malloc-lab trace ('a id size', 'f id', 'r id size'); repeatable",
     [](Args& a, const std::string& v) { a.traces.push_back(user_path(v)); }},
    {"--ltrace", "FILE", nullptr, "output of `ltrace -e malloc+free+calloc+realloc PROGRAM`; repeatable",
     [](Args& a, const std::string& v) { a.ltraces.push_back(user_path(v)); }},
    {"--seed", "N", nullptr, "seed of the built-in workloads (default 1)",
     [](Args& a, const std::string& v) { a.seed = to_number(v, "seed"); }},
    {"--scale", "X", nullptr, "size of the built-in workloads (default 1.0, at most 1000)",
     [](Args& a, const std::string& v) {
         char* end = nullptr;
         a.scale = std::strtod(v.c_str(), &end);
         if (v.empty() || *end || !(a.scale > 0 && a.scale <= 1000)) usage_error("bad scale '" + v + "'");
     }},
    {"--stages", "LIST", "stages", "stage numbers or names, comma-separated (default: all linked stages)",
     [](Args& a, const std::string& v) { a.stages = split(v, ','); }},
    {"--option", "STAGE.NAME=VALUE", nullptr,
     "set a stage option, e.g. --option=stage1_brk.fit=best; repeatable\n(EDU_OPTIONS in the environment works too)",
     [](Args& a, const std::string& v) { a.options.push_back(v); }},
    {"--list", nullptr, nullptr, "list the stages and the option values a run would use, and the built-in workloads",
     [](Args& a, const std::string&) { a.list = true; }},
    {"--json", nullptr, "output", "machine-readable results instead of the table",
     [](Args& a, const std::string&) { a.json = true; }},
    {"--csv", nullptr, nullptr, "the same as CSV, one row per workload and stage",
     [](Args& a, const std::string&) { a.csv = true; }},
    {"--plot", "FILE", nullptr, "footprint and live bytes over time for every stage (.svg or .png)",
     [](Args& a, const std::string& v) { a.plot = user_path(v); }},
    {"--picture", "N:FILE", nullptr,
     "an SVG picture of each stage's heap after N operations\n(FILE gets the stage name: heap.svg -> heap-stage1_brk.svg)",
     [](Args& a, const std::string& v) {
         std::size_t colon = v.find(':');
         if (colon == std::string::npos) usage_error("--picture wants N:FILE");
         a.picture_at = to_number(v.substr(0, colon), "operation count");
         if (a.picture_at == 0) usage_error("--picture counts operations from 1");
         a.picture_path = user_path(v.substr(colon + 1));
     }},
    {"--steps", "N[,M...]", nullptr, "print each stage's heap after these operations",
     [](Args& a, const std::string& v) {
         for (const std::string& n : split(v, ',')) a.steps.push_back(to_number(n, "step"));
     }},
    {"--no-time", nullptr, nullptr, "skip the timed pass (validation only)",
     [](Args& a, const std::string&) { a.timed = false; }},
    {"--progress", nullptr, nullptr, "report progress on stderr during long runs",
     [](Args& a, const std::string&) { a.progress = true; }},
    {"--generate", "NAME", "other modes", "print a built-in workload as a malloc-lab trace and exit",
     [](Args& a, const std::string& v) { a.generate = v; }},
    {"--convert-ltrace", "FILE", nullptr, "print ltrace output converted to a malloc-lab trace and exit",
     [](Args& a, const std::string& v) { a.convert = user_path(v); }},
    {"--help", nullptr, nullptr, "this text", [](Args& a, const std::string&) { a.help = true; }},
};

constexpr const char* kHelpTrailer = R"(
Relative paths are relative to the directory you ran the command from (under `bazel run`,
BUILD_WORKING_DIRECTORY).

exit status: 0 when every stage passed validation, 1 when one failed, 2 for bad usage or input.
)";

void print_help(std::ostream& out) {
    out << "stagediff: replay workloads through every allocator stage and compare them.\n\n"
           "usage: stagediff [options]\n";
    for (const Flag& f : kFlags) {
        if (f.group) out << "\n" << f.group << ":\n";
        std::string head = std::string("  ") + f.name + (f.value ? std::string("=") + f.value : "");
        std::vector<std::string> lines = split(f.help, '\n');
        for (std::size_t i = 0; i < lines.size(); ++i) {
            if (i == 0 && head.size() < 24) out << head << std::string(24 - head.size(), ' ') << lines[i] << "\n";
            else if (i == 0) out << head << "\n" << std::string(24, ' ') << lines[i] << "\n";
            else out << std::string(24, ' ') << lines[i] << "\n";
        }
    }
    out << kHelpTrailer;
}

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-h") arg = "--help";
        std::size_t eq = arg.find('=');
        std::string name = arg.substr(0, eq), value = eq == std::string::npos ? "" : arg.substr(eq + 1);
        const Flag* flag = nullptr;
        for (const Flag& f : kFlags)
            if (name == f.name) flag = &f;
        if (!flag) usage_error("unknown argument '" + arg + "'");
        if (flag->value && eq == std::string::npos) usage_error(name + " wants a value: " + name + "=" + flag->value);
        if (!flag->value && eq != std::string::npos) usage_error(name + " takes no value");
        flag->apply(a, value);
    }
    if (a.help) {
        print_help(std::cout);
        std::exit(0);
    }
    if (a.json && a.csv) usage_error("choose one of --json and --csv");
    return a;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) usage_error("cannot read '" + path + "'");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::vector<const Stage*> chosen_stages(const Args& a) {
    std::vector<const Stage*> out;
    if (a.stages.empty()) {
        for (std::size_t i = 0; i < stage_count(); ++i) out.push_back(&stage_at(i));
        return out;
    }
    for (const std::string& s : a.stages) {
        const Stage* st = std::isdigit(static_cast<unsigned char>(s[0])) ? find_stage(static_cast<int>(to_number(s, "stage")))
                                                                        : find_stage(s.c_str());
        if (!st) usage_error("no stage '" + s + "' is linked in (try --list)");
        out.push_back(st);
    }
    return out;
}

// Options the tool sets before the user's. The driver itself allocates with glibc's malloc,
// which grows the program break too; stage 1 gets a break of its own so the driver's
// allocations do not land between its regions. --option=stage1_brk.break=sbrk undoes it.
const char* const kDefaultOptions[] = {"stage1_brk.break=reserved"};

void apply_options(const Args& a) {
    std::vector<std::string> all(std::begin(kDefaultOptions), std::end(kDefaultOptions));
    all.insert(all.end(), a.options.begin(), a.options.end());
    for (std::size_t i = 0; i < stage_count(); ++i)
        if (!apply_environment_options(stage_at(i))) std::exit(2);
    for (const std::string& o : all) {
        std::size_t dot = o.find('.'), eq = o.find('=');
        if (dot == std::string::npos || eq == std::string::npos || eq < dot)
            usage_error("--option wants STAGE.NAME=VALUE, got '" + o + "'");
        std::string stage = o.substr(0, dot), name = o.substr(dot + 1, eq - dot - 1), value = o.substr(eq + 1);
        const Stage* st = std::isdigit(static_cast<unsigned char>(stage[0])) ? find_stage(std::atoi(stage.c_str()))
                                                                            : find_stage(stage.c_str());
        if (!st) {
            if (&o < &all[std::size(kDefaultOptions)]) continue;  // a default for a stage not linked in
            usage_error("no stage '" + stage + "' for option '" + o + "'");
        }
        if (!st->set_option(name.c_str(), value.c_str()))
            usage_error(std::string(st->name) + " has no option " + name + "=" + value);
    }
}

void list_everything() {
    for (std::size_t i = 0; i < stage_count(); ++i) {
        const Stage& s = stage_at(i);
        std::cout << s.number << "  " << s.name << ": " << s.summary << "\n";
        for (std::size_t k = 0; k < s.option_count; ++k)
            std::cout << "     " << s.name << "." << s.options[k].name << "=" << s.options[k].values << "  (now "
                      << s.get_option(s.options[k].name) << ")  " << s.options[k].help << "\n";
    }
    std::cout << "built-in workloads:";
    for (const std::string& n : builtin_names()) std::cout << " " << n;
    std::cout << "\n";
}

std::string picture_name(const std::string& path, const std::string& stage) {
    std::size_t dot = path.rfind('.');
    if (dot == std::string::npos || dot < path.rfind('/') + 1) return path + "-" + stage;
    return path.substr(0, dot) + "-" + stage + path.substr(dot);
}

int run(int argc, char** argv) {
    Args a = parse_args(argc, argv);
    if (a.list) {  // after the options, so it shows the values a run would use
        apply_options(a);
        list_everything();
        return 0;
    }
    if (!a.generate.empty()) {
        Workload w;
        if (!make_builtin(a.generate, a.seed, a.scale, &w)) usage_error("no built-in workload '" + a.generate + "'");
        std::cout << format_trace(w);
        return 0;
    }
    if (!a.convert.empty()) {
        Workload w;
        std::string error;
        if (!parse_ltrace(read_file(a.convert), a.convert, &w, &error)) {
            std::cerr << "stagediff: " << error << "\n";
            return 2;
        }
        std::cout << format_trace(w);
        return 0;
    }

    std::vector<Workload> workloads;
    std::vector<std::string> names = a.workloads;
    if (names.size() == 1 && names[0] == "all") names = builtin_names();
    if (names.empty() && a.traces.empty() && a.ltraces.empty()) names.push_back("ring");
    for (const std::string& n : names) {
        Workload w;
        if (!make_builtin(n, a.seed, a.scale, &w)) usage_error("no built-in workload '" + n + "'");
        workloads.push_back(std::move(w));
    }
    for (const std::string& path : a.traces) {
        Workload w;
        std::string error;
        if (!parse_trace(read_file(path), path, &w, &error)) {
            std::cerr << "stagediff: " << error << "\n";
            return 2;
        }
        workloads.push_back(std::move(w));
    }
    for (const std::string& path : a.ltraces) {
        Workload w;
        std::string error;
        if (!parse_ltrace(read_file(path), path, &w, &error)) {
            std::cerr << "stagediff: " << error << "\n";
            return 2;
        }
        workloads.push_back(std::move(w));
    }

    for (const Workload& w : workloads) {
        for (uint64_t step : a.steps)
            if (step == 0 || step > w.ops.size())
                usage_error("--steps: step " + std::to_string(step) + " is beyond the end of " + w.name + " (" +
                            std::to_string(w.ops.size()) + " operations)");
        if (a.picture_at > w.ops.size())
            usage_error("--picture: step " + std::to_string(a.picture_at) + " is beyond the end of " + w.name + " (" +
                        std::to_string(w.ops.size()) + " operations)");
    }

    apply_options(a);
    std::vector<const Stage*> stages = chosen_stages(a);
    if (stages.empty()) usage_error("no stages are linked in");

    bool all_valid = true;
    for (const Workload& w : workloads) {
        ReplayOptions options;
        options.timed = a.timed;
        options.pause_at = a.steps;
        if (a.picture_at) options.pause_at.push_back(a.picture_at);
        std::sort(options.pause_at.begin(), options.pause_at.end());
        options.on_pause = [&](const Stage& s, uint64_t done) {
            if (std::find(a.steps.begin(), a.steps.end(), done) != a.steps.end()) {
                std::cout << s.name << " after " << done << " operations of " << w.name << ":\n";
                print_heap(std::cout, s, 40);
            }
            if (done == a.picture_at) {
                std::string path = picture_name(a.picture_path, s.name);
                if (!write_heap_picture(s, path, std::string(s.name) + " after " + std::to_string(done) + " operations of " + w.name))
                    std::cerr << "stagediff: cannot write " << path << "\n";
                else
                    std::cerr << "stagediff: wrote " << path << "\n";
            }
        };
        if (a.progress) {
            options.on_progress = [](const Stage& s, uint64_t done, uint64_t total) {
                std::cerr << "  " << s.name << ": " << done << " / " << total << " operations\r" << std::flush;
            };
        }
        std::vector<Metrics> runs;
        for (const Stage* s : stages) {
            runs.push_back(replay(*s, w, options));
            if (a.progress) std::cerr << "\n";
            all_valid = all_valid && runs.back().valid;
        }
        std::string title = "workload " + w.name + ": " + std::to_string(w.ops.size()) + " operations on " +
                            std::to_string(w.ids) + " block ids";
        if (a.json) print_json(std::cout, w.name, runs);
        else if (a.csv) print_csv(std::cout, w.name, runs);
        else {
            print_table(std::cout, title, runs);
            std::cout << "\n";
        }
        if (!a.plot.empty()) {
            std::string error, path = workloads.size() > 1 ? picture_name(a.plot, w.name) : a.plot;
            if (!write_plot(runs, path, title, &error)) {
                std::cerr << "stagediff: " << error << "\n";
                return 2;
            }
            std::cerr << "stagediff: wrote " << path << "\n";
        }
    }
    return all_valid ? 0 : 1;
}

}  // namespace
}  // namespace edu::diff

int main(int argc, char** argv) { return edu::diff::run(argc, argv); }
