// contract/report.cc: the statistics block printed at exit and by the demo.
#include "contract/report.h"

#include "contract/diagnostics.h"

namespace edu {

void print_stats(const Stage& stage, const Stats& s) {
    char line[160];
    auto row = [&](const char* label, uint64_t value, bool as_bytes) {
        LineWriter w(line, sizeof line);
        w.str("  ").str(label).pad_to(22);
        if (as_bytes) w.bytes(value).str(" (").dec(value).str(")");
        else w.dec(value);
        w.str("\n");
        write_stderr(line);
    };
    LineWriter(line, sizeof line).str("edu-alloc ").str(stage.name).str(" statistics\n");
    write_stderr(line);
    // A stage whose fast paths can skip counting has the option stats=on|off: with it off,
    // the request counters would print as near-zero numbers, which would be false.
    const char* counting = stage.get_option ? stage.get_option("stats") : nullptr;
    if (counting && counting[0] == 'o' && counting[1] == 'f') {
        LineWriter(line, sizeof line).str("  requests not counted (").str(stage.name)
            .str(".stats=off): mallocs, frees, bytes requested, live and peak live unknown\n");
        write_stderr(line);
    } else {
        row("mallocs", s.mallocs, false);
        row("frees", s.frees, false);
        row("bytes requested", s.bytes_requested, true);
        row("live blocks", s.live_blocks, false);
        row("live bytes", s.live_bytes, true);
        row("peak live bytes", s.peak_live_bytes, true);
    }
    row("footprint", s.footprint, true);
    row("peak footprint", s.peak_footprint, true);
    for (unsigned k = 0; k < static_cast<unsigned>(OsCall::count); ++k) {
        char label[32];
        LineWriter(label, sizeof label).str("os calls: ").str(kOsCallNames[k]);
        row(label, s.os_calls[k], false);
    }
}

}  // namespace edu
