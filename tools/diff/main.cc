// tools/diff/main.cc: `stagediff`, the same workload through every stage, side by side.
// Parses the command line, builds or reads the workloads, applies stage options, replays each
// workload through each chosen stage (replay.h) and prints the comparison (report.h).
// Stages are found in the registry, so a newly linked stage appears with no change here.
#include <algorithm>
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

constexpr const char* kHelp = R"(stagediff: replay one workload through every allocator stage and compare them.

usage: stagediff [options]

workloads (default: the built-in 'ring'):
  --workload=NAME       a built-in workload: ring, fragment, realloc, phase, or 'all'
  --trace=FILE          a malloc-lab trace ('a id size', 'f id', 'r id size'); repeatable
  --ltrace=FILE         output of `ltrace -e malloc+free+calloc+realloc PROGRAM`; repeatable
  --seed=N              seed of the built-in workloads (default 1)
  --scale=X             size of the built-in workloads (default 1.0)

stages:
  --stages=LIST         stage numbers or names, comma-separated (default: all linked stages)
  --option=STAGE.NAME=VALUE
                        set a stage option, e.g. --option=stage1_brk.fit=best; repeatable
                        (EDU_OPTIONS in the environment works too)
  --list                list the stages, their options, and the built-in workloads

output:
  --json, --csv         machine-readable results instead of the table
  --plot=FILE           footprint and live bytes over time for every stage (.svg or .png)
  --picture=N:FILE      an SVG picture of each stage's heap after N operations
                        (FILE gets the stage name: heap.svg -> heap-stage1_brk.svg)
  --steps=N[,M...]      print each stage's heap after these operations
  --no-time             skip the timed pass (validation only)
  --progress            report progress on stderr during long runs

other modes:
  --generate=NAME       print a built-in workload as a malloc-lab trace and exit
  --convert-ltrace=FILE print ltrace output converted to a malloc-lab trace and exit

exit status: 0 when every stage passed validation, 1 when one failed, 2 for bad usage.
)";

struct Args {
    std::vector<std::string> workloads, traces, ltraces, stages, options;
    uint64_t seed = 1;
    double scale = 1.0;
    bool json = false, csv = false, timed = true, progress = false, list = false;
    std::string plot, picture_path, generate, convert;
    uint64_t picture_at = 0;
    std::vector<uint64_t> steps;
};

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::stringstream in(s);
    for (std::string part; std::getline(in, part, sep);)
        if (!part.empty()) out.push_back(part);
    return out;
}

[[noreturn]] void usage_error(const std::string& what) {
    std::cerr << "stagediff: " << what << " (see --help)\n";
    std::exit(2);
}

uint64_t to_number(const std::string& text, const char* what) {
    char* end = nullptr;
    unsigned long long v = std::strtoull(text.c_str(), &end, 10);
    if (text.empty() || *end) usage_error(std::string("bad ") + what + " '" + text + "'");
    return v;
}

Args parse_args(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        auto value = [&](const char* flag) -> std::string {
            std::string prefix = std::string(flag) + "=";
            return arg.compare(0, prefix.size(), prefix) == 0 ? arg.substr(prefix.size()) : std::string();
        };
        auto has = [&](const char* flag) { return arg.compare(0, std::strlen(flag) + 1, std::string(flag) + "=") == 0; };
        if (arg == "--help" || arg == "-h") {
            std::cout << kHelp;
            std::exit(0);
        } else if (arg == "--json") a.json = true;
        else if (arg == "--csv") a.csv = true;
        else if (arg == "--no-time") a.timed = false;
        else if (arg == "--progress") a.progress = true;
        else if (arg == "--list") a.list = true;
        else if (has("--workload")) a.workloads.push_back(value("--workload"));
        else if (has("--trace")) a.traces.push_back(value("--trace"));
        else if (has("--ltrace")) a.ltraces.push_back(value("--ltrace"));
        else if (has("--seed")) a.seed = to_number(value("--seed"), "seed");
        else if (has("--scale")) {
            a.scale = std::atof(value("--scale").c_str());
            if (a.scale <= 0 || a.scale > 1000) usage_error("bad scale '" + value("--scale") + "'");
        } else if (has("--stages")) a.stages = split(value("--stages"), ',');
        else if (has("--option")) a.options.push_back(value("--option"));
        else if (has("--plot")) a.plot = value("--plot");
        else if (has("--picture")) {
            std::string v = value("--picture");
            std::size_t colon = v.find(':');
            if (colon == std::string::npos) usage_error("--picture wants N:FILE");
            a.picture_at = to_number(v.substr(0, colon), "operation count");
            a.picture_path = v.substr(colon + 1);
        } else if (has("--steps")) {
            for (const std::string& n : split(value("--steps"), ',')) a.steps.push_back(to_number(n, "step"));
        } else if (has("--generate")) a.generate = value("--generate");
        else if (has("--convert-ltrace")) a.convert = value("--convert-ltrace");
        else usage_error("unknown argument '" + arg + "'");
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
    if (a.list) {
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
