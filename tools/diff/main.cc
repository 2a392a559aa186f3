// tools/diff/main.cc: `stagediff`, the same workloads through every stage, side by side.
// Parses the command line (one table of options), reads or builds the workloads, applies stage
// options, replays each workload through each chosen stage and the C library's malloc, each in
// a child process (replay.h), and prints the per-trace table, JSON or CSV (report.h).
// Stages are found in the registry, so a newly linked stage appears with no change here.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>

#include "contract/allocator.h"
#include "contract/options.h"
#include "tools/diff/html.h"
#include "tools/diff/libc_reference.h"
#include "tools/diff/repl.h"
#include "tools/diff/replay.h"
#include "tools/diff/report.h"
#include "tools/diff/workload.h"

namespace edu::diff {
namespace {

// A file the user named: as typed (for messages) and as opened.
struct Input {
    std::string shown, path;
};

struct Args {
    std::vector<std::string> workloads, stages, options;
    std::vector<Input> traces, ltraces;
    Input convert;
    uint64_t seed = 1;
    double scale = 1.0;
    unsigned reps = 3;
    bool json = false, csv = false, timed = true, progress = false, list = false, help = false;
    bool libc = true, detail = false, repl = false;
    std::string html;
    std::string plot, picture_path, generate;
    uint64_t picture_at = 0;
    int64_t picture_from = 0, picture_to = 0;
    std::vector<uint64_t> steps;
    std::size_t heap_lines = 40;  // entries of each heap --steps prints
};

// `see`: where the right spelling is listed (--list for stages, options and workloads).
[[noreturn]] void usage_error(const std::string& what, const char* see = "--help") {
    std::cerr << "stagediff: " << what << " (see " << see << ")\n";
    std::exit(2);
}

// A file the run writes at its end (--html, --plot, --picture's folder) must be writable before
// the run starts: the ring's page takes minutes to record, and a missing folder was found only
// then (--plot blamed gnuplot; --picture went on and exited 0). `shown` is the path as typed.
void check_writable(const char* option, const std::string& shown, const std::string& path, bool folder_only) {
    auto fail = [&](const std::string& what) {
        std::cerr << "stagediff: " << option << ": cannot write " << what << ": " << std::strerror(errno) << "\n";
        std::exit(2);
    };
    struct stat st;
    if (!folder_only && stat(path.c_str(), &st) == 0) {
        if (S_ISDIR(st.st_mode)) errno = EISDIR;
        else if (access(path.c_str(), W_OK) == 0) return;
        fail(shown);
    }
    auto folder = [](const std::string& p) {
        std::size_t slash = p.rfind('/');
        return slash == std::string::npos ? std::string(".") : slash == 0 ? std::string("/") : p.substr(0, slash);
    };
    if (access(folder(path).c_str(), W_OK | X_OK) != 0) fail("into " + folder(shown));
}

// A comma-separated option's items (--stages, --steps); an empty item is refused, not dropped.
std::vector<std::string> items(const char* option, const std::string& v) {
    std::vector<std::string> out;
    std::size_t from = 0;
    for (;;) {
        std::size_t comma = v.find(',', from);
        out.push_back(v.substr(from, comma == std::string::npos ? std::string::npos : comma - from));
        if (out.back().empty()) usage_error(std::string(option) + ": an empty item in '" + v + "'");
        if (comma == std::string::npos) return out;
        from = comma + 1;
    }
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

Input user_input(const std::string& path) { return {path, user_path(path)}; }

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
    {"--trace", "FILE", nullptr, "a malloc-lab trace ('a id size', 'f id', 'r id size', each optionally\n"
     "followed by '@THREAD': see below); repeatable",
     [](Args& a, const std::string& v) { a.traces.push_back(user_input(v)); }},
    {"--ltrace", "FILE", nullptr, "output of `ltrace -e malloc+free+calloc+realloc PROGRAM`; repeatable",
     [](Args& a, const std::string& v) { a.ltraces.push_back(user_input(v)); }},
    {"--seed", "N", nullptr, "seed of the built-in workloads (default 1)",
     [](Args& a, const std::string& v) { a.seed = to_number(v, "seed"); }},
    {"--scale", "X", nullptr, "size of the built-in workloads (default 1.0, at most 1000)",
     [](Args& a, const std::string& v) {
         char* end = nullptr;
         a.scale = std::strtod(v.c_str(), &end);
         if (v.empty() || *end || !(a.scale > 0 && a.scale <= 1000)) usage_error("bad scale '" + v + "'");
     }},
    {"--stages", "LIST", "stages", "stage numbers or names, comma-separated (default: all linked stages)",
     [](Args& a, const std::string& v) { a.stages = items("--stages", v); }},
    {"--option", "STAGE.NAME=VALUE", nullptr,
     "set a stage option, e.g. --option=stage1_brk.fit=best; repeatable\n(EDU_OPTIONS in the environment works too)",
     [](Args& a, const std::string& v) { a.options.push_back(v); }},
    {"--no-libc", nullptr, nullptr, "leave out the reference column: the C library's malloc (glibc)",
     [](Args& a, const std::string&) { a.libc = false; }},
    {"--list", nullptr, nullptr, "list the stages, the option values a run would use, and the built-in\nworkloads "
     "(a mode of its own: only --option goes with it)",
     [](Args& a, const std::string&) { a.list = true; }},
    {"--json", nullptr, "output",
     "one JSON document for the whole run instead of the tables (docs/diffing.md):\n"
     "{tool, format, definitions, traces: [{name, operations, ids, warnings,\n"
     " results: [{stage, reference, valid, failure, failure_line, enomem,\n"
     "  enomem_line, operations, repetitions, seconds, seconds_min, seconds_max,\n"
     "  ops_per_second, peak_live_bytes, footprint_at_peak, peak_footprint,\n"
     "  final_footprint, utilisation, mdriver_utilisation, internal_fragmentation,\n"
     "  os_calls, walk_at_peak, steps}]}],\n"
     " mean: [{stage, traces, valid_traces, utilisation, mdriver_utilisation,\n"
     "  ops_per_second}], valid}",
     [](Args& a, const std::string&) { a.json = true; }},
    {"--csv", nullptr, nullptr, "the same as CSV, one row per workload and column",
     [](Args& a, const std::string&) { a.csv = true; }},
    {"--plot", "FILE", nullptr, "footprint and live bytes over time for every stage (.svg or .png)",
     [](Args& a, const std::string& v) {
         a.plot = user_path(v);
         check_writable("--plot", v, a.plot, false);
     }},
    {"--picture", "N:FILE[@FROM-TO]", nullptr,
     "an SVG picture of each stage's heap after N operations\n(FILE gets the stage name: heap.svg -> heap-stage1_brk.svg);\n"
     "@FROM-TO zooms to those offsets from the heap's first region, as --steps\nprints them: signed "
     "(+16, -1572736; a region below the first is negative),\ndecimal or 0x hex; the '-' between "
     "them is the first after FROM's sign:\n@-100--50, @-4096-+4096",
     [](Args& a, const std::string& v) {
         std::size_t colon = v.find(':');
         if (colon == std::string::npos) usage_error("--picture wants N:FILE");
         a.picture_at = to_number(v.substr(0, colon), "operation count");
         if (a.picture_at == 0) usage_error("--picture counts operations from 1");
         std::string file = v.substr(colon + 1);
         std::size_t at = file.rfind('@');
         if (at != std::string::npos) {
             std::string range = file.substr(at + 1);
             std::size_t dash = range.find('-', 1);   // FROM may start with its sign: @-100--50
             auto offset = [&](const std::string& t) {
                 char* end = nullptr;
                 errno = 0;
                 long long x = std::strtoll(t.c_str(), &end, 0);
                 std::size_t first = !t.empty() && (t[0] == '-' || t[0] == '+') ? 1 : 0;   // a digit after the sign
                 if (first >= t.size() || !std::isdigit(static_cast<unsigned char>(t[first])) || *end || errno)
                     usage_error("bad offset '" + t + "' in --picture=" + v);
                 return static_cast<int64_t>(x);
             };
             if (dash == std::string::npos) usage_error("--picture wants @FROM-TO, got '@" + range + "'");
             a.picture_from = offset(range.substr(0, dash));
             a.picture_to = offset(range.substr(dash + 1));
             if (a.picture_to <= a.picture_from) usage_error("--picture: the range " + range + " is empty");
             file = file.substr(0, at);
         }
         if (file.empty()) usage_error("--picture wants N:FILE");
         a.picture_path = user_path(file);
         check_writable("--picture", file, a.picture_path, true);   // FILE gets each stage's name
     }},
    {"--steps", "N[,M...]", nullptr,
     "print each stage's heap after these operations, from the second on\n"
     "what changed since the one before first (with --json: in each\n"
     "result's \"steps\": [{after, heap}], the heap as the step-through page's\n"
     "edu.state() gives it)",
     [](Args& a, const std::string& v) {
         for (const std::string& n : items("--steps", v)) {
             a.steps.push_back(to_number(n, "step"));
             if (a.steps.back() == 0) usage_error("--steps counts operations from 1");
         }
     }},
    {"--heap-lines", "N", nullptr,
     "entries of each heap --steps prints, and of each list of changes\n"
     "(default 40; 0: every entry, as stages 2 to 4 need: their walks run\n"
     "to hundreds of pools or pages)",
     [](Args& a, const std::string& v) {
         uint64_t n = to_number(v, "line count");
         a.heap_lines = n == 0 ? SIZE_MAX : static_cast<std::size_t>(n);
     }},
    {"--no-time", nullptr, nullptr, "skip the timed passes (validation only)",
     [](Args& a, const std::string&) { a.timed = false; }},
    {"--reps", "N", nullptr, "timed passes per workload and stage (default 3); min / median / max shown",
     [](Args& a, const std::string& v) {
         uint64_t n = to_number(v, "repetition count");
         if (n < 1 || n > 1000) usage_error("--reps wants 1..1000, got " + v);
         a.reps = static_cast<unsigned>(n);
     }},
    {"--detail", nullptr, nullptr, "the detailed table of every workload, also when there are several",
     [](Args& a, const std::string&) { a.detail = true; }},
    {"--progress", nullptr, nullptr, "report progress on stderr during long runs",
     [](Args& a, const std::string&) { a.progress = true; }},
    {"--html", "FILE", nullptr,
     "a step-through page of the (first) workload through the stages: one\n"
     "self-contained HTML file that works offline (docs/diffing.md, \"The\n"
     "step-through page\")",
     [](Args& a, const std::string& v) {
         a.html = user_path(v);
         check_writable("--html", v, a.html, false);
     }},
    {"--repl", nullptr, "other modes",
     "read operations ('a ID SIZE', 'f ID', 'r ID SIZE', each optionally\n"
     "'@THREAD', 'show', 'undo', 'check', 'help') from standard input; print every\n"
     "stage's answer and heap after each (only --stages and --option go with it)",
     [](Args& a, const std::string&) { a.repl = true; }},
    {"--generate", "NAME", nullptr, "print a built-in workload as a malloc-lab trace and exit (only --seed\nand --scale go with it)",
     [](Args& a, const std::string& v) { a.generate = v; }},
    {"--convert-ltrace", "FILE", nullptr, "print ltrace output converted to a malloc-lab trace and exit (alone)",
     [](Args& a, const std::string& v) { a.convert = user_input(v); }},
    {"--help", nullptr, nullptr, "this text", [](Args& a, const std::string&) { a.help = true; }},
};

constexpr const char* kHelpTrailer = R"(
Each workload (and each stage) replays in a child process of its own: a fresh heap every time.
The tables show, per stage and per trace:
  utilisation          live bytes / footprint, at the operation where live bytes peak
  mdriver utilisation  peak live bytes / the largest footprint of the replay: mdriver's
                       peak payload over the heap's extent at the end, the heap never shrinking
where live bytes are the sizes the trace requested and footprint is what the stage holds from
the OS (brk ranges and mappings; for libc, mallinfo2's arena + hblkhd).
A request the stage cannot serve answered NULL with errno ENOMEM is a correct answer: the
tables say ENOMEM and the replay goes on.

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
        std::vector<std::string> lines = split(f.help, '\n');   // beside the option, two spaces at least
        for (std::size_t i = 0; i < lines.size(); ++i) {
            if (i == 0 && head.size() <= 22) out << head << std::string(24 - head.size(), ' ') << lines[i] << "\n";
            else if (i == 0) out << head << "\n" << std::string(24, ' ') << lines[i] << "\n";
            else out << std::string(24, ' ') << lines[i] << "\n";
        }
    }
    out << "\nTraces: ids 0.." << kMaxIds - 1 << ", sizes up to " << kMaxSize << " bytes (1 TiB), lines up to "
        << kMaxLine << " bytes,\nat most " << kMaxOps << " operations; "
        << "`f -1` is free(NULL), a realloc of an id never allocated is\na malloc. Errors say FILE:LINE: what "
        << "is wrong; a header whose counts disagree with the body is a\nwarning.\n"
        << "Other threads: `f 3 @2` (any operation, then @1..@" << kMaxThreads << ") is done by thread 2, a helper\n"
        << "thread the replay hands it to and waits for (one thread at a time: deterministic). Such a trace\n"
        << "replays through every stage's thread-safe entry; for stage 4, freeing another thread's block is\n"
        << "a remote free, shown as state 'remote' until the owner collects it.\n"
        << kHelpTrailer;
}

// The other modes and the options each uses; any other option beside one was ignored
// (`--repl --trace=a.rep` started empty, `--generate=ring --html=p.html` wrote no page).
struct Mode {
    const char* name;
    std::vector<std::string> uses;
};
const Mode kModes[] = {{"--list", {"--option"}},
                       {"--generate", {"--seed", "--scale"}},
                       {"--convert-ltrace", {}},
                       {"--repl", {"--stages", "--option"}}};

void check_mode(const std::vector<std::string>& given) {
    const Mode* mode = nullptr;
    for (const Mode& m : kModes)
        if (std::find(given.begin(), given.end(), m.name) != given.end()) {
            if (mode) usage_error(std::string("choose one of ") + mode->name + " and " + m.name);
            mode = &m;
        }
    if (!mode) return;
    for (const std::string& g : given) {
        if (g == mode->name || std::find(mode->uses.begin(), mode->uses.end(), g) != mode->uses.end()) continue;
        std::string uses;
        for (std::size_t k = 0; k < mode->uses.size(); ++k)
            uses += (k == 0 ? "" : k + 1 == mode->uses.size() ? " and " : ", ") + mode->uses[k];
        usage_error(std::string(mode->name) + " does not use " + g +
                    (uses.empty() ? std::string("; it takes no other option") : "; it takes " + uses));
    }
}

Args parse_args(int argc, char** argv) {
    Args a;
    std::vector<std::string> given;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-h") arg = "--help";
        std::size_t eq = arg.find('=');
        std::string name = arg.substr(0, eq), value = eq == std::string::npos ? "" : arg.substr(eq + 1);
        const Flag* flag = nullptr;
        for (const Flag& f : kFlags)
            if (name == f.name) flag = &f;
        if (!flag) usage_error("unknown argument '" + arg + "'");
        if (flag->value && value.empty())   // `--html=` ran the whole ring and wrote no page
            usage_error(name + " wants a value: " + name + "=" + flag->value);
        if (!flag->value && eq != std::string::npos) usage_error(name + " takes no value");
        flag->apply(a, value);
        given.push_back(name);
    }
    if (a.help) {
        print_help(std::cout);
        std::exit(0);
    }
    check_mode(given);
    if (a.json && a.csv) usage_error("choose one of --json and --csv");
    return a;
}

// Bad input (not bad usage): one line naming the file, and its line when there is one.
[[noreturn]] void input_error(const std::string& error) {
    std::cerr << "stagediff: " << error << "\n";
    std::exit(2);
}

// Opens a file the user named, or exits with status 2 saying why it cannot be read.
std::ifstream open_input(const Input& in) {
    struct stat st {};
    if (stat(in.path.c_str(), &st) != 0) input_error(in.shown + ": " + std::strerror(errno));
    if (S_ISDIR(st.st_mode)) input_error(in.shown + ": is a directory, not a trace");
    std::ifstream file(in.path, std::ios::binary);
    if (!file) input_error(in.shown + ": " + std::strerror(errno));
    return file;
}

// The machine's memory; a trace whose live bytes would exceed it cannot be replayed honestly
// (requests larger than it on their own are fine: they must fail with ENOMEM).
uint64_t machine_memory() {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : UINT64_MAX;
}

void check_fits(const Workload& w) {
    const uint64_t memory = machine_memory();
    Peak peak = live_peak(w, memory, memory);
    if (peak.bytes > memory)
        input_error(w.name + ":" + std::to_string(w.ops[peak.op].line) + ": the trace holds " + human_bytes(peak.bytes) +
                    " live here, more than this machine's " + human_bytes(memory) + " of memory");
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
        if (!st) usage_error("no stage '" + s + "' is linked in", "--list");
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
    if (!contract_options().ok) std::exit(2);  // e.g. debug=on: the replays go through debug mode
    for (const std::string& o : all) {
        std::size_t dot = o.find('.'), eq = o.find('=');
        if (dot == std::string::npos || eq == std::string::npos || eq < dot)
            usage_error("--option wants STAGE.NAME=VALUE, got '" + o + "'");
        std::string stage = o.substr(0, dot), name = o.substr(dot + 1, eq - dot - 1), value = o.substr(eq + 1);
        const Stage* st = std::isdigit(static_cast<unsigned char>(stage[0])) ? find_stage(std::atoi(stage.c_str()))
                                                                            : find_stage(stage.c_str());
        if (!st) {
            if (&o < &all[std::size(kDefaultOptions)]) continue;  // a default for a stage not linked in
            usage_error("no stage '" + stage + "' for option '" + o + "'", "--list");
        }
        if (!st->set_option(name.c_str(), value.c_str()))
            usage_error(std::string(st->name) + " has no option " + name + "=" + value, "--list");
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
    std::cout << "0  libc: " << libc_reference().summary << " (the reference column; --no-libc leaves it out)\n"
              << "built-in workloads:";
    for (const std::string& n : builtin_names()) std::cout << " " << n;
    std::cout << "\n";
}

std::string picture_name(const std::string& path, const std::string& stage) {
    std::size_t dot = path.rfind('.');
    if (dot == std::string::npos || dot < path.rfind('/') + 1) return path + "-" + stage;
    return path.substr(0, dot) + "-" + stage + path.substr(dot);
}

// A workload's name fit for a file name: the last part of its path, without its extension.
std::string short_name(const std::string& name) {
    std::string base = name.substr(name.rfind('/') + 1);
    return base.substr(0, base.rfind('.'));
}

Workload read_trace(const Input& in) {
    std::ifstream file = open_input(in);
    Workload w;
    std::string error;
    if (!parse_trace(file, in.shown, &w, &error)) input_error(error);
    return w;
}

Workload read_ltrace(const Input& in) {
    std::ifstream file = open_input(in);
    Workload w;
    std::string error;
    uint64_t dropped = 0;
    if (!parse_ltrace(file, in.shown, &w, &error, &dropped)) input_error(error);
    if (dropped)
        std::cerr << "stagediff: " << in.shown << ": dropped " << dropped
                  << " calls made from inside the C library (libc.so.6->...): the program did not make them\n";
    return w;
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
        if (!make_builtin(a.generate, a.seed, a.scale, &w)) usage_error("no built-in workload '" + a.generate + "'", "--list");
        std::cout << format_trace(w);
        return 0;
    }
    if (!a.convert.path.empty()) {
        std::cout << format_trace(read_ltrace(a.convert));
        return 0;
    }
    if (a.repl) {
        apply_options(a);
        return run_repl(chosen_stages(a), std::cin, std::cout);
    }

    std::vector<Workload> workloads;
    std::vector<std::string> names = a.workloads;
    if (names.size() == 1 && names[0] == "all") names = builtin_names();
    if (names.empty() && a.traces.empty() && a.ltraces.empty()) names.push_back("ring");
    for (const std::string& n : names) {
        Workload w;
        if (!make_builtin(n, a.seed, a.scale, &w)) usage_error("no built-in workload '" + n + "'", "--list");
        workloads.push_back(std::move(w));
    }
    for (const Input& in : a.traces) workloads.push_back(read_trace(in));
    for (const Input& in : a.ltraces) workloads.push_back(read_ltrace(in));
    for (const Workload& w : workloads) {
        for (const std::string& warning : w.warnings) std::cerr << "stagediff: " << warning << "\n";
        check_fits(w);
        const std::string length = std::to_string(w.ops.size()) + (w.ops.size() == 1 ? " operation" : " operations");
        for (uint64_t step : a.steps)
            if (step > w.ops.size())
                usage_error("--steps: step " + std::to_string(step) + " is beyond the end of " + w.name + " (" + length + ")");
        if (a.picture_at > w.ops.size())
            usage_error("--picture: step " + std::to_string(a.picture_at) + " is beyond the end of " + w.name + " (" + length + ")");
    }

    apply_options(a);
    std::vector<const Stage*> stages = chosen_stages(a);
    if (stages.empty()) usage_error("no stages are linked in");
    if (!a.html.empty()) return write_step_through(a.html, stages, workloads.front());
    if (a.libc) stages.push_back(&libc_reference());

    const bool tables = !a.json && !a.csv;
    const bool detail = tables && (a.detail || workloads.size() == 1);
    std::vector<TraceResult> results;
    for (const Workload& w : workloads) {
        ReplayOptions options;
        options.timed = a.timed;
        options.repetitions = a.reps;
        options.pause_at = a.steps;
        if (a.picture_at) options.pause_at.push_back(a.picture_at);
        std::sort(options.pause_at.begin(), options.pause_at.end());
        options.pause_at.erase(std::unique(options.pause_at.begin(), options.pause_at.end()), options.pause_at.end());
        // The heap --steps printed last, per stage (each stage replays in a process of its own,
        // its steps in order): from the second step on, what changed comes first.
        std::map<std::string, std::pair<uint64_t, std::vector<HeapLine>>> last_printed;
        options.on_pause = [&](const Stage& s, uint64_t done, const std::function<int64_t(uintptr_t)>& id_at) {
            if (!a.json && std::find(a.steps.begin(), a.steps.end(), done) != a.steps.end()) {
                std::cout << s.name << " after " << done << " operations of " << w.name << ":\n";
                std::vector<HeapLine> heap = heap_lines(s);
                const std::string all = "--heap-lines=0 prints them all";
                auto last = last_printed.find(s.name);
                if (last != last_printed.end())
                    print_heap_changes(std::cout, last->second.second, heap,
                                       "operation " + std::to_string(last->second.first), a.heap_lines, all);
                print_heap(std::cout, heap, a.heap_lines, all);
                last_printed[s.name] = {done, std::move(heap)};
            }
            if (done == a.picture_at) {
                std::string base = workloads.size() > 1 ? picture_name(a.picture_path, short_name(w.name)) : a.picture_path;
                std::string path = picture_name(base, s.name), error;
                PictureOptions po{a.picture_from, a.picture_to, id_at};
                if (!write_heap_picture(s, path, std::string(s.name) + " after " + std::to_string(done) +
                                                     " operations of " + w.name, po, &error))
                    std::cerr << "stagediff: " << error << "\n";
                else
                    std::cerr << "stagediff: wrote " << path << "\n";
            }
        };
        if (a.json) {  // the steps go in the document, each in its stage's result
            options.capture = [&](const Stage& s, uint64_t done) {
                std::ostringstream heap;
                if (std::find(a.steps.begin(), a.steps.end(), done) != a.steps.end()) heap_json(heap, s);
                return heap.str();
            };
        }
        if (a.progress) {
            options.on_progress = [](const Stage& s, uint64_t done, uint64_t total) {
                std::cerr << "  " << s.name << ": " << done << " / " << total << " operations\r" << std::flush;
            };
        }
        TraceResult result{w.name, w.ops.size(), w.ids, w.warnings, {}};
        for (const Stage* s : stages) {
            ReplayOptions o = options;
            o.reference = s == &libc_reference();
            if (o.reference) {
                o.pause_at.clear();  // no walker: nothing to draw
                o.reexec = "/proc/self/exe";  // glibc's heap as fresh as the stages'
            }
            result.runs.push_back(replay_isolated(*s, w, o));
            if (a.progress) std::cerr << "\n";
        }
        std::string title = "workload " + w.name + ": " + std::to_string(w.ops.size()) + " operations on " +
                            std::to_string(w.ids) + " block ids";
        if (detail) {
            print_table(std::cout, title, result.runs);
            std::cout << "\n";
        }
        if (!a.plot.empty()) {
            std::string error, path = workloads.size() > 1 ? picture_name(a.plot, short_name(w.name)) : a.plot;
            if (!write_plot(result.runs, path, title, &error)) input_error(error);
            std::cerr << "stagediff: wrote " << path << "\n";
        }
        results.push_back(std::move(result));
    }
    if (a.json) print_json(std::cout, results);
    else if (a.csv) print_csv(std::cout, results);
    else if (results.size() > 1) print_trace_table(std::cout, results);  // one: the table above says it all
    print_failures(tables ? std::cout : std::cerr, results);
    for (const TraceResult& r : results)
        for (const Metrics& m : r.runs)
            if (!m.valid) return 1;
    return 0;
}

}  // namespace
}  // namespace edu::diff

int main(int argc, char** argv) {
    // The libc column's child (ReplayOptions::reexec): the same binary, started afresh.
    int status = edu::diff::reference_child_main(argc, argv, edu::diff::libc_reference());
    return status >= 0 ? status : edu::diff::run(argc, argv);
}
