// tests/preload/option.cc: prints the preloaded stage's name and the value of one option, as
// `stage3_segments stats=off` (or `stats=(none)` when the stage has no such option), so a
// test can see which settings the drop-in library chose for a user.
#include <dlfcn.h>

#include <cstdio>

#include "contract/allocator.h"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: option NAME\n");
        return 2;
    }
    using StageFn = const edu::Stage* (*)();
    auto find = reinterpret_cast<StageFn>(dlsym(RTLD_DEFAULT, "edu_preload_stage"));
    if (find == nullptr) {
        std::fprintf(stderr, "option: not running under an edu-alloc preload library (LD_PRELOAD)\n");
        return 1;
    }
    const edu::Stage& stage = *find();
    const char* value = stage.get_option(argv[1]);
    std::printf("%s %s=%s\n", stage.name, argv[1], value != nullptr ? value : "(none)");
    return 0;
}
