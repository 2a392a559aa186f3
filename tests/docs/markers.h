// tests/docs/markers.h: the docs-marker checker. Chapters (docs/stageN_*.md) cite named spots
// in the code as [SN.k]; the stage's sources (stageN_*/ .asm .inc .h .cc) define them in
// comments. `check_course` lists every cited-but-undefined and defined-but-uncited marker.
// Chapters and stage folders are found by name, so a new stage needs no edit here.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace edu::docs {

// One occurrence of a marker such as [S1.4].
struct Marker {
    std::string name;   // "[S1.4]"
    int stage;          // 1
    std::string file;   // path as given, for messages
    int line;           // 1-based
};

enum class Language { assembly, cxx };

// Language of a source file by extension (.asm .inc: assembly; .h .cc: C++); false if neither.
bool language_of(const std::filesystem::path& file, Language* language);

// `source` with everything outside comments blanked (newlines kept, so lines still count).
// Strings and character literals are not comments: a marker inside one defines nothing.
std::string comments_only(std::string_view source, Language language);

// Every [SN.k] in `text`, in order.
std::vector<Marker> find_markers(std::string_view text, const std::string& file);

// Checks every chapter under root/docs against its stage folder. Returns one line per problem
// (empty: the course is consistent); `summary` gets a line on what was checked.
std::vector<std::string> check_course(const std::filesystem::path& root, std::string* summary);

}  // namespace edu::docs
