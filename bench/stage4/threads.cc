// bench/stage4/threads.cc: stage 4 against stages 1-3, glibc, mimalloc and jemalloc on the
// larson-like, xmalloc-like and cache-scratch-like workloads (workloads.h) at 1, 2, 4 and 8
// threads. Every run is a process of its own with the allocator as its malloc (LD_PRELOAD;
// none for glibc), so peak RSS is each allocator's own and no two allocators share a process.
// Prints medians of wall-clock throughput and of peak RSS, ratios to mimalloc, 1->2 scaling.
// Usage: threads [--seconds=S] [--repetitions=R] [--only=WORKLOAD] [--allocators=A,B...]
//                [--threads=N] --lib=NAME=PATH...
// (--allocators keeps the allocators whose labels start with one of the names, e.g.
// --allocators=mimalloc,stage4; the first one kept is the base of the ratios; --threads=N runs
// only that thread count.)
// (bazel run passes the stage libraries; see BUILD). Internal: threads --child W T S.
#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "bench/stage4/workloads.h"
#include "contract/allocator.h"

namespace edu::bench {
namespace {

struct Allocator {
    std::string label;
    std::string preload;      // library to LD_PRELOAD; empty for glibc
    std::string options;      // EDU_OPTIONS
    std::string expect;       // what the child must find serving malloc
};

struct Run {
    double mops;              // million operations per wall-clock second
    double rss_mib;           // peak resident set
};

const char* const kWorkloads[] = {"larson", "xmalloc", "scratch"};
const int kThreadCounts[] = {1, 2, 4, 8};

// Which allocator serves this process's malloc: a stage's preload names itself, mimalloc and
// jemalloc are recognised by a function only they export.
std::string serving() {
    using StageFn = const Stage* (*)();
    if (auto fn = reinterpret_cast<StageFn>(dlsym(RTLD_DEFAULT, "edu_preload_stage"))) return fn()->name;
    if (dlsym(RTLD_DEFAULT, "mi_version")) return "mimalloc";
    if (dlsym(RTLD_DEFAULT, "mallctl")) return "jemalloc";
    return "glibc";
}

int child(const char* workload, int threads, double seconds) {
    Outcome out{};
    if (std::strcmp(workload, "larson") == 0) out = run_larson(threads, seconds);
    else if (std::strcmp(workload, "xmalloc") == 0) out = run_xmalloc(threads, seconds);
    else if (std::strcmp(workload, "scratch") == 0) out = run_scratch(threads, seconds);
    else return 2;
    std::printf("%s %llu %.6f\n", serving().c_str(), static_cast<unsigned long long>(out.operations), out.seconds);
    return 0;
}

// One run in a fresh process; exits the benchmark if the child fails or the wrong allocator
// served it.
Run run_child(const Allocator& a, const char* workload, int threads, double seconds) {
    int fds[2];
    if (pipe(fds) != 0) std::exit(1);
    std::string t = std::to_string(threads), s = std::to_string(seconds);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (!a.preload.empty()) setenv("LD_PRELOAD", a.preload.c_str(), 1);
        if (!a.options.empty()) setenv("EDU_OPTIONS", a.options.c_str(), 1);
        execl("/proc/self/exe", "threads", "--child", workload, t.c_str(), s.c_str(), static_cast<char*>(nullptr));
        _exit(127);
    }
    close(fds[1]);
    char text[256] = {};
    std::size_t got = 0;
    for (ssize_t n; got + 1 < sizeof text && (n = read(fds[0], text + got, sizeof text - 1 - got)) > 0;)
        got += static_cast<std::size_t>(n);
    close(fds[0]);
    int status = 0;
    rusage usage{};
    wait4(pid, &status, 0, &usage);
    char who[64] = {};
    unsigned long long operations = 0;
    double elapsed = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        std::sscanf(text, "%63s %llu %lf", who, &operations, &elapsed) != 3 || elapsed <= 0) {
        std::fprintf(stderr, "%s, %s, %d threads: the child failed (status %d, output \"%s\")\n", a.label.c_str(),
                     workload, threads, status, text);
        std::exit(1);
    }
    if (a.expect != who) {
        std::fprintf(stderr, "%s: the child's malloc was %s, not %s\n", a.label.c_str(), who, a.expect.c_str());
        std::exit(1);
    }
    return Run{static_cast<double>(operations) / elapsed / 1e6, static_cast<double>(usage.ru_maxrss) / 1024.0};
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

const char* flag_value(const char* arg, const char* name) {
    std::size_t n = std::strlen(name);
    return std::strncmp(arg, name, n) == 0 ? arg + n : nullptr;
}

// True when `label` starts with one of the comma-separated names in `list`.
bool listed(const std::string& list, const std::string& label) {
    for (std::size_t at = 0; at <= list.size();) {
        std::size_t end = list.find(',', at);
        if (end == std::string::npos) end = list.size();
        std::string name = list.substr(at, end - at);
        if (!name.empty() && label.compare(0, name.size(), name) == 0) return true;
        at = end + 1;
    }
    return false;
}

const char kUsage[] =
    "usage: threads [--seconds=S] [--repetitions=R] [--only=larson|xmalloc|scratch]\n"
    "               [--allocators=A,B...] [--threads=1|2|4|8] --lib=NAME=PATH...\n"
    "  (bazel run --config=opt //bench/stage4:threads [-- OPTIONS] passes the --lib options)\n";

// A bad argument stops the run before it starts: the benchmark takes minutes, and an option it
// did not understand would otherwise be measured as if it had never been given.
[[noreturn]] void bad_argument(const char* arg, const char* why) {
    std::fprintf(stderr, "threads: %s: %s\n%s", arg, why, kUsage);
    std::exit(2);
}

std::string absolute(const char* path) {
    char* full = realpath(path, nullptr);
    if (!full) {
        std::fprintf(stderr, "no library at %s\n", path);
        std::exit(1);
    }
    std::string out = full;
    std::free(full);
    return out;
}

}  // namespace
}  // namespace edu::bench

int main(int argc, char** argv) {
    using namespace edu::bench;
    if (argc == 5 && std::strcmp(argv[1], "--child") == 0)
        return child(argv[2], std::atoi(argv[3]), std::atof(argv[4]));
    double seconds = 0.5;
    int repetitions = 5;
    std::string only, wanted;
    int only_threads = 0;
    std::map<std::string, std::string> libs;
    for (int i = 1; i < argc; ++i) {
        const char* arg = argv[i];
        if (std::strcmp(arg, "--help") == 0 || std::strcmp(arg, "-h") == 0) {
            std::fputs(kUsage, stdout);
            return 0;
        }
        if (const char* v = flag_value(arg, "--seconds=")) {
            if ((seconds = std::atof(v)) <= 0) bad_argument(arg, "not a positive number of seconds");
        } else if (const char* v2 = flag_value(arg, "--repetitions=")) {
            if ((repetitions = std::atoi(v2)) < 1) bad_argument(arg, "not a positive count");
        } else if (const char* v3 = flag_value(arg, "--only=")) {
            only = v3;
            if (std::none_of(std::begin(kWorkloads), std::end(kWorkloads), [&](const char* w) { return only == w; }))
                bad_argument(arg, "no such workload");
        } else if (const char* v5 = flag_value(arg, "--allocators=")) {
            wanted = v5;
        } else if (const char* v6 = flag_value(arg, "--threads=")) {
            only_threads = std::atoi(v6);
            if (std::none_of(std::begin(kThreadCounts), std::end(kThreadCounts), [&](int n) { return n == only_threads; }))
                bad_argument(arg, "the thread counts measured are 1, 2, 4 and 8");
        } else if (const char* v4 = flag_value(arg, "--lib=")) {
            const char* eq = std::strchr(v4, '=');
            if (!eq) bad_argument(arg, "not NAME=PATH");
            libs[std::string(v4, eq)] = absolute(eq + 1);
        } else {
            bad_argument(arg, "unknown argument");
        }
    }
    for (const char* stage : {"stage1", "stage2", "stage3", "stage4"})
        if (!libs.count(stage)) {
            std::fprintf(stderr, "missing --lib=%s=PATH (run it with bazel run, see bench/stage4/BUILD)\n", stage);
            return 1;
        }
    const std::string dir = "/usr/lib/x86_64-linux-gnu/";
    std::vector<Allocator> allocators = {
        {"mimalloc 2.0.9", dir + "libmimalloc.so.2", "", "mimalloc"},
        {"stage4 (stats off)", libs["stage4"], "stage4_threads.stats=off", "stage4_threads"},
        {"stage4 (stats on)", libs["stage4"], "", "stage4_threads"},
        {"jemalloc 5.3.0", dir + "libjemalloc.so.2", "", "jemalloc"},
        {"glibc 2.36", "", "", "glibc"},
        {"stage3 (locked)", libs["stage3"], "stage3_segments.stats=off", "stage3_segments"},
        {"stage2 (locked)", libs["stage2"], "", "stage2_pools"},
        {"stage1 (locked)", libs["stage1"], "", "stage1_brk"},
    };
    if (!wanted.empty()) {
        std::vector<Allocator> kept;
        for (const Allocator& a : allocators)
            if (listed(wanted, a.label)) kept.push_back(a);
        if (kept.empty()) {
            std::fprintf(stderr, "--allocators=%s names none of the allocators\n", wanted.c_str());
            return 1;
        }
        allocators = kept;
    }
    std::printf("stage 4 threads benchmark: %d repetitions of %.2f s per allocator, workload and thread count,\n"
                "each in a process of its own; medians; Mops/s = million operations per wall-clock second;\n"
                "(x) = ratio to %s; RSS = peak resident set of the process in MiB. %ld cores.\n",
                repetitions, seconds, allocators[0].label.c_str(), sysconf(_SC_NPROCESSORS_ONLN));
    for (const char* workload : kWorkloads) {
        if (!only.empty() && only != workload) continue;
        // results[allocator][thread count index] -> runs
        std::vector<std::vector<std::vector<Run>>> results(allocators.size(), std::vector<std::vector<Run>>(4));
        for (int rep = 0; rep < repetitions; ++rep)
            for (int ti = 0; ti < 4; ++ti)
                for (std::size_t a = 0; a < allocators.size(); ++a)
                    if (only_threads == 0 || only_threads == kThreadCounts[ti])
                        results[a][static_cast<std::size_t>(ti)].push_back(run_child(allocators[a], workload, kThreadCounts[ti], seconds));
        std::printf("\n%s\n  %-20s %15s %15s %15s %15s  | %6s %6s %6s %6s | 1->2\n", workload, "allocator", "1 thread",
                    "2 threads", "4 threads", "8 threads", "RSS 1", "2", "4", "8");
        std::vector<double> base(4);
        for (std::size_t a = 0; a < allocators.size(); ++a) {
            std::printf("  %-20s", allocators[a].label.c_str());
            std::vector<double> mops(4), rss(4);
            for (std::size_t ti = 0; ti < 4; ++ti) {
                std::vector<double> m, r;
                for (const Run& run : results[a][ti]) {
                    m.push_back(run.mops);
                    r.push_back(run.rss_mib);
                }
                if (m.empty()) {   // a thread count left out with --threads
                    std::printf(" %15s", "-");
                    continue;
                }
                mops[ti] = median(m);
                rss[ti] = median(r);
                if (a == 0) base[ti] = mops[ti];
                std::printf(" %8.2f (%4.2f)", mops[ti], mops[ti] / base[ti]);
            }
            std::printf("  | %6.1f %6.1f %6.1f %6.1f |", rss[0], rss[1], rss[2], rss[3]);
            if (mops[0] > 0 && mops[1] > 0) std::printf(" %4.2fx", mops[1] / mops[0]);
            std::printf("\n");
        }
        // How far apart the runs of one cell were: a ratio between two allocators that is
        // smaller than this is not a difference this machine can show.
        std::printf("  run to run: slowest / fastest run of each cell\n");
        for (std::size_t a = 0; a < allocators.size(); ++a) {
            std::printf("  %-20s", allocators[a].label.c_str());
            for (std::size_t ti = 0; ti < 4; ++ti) {
                const std::vector<Run>& runs = results[a][ti];
                if (runs.empty()) {
                    std::printf(" %15s", "-");
                    continue;
                }
                auto [slow, fast] = std::minmax_element(runs.begin(), runs.end(),
                                                        [](const Run& x, const Run& y) { return x.mops < y.mops; });
                std::printf(" %15.2f", slow->mops / fast->mops);
            }
            std::printf("\n");
        }
    }
    return 0;
}
