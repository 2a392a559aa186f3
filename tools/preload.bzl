"""The drop-in (LD_PRELOAD) library of a stage, and the real-program tests that load it.

    edu_preload_library(                      # in the stage's BUILD
        name = "libedu_stage1.so",
        stage_dep = ":stage1",                # the cc_library that defines the descriptor
        descriptor = "edu::stage1::descriptor",
        # drop_in = "stage1_brk/drop_in.h",  # optional: a header of inline fast paths (below;
        #                                    # stages 3 and 4 have one, stage 1 does not)
    )
    edu_preload_tests(                        # in tests/preload/BUILD
        stage = 1,
        library = "//stage1_brk:libedu_stage1.so",
    )

contract/preload.cc is compiled once per stage; the descriptor reaches it as two defines
(its namespace and its name), so no header has to be generated. A stage may also name a header
that defines `DropIn` in the descriptor's namespace: `malloc` and `free`, which its table of the
drop-in library's usual mode holds; `open(bool)`, which the preload calls with whether the
chosen entry's pair is those two; and `exported_malloc(size, closed)` and `exported_free(p,
closed)`, inline, which run the fast paths while open and call `closed` (the preload's slot)
otherwise. The preload compiles those into its exported malloc and free (extra_copts: the flags
the stage compiles them with). Everything here is tagged
"preload": the sanitizer configs in .bazelrc neither build nor run it.
"""

load("//tools:copts.bzl", "EDU_COPTS")

def edu_preload_library(name, stage_dep, descriptor, drop_in = None, extra_copts = [], visibility = ["//visibility:public"]):
    namespace, _, symbol = descriptor.rpartition("::")
    if not namespace or not symbol:
        fail("descriptor must be a qualified name such as edu::stage1::descriptor")
    native.cc_binary(
        name = name,
        srcs = ["//contract:preload.cc"],
        copts = EDU_COPTS + extra_copts + [
            "-DEDU_PRELOAD_NAMESPACE=" + namespace,
            "-DEDU_PRELOAD_DESCRIPTOR=" + symbol,
        ] + (["-DEDU_PRELOAD_DROP_IN=" + drop_in] if drop_in else []),
        # -z defs: every symbol must resolve now, not when a program first calls malloc.
        # --as-needed drops libstdc++ (which allocates at load time) unless the stage's code
        # needs it; EDU_COPTS has -fno-exceptions, so a C program loads only libc with it.
        linkopts = [
            "-Wl,-z,defs",
            "-Wl,--as-needed",
        ],
        linkshared = True,
        tags = ["preload"],
        visibility = visibility,
        deps = [
            stage_dep,
            "//contract",
        ],
    )

# One sh_test per real program. Each script gets the library's runfiles path as its first
# argument and the stage number as its second.
_PROGRAMS = {
    "aligned": ["//tests/preload:aligned"],
    "calloc": ["//tests/preload:calloc"],
    "churn": ["//tests/preload:churn"],
    "limits": ["//tests/preload:limits", "//bench:limit_from_outside.sh", "//bench:smallest_limit.sh"],
    "python": ["//tests/preload:workload.py"],
    "sort": ["//tests/preload:make_lines.py"],
    "stats": ["//tests/preload:option"],
    "threads": ["//tests/preload:threads"],
}

def edu_preload_tests(stage, library, tags = []):
    for program, data in sorted(_PROGRAMS.items()):
        native.sh_test(
            name = "stage%d_%s_test" % (stage, program),
            size = "medium",
            srcs = ["//tests/preload:%s_test.sh" % program],
            args = [
                "$(rootpath %s)" % library,
                str(stage),
            ],
            data = data + [
                library,
                "//tests/preload:preload_lib.sh",
            ],
            tags = ["preload"] + tags,
        )
