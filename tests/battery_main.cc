// tests/battery_main.cc: the entry of one stage's battery. Compiled per stage by edu_battery
// (tools/battery.bzl) with EDU_STAGE_NUMBER set; finds that stage in the registry (its library
// registered itself at static-initialisation time), hands it to the tests, and runs doctest.
#include <doctest/doctest.h>

#include <cstdio>

#include "contract/allocator.h"
#include "contract/options.h"
#include "tests/support.h"

#ifndef EDU_STAGE_NUMBER
#error "EDU_STAGE_NUMBER must be set: instantiate the battery with edu_battery (tools/battery.bzl)"
#endif

int main(int argc, char** argv) {
    const edu::Stage* stage = edu::find_stage(EDU_STAGE_NUMBER);
    if (stage == nullptr) {
        std::fprintf(stderr,
                     "battery: stage %d is not linked in (%zu stages registered); add its "
                     "library to the edu_battery deps and make it alwayslink\n",
                     EDU_STAGE_NUMBER, edu::stage_count());
        return 1;
    }
    if (stage->single_thread == nullptr || stage->thread_safe == nullptr) {
        std::fprintf(stderr, "battery: stage %s lacks an entry table\n", stage->name);
        return 1;
    }
    // EDU_OPTIONS="stage1_brk.break=reserved" etc. run the battery on a non-default setting
    // (tools/memcheck sets that one: valgrind caps the real brk segment at 8 MiB).
    // Every linked stage takes its entries: stage 2's large blocks live in stage 1, which
    // needs stage1_brk.break=reserved under valgrind as much as stage 1's own battery does.
    for (std::size_t i = 0; i < edu::stage_count(); ++i)
        if (!edu::apply_environment_options(edu::stage_at(i))) return 1;
    std::fprintf(stderr, "battery: testing %s (stage %d): %s\n", stage->name, stage->number,
                 stage->summary);
    edu::battery::set_stage(*stage);
    doctest::Context context(argc, argv);
    return context.run();
}
