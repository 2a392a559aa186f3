"""edu_battery: the one test battery (//tests), instantiated for one stage.

    edu_battery(name = "stage1_battery", stage = 1, deps = ["//stage1_brk:stage1"])

The battery's tests live in //tests:battery, compiled once. Each instance compiles only
tests/battery_main.cc with EDU_STAGE_NUMBER set; at run time it finds that stage in the registry
(the stage library registers itself when linked, so it must be alwayslink) and fails loudly if
the stage is missing. Pass doctest flags with --test_arg, e.g. --test_arg=--test-case='*realloc*';
replay a random failure with --test_env=EDU_BATTERY_SEED=<seed> (see tests/random.cc).
"medium" leaves room for --config=tsan and valgrind; the default config runs in seconds. The
timeout is "long" (900 s), not medium's 300: under --config=tsan a battery took 13-20 s but now
and then 50-110 s, nearly all in one case whose checker thread starved the workers of the lock
(tests/threads.cc says how it was mended: about 10 s a battery since, under tsan); the margin
stays so that a shared CI machine's slow moment cannot turn a passing battery red.
"""

load("//tools:copts.bzl", "EDU_TEST_COPTS")

def edu_battery(name, stage, deps, size = "medium", tags = []):
    native.cc_test(
        name = name,
        size = size,
        timeout = "long",
        srcs = ["//tests:battery_main.cc"],
        copts = EDU_TEST_COPTS,
        local_defines = ["EDU_STAGE_NUMBER=%d" % stage],
        # One executable: the contract's archive then serves the test cases too (in Bazel's
        # default dynamic test linking a case's library cannot see what only it uses).
        linkstatic = True,
        tags = tags,
        deps = [
            "//contract",
            "//tests:battery",
            "//tests:support",
        ] + deps,
    )
