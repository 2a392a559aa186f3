// tests/docs/markers_main.cc: `markers ROOT` checks the course under ROOT (see markers.h),
// prints each problem on its own line and exits 1 if there is any.
#include <cstdio>

#include "tests/docs/markers.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s SOURCE_ROOT\n", argv[0]);
        return 2;
    }
    std::string summary;
    std::vector<std::string> problems = edu::docs::check_course(argv[1], &summary);
    for (const std::string& p : problems) std::printf("%s\n", p.c_str());
    std::printf("docs markers: %s: %s\n", problems.empty() ? "ok" : "FAILED", summary.c_str());
    return problems.empty() ? 0 : 1;
}
