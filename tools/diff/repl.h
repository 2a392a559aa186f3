// tools/diff/repl.h: `stagediff --repl`, the stages explored one typed operation at a time.
// Reads `a ID SIZE`, `f ID`, `r ID SIZE`, `show [STAGE]`, `undo`, `check`, `help`, `quit`, and
// after each operation prints what every stage answered and its heap (report.h's print_heap).
// The stages run in a child process; `undo` starts a fresh child and replays the history.
#pragma once

#include <istream>
#include <ostream>
#include <vector>

#include "contract/allocator.h"

namespace edu::diff {

// Returns the exit status: 0, or 2 when an input line was wrong (each is reported as
// "stdin:LINE: what is wrong" and skipped).
int run_repl(const std::vector<const Stage*>& stages, std::istream& in, std::ostream& out);

}  // namespace edu::diff
