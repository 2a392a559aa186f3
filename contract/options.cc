// contract/options.cc: parsing EDU_OPTIONS with fixed buffers (it may run inside malloc).
#include "contract/options.h"

#include <cstdlib>
#include <cstring>

#include "contract/debug.h"
#include "contract/diagnostics.h"

namespace edu {
namespace {

// One entry of EDU_OPTIONS, split in place: "<scope>.<name>=<value>" or "<name>=<value>".
struct Entry {
    char text[128];
    const char* scope;   // "" for a contract option
    const char* name;
    const char* value;   // nullptr when there is no '='
};

// Calls `visit` with each entry of EDU_OPTIONS.
template <typename Visit>
void each_entry(Visit visit) {
    const char* text = std::getenv("EDU_OPTIONS");  // getenv does not allocate
    if (!text) return;
    while (*text) {
        while (*text == ' ' || *text == ',') ++text;
        const char* start = text;
        while (*text && *text != ' ' && *text != ',') ++text;
        std::size_t length = static_cast<std::size_t>(text - start);
        if (length == 0) continue;
        Entry e;
        if (length >= sizeof e.text) length = sizeof e.text - 1;
        std::memcpy(e.text, start, length);
        e.text[length] = 0;
        char* equals = std::strchr(e.text, '=');
        if (equals) *equals = 0;
        e.value = equals ? equals + 1 : nullptr;
        char* dot = std::strchr(e.text, '.');
        if (dot) {
            *dot = 0;
            e.scope = e.text;
            e.name = dot + 1;
        } else {
            e.scope = "";
            e.name = e.text;
        }
        visit(e);
    }
}

// Whether `value` is one of the '|'-separated words of `values`; a word such as "<bytes>"
// stands for any value (the stage judges it).
bool listed(const char* values, const char* value) {
    std::size_t length = std::strlen(value);
    for (const char* word = values; *word;) {
        const char* bar = std::strchr(word, '|');
        std::size_t n = bar ? static_cast<std::size_t>(bar - word) : std::strlen(word);
        if (*word == '<' || (n == length && std::strncmp(word, value, n) == 0)) return true;
        if (!bar) break;
        word = bar + 1;
    }
    return false;
}

// "edu-alloc <who>: EDU_OPTIONS entry '<scope.name=value>' <why><detail>"
void refuse(const char* who, const Entry& e, const char* why, const char* detail) {
    char line[320];
    LineWriter w(line, sizeof line);
    w.str("edu-alloc ").str(who).str(": EDU_OPTIONS entry '").str(e.scope).str(*e.scope ? "." : "")
        .str(e.name).str(e.value ? "=" : "").str(e.value ? e.value : "").str("' ").str(why).str(detail)
        .str("\n");
    write_stderr(line);
}

}  // namespace

bool apply_environment_options(const Stage& stage) {
    bool all_ok = true;
    each_entry([&](const Entry& e) {
        if (std::strcmp(e.scope, stage.name) != 0) return;  // another stage's, or the contract's
        const OptionInfo* info = nullptr;
        for (std::size_t i = 0; i < stage.option_count; ++i)
            if (std::strcmp(stage.options[i].name, e.name) == 0) info = &stage.options[i];
        if (!info) {
            char names[160];
            LineWriter w(names, sizeof names);
            for (std::size_t i = 0; i < stage.option_count; ++i)
                w.str(i ? ", " : "").str(stage.options[i].name);
            refuse(stage.name, e, "names no option of this stage; its options: ",
                   stage.option_count ? names : "none");
        } else if (!e.value || !listed(info->values, e.value)) {
            refuse(stage.name, e, "gives no value of the option; its values: ", info->values);
        } else if (!stage.set_option(e.name, e.value)) {
            refuse(stage.name, e, "was refused by the stage: ", info->help);
        } else {
            return;
        }
        all_ok = false;
    });
    return all_ok;
}

namespace {

// The course's stages, whatever this program links: an entry may address any of them (one
// EDU_OPTIONS serves runs under different stages), and one that names none is a typo to report,
// not another stage's to skip ("stage3.secure=on" left secure mode off without a word).
constexpr const char* kStageNames[] = {"stage1_brk", "stage2_pools", "stage3_segments", "stage4_threads"};

bool names_a_stage(const char* scope) {
    for (const char* name : kStageNames)
        if (std::strcmp(scope, name) == 0) return true;
    return false;
}

}  // namespace

ContractOptions contract_options() {
    ContractOptions options;
    each_entry([&](const Entry& e) {
        if (*e.scope && names_a_stage(e.scope)) return;  // a stage's: apply_environment_options
        if (*e.scope) {
            char names[96];
            LineWriter w(names, sizeof names);
            for (const char* name : kStageNames) w.str(name == kStageNames[0] ? "" : ", ").str(name);
            refuse("contract", e, "names no stage; the stages: ", names);
            options.ok = false;
            return;
        }
        if (std::strcmp(e.name, "debug") == 0 && e.value && listed("on|off", e.value)) {
            options.debug = std::strcmp(e.value, "on") == 0;
            return;
        }
        refuse("contract", e, "is not a contract option; contract options: ",
               "debug=on|off (stage options are written <stage>.<option>=<value>)");
        options.ok = false;
    });
    return options;
}

const Api& entry_for(const Stage& stage, const Api& inner, const ContractOptions& options) {
    return options.debug ? debug_entry(stage, inner) : inner;
}

}  // namespace edu
