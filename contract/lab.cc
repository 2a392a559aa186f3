// contract/lab.cc: edu_lab_not_implemented (see lab.h). Writes with write(2), never malloc:
// a stub may be reached inside the process's malloc.
#include "contract/lab.h"

#include <cstdlib>
#include <cstring>

#include "contract/diagnostics.h"

// `part` is a part's name ("S1.coalesce"), or one with a word saying the stub is not the
// student's to write (tools/labkit/lab.py): "S3.extend copy", the reference's copy of a part's
// answer held back with it; "S3.extend later", a later lab's part held back by --hide-later.
extern "C" void edu_lab_not_implemented(const char* part) {
    char name[64];
    std::size_t n = 0;
    for (; part[n] != '\0' && part[n] != ' ' && n + 1 < sizeof name; ++n) name[n] = part[n];
    name[n] = '\0';
    const char* why = part[n] == ' ' ? part + n + 1 : "";
    char line[256];
    edu::LineWriter out(line, sizeof line);
    if (std::strcmp(why, "copy") == 0)
        out.str("edu-alloc lab: the reference's copy of part ").str(name)
            .str("'s answer is held back in this handout: not a part to write (LAB.md says which tests leave it out)\n");
    else if (std::strcmp(why, "later") == 0)
        out.str("edu-alloc lab: part ").str(name)
            .str(" belongs to a later lab and is held back in this handout: not yours to write now (LAB.md)\n");
    else
        out.str("edu-alloc lab: part ").str(part).str(" not implemented: write it between its [lab ")
            .str(part).str(" begin] and end markers (LAB.md lists the parts)\n");
    edu::write_stderr(out.c_str());
    std::abort();
}
