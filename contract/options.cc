// contract/options.cc: parsing EDU_OPTIONS with fixed buffers (it may run inside malloc).
#include "contract/options.h"

#include <cstdlib>
#include <cstring>

#include "contract/diagnostics.h"

namespace edu {

bool apply_environment_options(const Stage& stage) {
    const char* text = std::getenv("EDU_OPTIONS");
    if (!text) return true;
    bool all_ok = true;
    const std::size_t name_length = std::strlen(stage.name);
    while (*text) {
        while (*text == ' ' || *text == ',') ++text;
        const char* start = text;
        while (*text && *text != ' ' && *text != ',') ++text;
        std::size_t length = static_cast<std::size_t>(text - start);
        // An entry is "<stage>.<option>=<value>"; entries for other stages are not ours.
        if (length == 0 || length <= name_length + 1 || std::strncmp(start, stage.name, name_length) != 0 ||
            start[name_length] != '.')
            continue;
        char entry[128];
        if (length >= sizeof entry) length = sizeof entry - 1;
        std::memcpy(entry, start, length);
        entry[length] = 0;
        char* option = entry + name_length + 1;
        char* equals = std::strchr(option, '=');
        if (equals) *equals = 0;
        if (!equals || !stage.set_option(option, equals + 1)) {
            char line[192];
            LineWriter(line, sizeof line).str("edu-alloc ").str(stage.name).str(": EDU_OPTIONS entry '")
                .str(start == nullptr ? "" : entry).str(equals ? "=" : "").str(equals ? equals + 1 : "")
                .str("' names no option or value of this stage\n");
            write_stderr(line);
            all_ok = false;
        }
    }
    return all_ok;
}

}  // namespace edu
