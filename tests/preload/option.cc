// tests/preload/option.cc: prints the preloaded stage's name and the value of one option, as
// `stage3_segments stats=off` (or `stats=(none)` when the stage has no such option), so a
// test can see which settings the drop-in library chose for a user. `option NAME VALUE` first
// sets the option through the library's descriptor, then makes 1000 mallocs through the
// library's malloc, and adds how many of them the stage counted (`counted=N`): the option must
// reach the calls the program makes, not only the stage's table. `option errno` prints the
// value errno had when main began (`errno=0`, as C requires, whatever the library did first).
// `option reuse FILE` acts as a daemon that writes FILE: it closes every descriptor above 2 (the
// library's copy of stderr among them), opens FILE (which takes the lowest free descriptor, the
// copy's old number), writes one line, and closes stderr at exit, before the library's report.
#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "contract/allocator.h"

int main(int argc, char** argv) {
    int errno_at_start = errno;
    if (argc == 2 && std::strcmp(argv[1], "errno") == 0) {
        std::printf("errno=%d\n", errno_at_start);
        return 0;
    }
    if (argc == 3 && std::strcmp(argv[1], "reuse") == 0) {
        if (close_range(3, ~0U, 0) != 0) return std::perror("close_range"), 1;
        std::FILE* out = std::fopen(argv[2], "w");
        if (out == nullptr) return std::perror(argv[2]), 1;
        std::fprintf(out, "the program's only line\n");
        std::atexit([] { std::fclose(stderr); });   // as GNU coreutils' close_stdout does
        return 0;   // exit flushes and closes `out` after the library's destructor has run
    }
    if (argc != 2 && argc != 3) {
        std::fprintf(stderr, "usage: option NAME [VALUE] | option errno | option reuse FILE\n");
        return 2;
    }
    using StageFn = const edu::Stage* (*)();
    auto find = reinterpret_cast<StageFn>(dlsym(RTLD_DEFAULT, "edu_preload_stage"));
    if (find == nullptr) {
        std::fprintf(stderr, "option: not running under an edu-alloc preload library (LD_PRELOAD)\n");
        return 1;
    }
    const edu::Stage& stage = *find();
    if (argc == 3 && !stage.set_option(argv[1], argv[2])) {
        std::fprintf(stderr, "option: %s refused %s=%s\n", stage.name, argv[1], argv[2]);
        return 1;
    }
    const char* value = stage.get_option(argv[1]);
    std::printf("%s %s=%s", stage.name, argv[1], value != nullptr ? value : "(none)");
    if (argc == 3) {
        uint64_t before = stage.thread_safe->stats().mallocs;
        static void* blocks[1000];
        for (void*& b : blocks) b = std::malloc(24);   // -fno-builtin: the calls stay
        uint64_t counted = stage.thread_safe->stats().mallocs - before;
        for (void* b : blocks) std::free(b);
        std::printf(" counted=%llu", static_cast<unsigned long long>(counted));
    }
    std::printf("\n");
    return 0;
}
