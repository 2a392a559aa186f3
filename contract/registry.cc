// contract/registry.cc: the list of linked-in stages, filled by static initialisers.
// A fixed array (no allocation), kept sorted by stage number.
#include <cstring>

#include "contract/allocator.h"
#include "contract/diagnostics.h"

namespace edu {
namespace {
constexpr std::size_t kMaxStages = 16;
const Stage* g_stages[kMaxStages];
std::size_t g_count = 0;
}  // namespace

void register_stage(const Stage& stage) {
    for (std::size_t i = 0; i < g_count; ++i)
        if (g_stages[i] == &stage) return;
    if (g_count == kMaxStages) die(stage.name, "register_stage", &stage, "too many stages");
    std::size_t at = g_count++;
    while (at > 0 && g_stages[at - 1]->number > stage.number) {
        g_stages[at] = g_stages[at - 1];
        --at;
    }
    g_stages[at] = &stage;
}

const Stage* find_stage(int number) {
    for (std::size_t i = 0; i < g_count; ++i)
        if (g_stages[i]->number == number) return g_stages[i];
    return nullptr;
}

const Stage* find_stage(const char* name) {
    for (std::size_t i = 0; i < g_count; ++i)
        if (std::strcmp(g_stages[i]->name, name) == 0) return g_stages[i];
    return nullptr;
}

std::size_t stage_count() { return g_count; }

const Stage& stage_at(std::size_t index) { return *g_stages[index]; }

}  // namespace edu
