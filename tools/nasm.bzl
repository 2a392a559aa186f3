"""nasm_library: hand-written x86-64 NASM linked like any C++ library.

    nasm_library(
        name = "core",
        srcs = ["heap.asm", "block.asm"],   # each assembles to one ELF64 object
        includes = ["types.inc"],           # %include'd files (changes re-assemble)
        deps = [],                          # cc_library deps of the objects, if any
    )

Every object is position independent (the sources use `default rel` and call libc through
`wrt ..plt`), so the library links into executables and into the LD_PRELOAD shared objects.
`-w+all -w+error` makes NASM warnings errors, like the C++ code.
"""

def nasm_library(name, srcs, includes = [], deps = [], visibility = None, testonly = False):
    objs = []
    for src in srcs:
        stem = src.rsplit(".", 1)[0].replace("/", "_")
        obj = "_%s_%s.o" % (name, stem)
        native.genrule(
            name = "_%s_%s_asm" % (name, stem),
            srcs = [src] + includes,
            outs = [obj],
            cmd = "nasm -f elf64 -g -F dwarf -w+all -w+error -I $$(dirname $(location %s))/ -o $@ $(location %s)" % (src, src),
            testonly = testonly,
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        deps = deps,
        linkstatic = True,
        alwayslink = True,
        visibility = visibility,
        testonly = testonly,
    )
