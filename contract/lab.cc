// contract/lab.cc: edu_lab_not_implemented (see lab.h). Writes with write(2), never malloc:
// a stub may be reached inside the process's malloc.
#include "contract/lab.h"

#include <cstdlib>

#include "contract/diagnostics.h"

extern "C" void edu_lab_not_implemented(const char* part) {
    char line[200];
    edu::LineWriter out(line, sizeof line);
    out.str("edu-alloc lab: part ").str(part).str(" not implemented: write it between its [lab ")
        .str(part).str(" begin] and end markers (LAB.md lists the parts)\n");
    edu::write_stderr(out.c_str());
    std::abort();
}
