// tests/docs/markers.cc: the docs-marker checker (see markers.h): a small comment lexer for
// NASM and C++, a marker scanner, and the comparison of a chapter with its stage's sources.
#include "tests/docs/markers.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

namespace edu::docs {
namespace fs = std::filesystem;

bool language_of(const fs::path& file, Language* language) {
    std::string ext = file.extension().string();
    if (ext == ".asm" || ext == ".inc") *language = Language::assembly;
    else if (ext == ".h" || ext == ".cc") *language = Language::cxx;
    else return false;
    return true;
}

namespace {

// Copies source[from, to) into out where `keep`, blanks it otherwise; newlines always stay.
void emit(std::string& out, std::string_view source, std::size_t from, std::size_t to, bool keep) {
    for (std::size_t i = from; i < to && i < source.size(); ++i)
        out += (keep || source[i] == '\n') ? source[i] : ' ';
}

// Index just past a quoted literal starting at `open` (which holds the quote), honouring
// backslash escapes when `escapes`; stops at the end of the line for an unterminated one.
std::size_t skip_quoted(std::string_view s, std::size_t open, bool escapes) {
    char quote = s[open];
    std::size_t i = open + 1;
    while (i < s.size() && s[i] != quote && s[i] != '\n') i += (escapes && s[i] == '\\') ? 2 : 1;
    return std::min(s.size(), i + 1);
}

std::string assembly_comments(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        char c = s[i];
        if (c == ';') {  // comment to the end of the line
            std::size_t end = s.find('\n', i);
            if (end == std::string_view::npos) end = s.size();
            emit(out, s, i, end, true);
            i = end;
        } else if (c == '\'' || c == '"' || c == '`') {  // NASM strings; only `...` has escapes
            std::size_t end = skip_quoted(s, i, c == '`');
            emit(out, s, i, end, false);
            i = end;
        } else {
            emit(out, s, i, i + 1, false);
            ++i;
        }
    }
    return out;
}

std::string cxx_comments(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    std::size_t i = 0;
    while (i < s.size()) {
        char c = s[i];
        char next = i + 1 < s.size() ? s[i + 1] : 0;
        if (c == '/' && next == '/') {
            std::size_t end = s.find('\n', i);
            if (end == std::string_view::npos) end = s.size();
            emit(out, s, i, end, true);
            i = end;
        } else if (c == '/' && next == '*') {
            std::size_t end = s.find("*/", i + 2);
            end = end == std::string_view::npos ? s.size() : end + 2;
            emit(out, s, i, end, true);
            i = end;
        } else if (c == 'R' && next == '"' && (i == 0 || !std::isalnum(static_cast<unsigned char>(s[i - 1])))) {
            // Raw string R"delim( ... )delim"
            std::size_t paren = s.find('(', i + 2);
            std::string close = ")" + std::string(s.substr(i + 2, paren - (i + 2))) + "\"";
            std::size_t end = paren == std::string_view::npos ? s.size() : s.find(close, paren);
            end = end == std::string_view::npos ? s.size() : end + close.size();
            emit(out, s, i, end, false);
            i = end;
        } else if (c == '"' ||
                   (c == '\'' && (i == 0 || !std::isalnum(static_cast<unsigned char>(s[i - 1]))))) {
            // A string or a character literal ('a' after an identifier or digit is a digit
            // separator, as in 1'000, not a literal).
            std::size_t end = skip_quoted(s, i, true);
            emit(out, s, i, end, false);
            i = end;
        } else {
            emit(out, s, i, i + 1, false);
            ++i;
        }
    }
    return out;
}

bool read_file(const fs::path& path, std::string* text) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return false;
    std::ostringstream buffer;
    buffer << in.rdbuf();
    *text = buffer.str();
    return true;
}

// "stage12_foo" -> 12; 0 when the name is not stage<N>_<something>.
int stage_number(const std::string& name) {
    if (name.rfind("stage", 0) != 0) return 0;
    std::size_t i = 5, digits = 0;
    int n = 0;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && digits < 6) {
        n = n * 10 + (name[i] - '0');
        ++i;
        ++digits;
    }
    if (digits == 0 || i + 1 >= name.size() || name[i] != '_') return 0;
    return n;
}

std::string shown(const fs::path& path, const fs::path& root) {
    return path.lexically_relative(root).generic_string();
}

// Markers defined in the comments of every source file under `folder`, sorted by file.
std::vector<Marker> definitions(const fs::path& folder, const fs::path& root) {
    std::vector<fs::path> files;
    for (const auto& entry : fs::recursive_directory_iterator(folder)) {
        Language language;
        if (entry.is_regular_file() && language_of(entry.path(), &language)) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    std::vector<Marker> found;
    for (const fs::path& file : files) {
        Language language;
        language_of(file, &language);
        std::string text;
        if (!read_file(file, &text)) continue;
        for (Marker& m : find_markers(comments_only(text, language), shown(file, root)))
            found.push_back(std::move(m));
    }
    return found;
}

}  // namespace

std::string comments_only(std::string_view source, Language language) {
    return language == Language::assembly ? assembly_comments(source) : cxx_comments(source);
}

std::vector<Marker> find_markers(std::string_view text, const std::string& file) {
    std::vector<Marker> found;
    int line = 1;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '\n') ++line;
        if (text[i] != '[' || i + 1 >= text.size() || text[i + 1] != 'S') continue;
        std::size_t j = i + 2;
        auto digits = [&](int* value) {
            std::size_t start = j;
            *value = 0;
            while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j])) && j - start < 6)
                *value = *value * 10 + (text[j++] - '0');
            return j > start;
        };
        int stage = 0, number = 0;
        if (!digits(&stage) || j >= text.size() || text[j] != '.') continue;
        ++j;
        if (!digits(&number) || j >= text.size() || text[j] != ']') continue;
        found.push_back(Marker{std::string(text.substr(i, j + 1 - i)), stage, file, line});
    }
    return found;
}

std::vector<std::string> check_course(const fs::path& root, std::string* summary) {
    std::vector<std::string> problems;
    // Stage folders and chapters, by stage number.
    std::map<int, fs::path> folders, chapters;
    for (const auto& entry : fs::directory_iterator(root)) {
        std::string name = entry.path().filename().string();
        if (entry.is_directory() && stage_number(name) > 0) folders[stage_number(name)] = entry.path();
    }
    if (fs::is_directory(root / "docs")) {
        for (const auto& entry : fs::directory_iterator(root / "docs")) {
            std::string stem = entry.path().stem().string();
            if (entry.is_regular_file() && entry.path().extension() == ".md" && stage_number(stem) > 0)
                chapters[stage_number(stem)] = entry.path();
        }
    }

    std::map<int, std::vector<Marker>> defined;  // filled lazily, per stage
    auto defined_in = [&](int stage) -> const std::vector<Marker>& {
        auto it = defined.find(stage);
        if (it == defined.end()) {
            std::vector<Marker> found;
            if (folders.count(stage)) found = definitions(folders[stage], root);
            it = defined.emplace(stage, std::move(found)).first;
        }
        return it->second;
    };

    std::size_t cited_total = 0, defined_total = 0;
    for (const auto& [stage, chapter] : chapters) {
        std::string chapter_name = shown(chapter, root);
        std::string folder_name = chapter.stem().string();
        if (!folders.count(stage) || folders[stage].filename() != folder_name) {
            problems.push_back(chapter_name + ": no stage folder " + folder_name + "/ next to docs/");
            continue;
        }
        std::string text;
        if (!read_file(chapter, &text)) {
            problems.push_back(chapter_name + ": cannot be read");
            continue;
        }
        std::vector<Marker> cited = find_markers(text, chapter_name);
        std::set<std::string> cited_names;
        std::set<std::string> reported;
        for (const Marker& m : cited) {
            cited_names.insert(m.name);
            if (!reported.insert(m.name).second) continue;
            const std::vector<Marker>& there = defined_in(m.stage);
            bool found = std::any_of(there.begin(), there.end(), [&](const Marker& d) { return d.name == m.name; });
            if (!found) {
                std::string where = folders.count(m.stage) ? shown(folders[m.stage], root) + "/" : "any stage folder";
                problems.push_back(chapter_name + ":" + std::to_string(m.line) + ": cites " + m.name +
                                   ", which no comment in " + where + " defines");
            }
        }
        cited_total += cited_names.size();
        std::set<std::string> seen;
        for (const Marker& d : defined_in(stage)) {
            if (!seen.insert(d.name).second) continue;
            ++defined_total;
            if (d.stage != stage)
                problems.push_back(d.file + ":" + std::to_string(d.line) + ": defines " + d.name +
                                   ", a marker of stage " + std::to_string(d.stage) + ", in stage " +
                                   std::to_string(stage) + "'s folder");
            else if (!cited_names.count(d.name))
                problems.push_back(d.file + ":" + std::to_string(d.line) + ": defines " + d.name +
                                   ", which " + chapter_name + " never cites");
        }
    }

    std::ostringstream line;
    line << chapters.size() << " chapter(s), " << folders.size() << " stage folder(s), " << cited_total
         << " marker(s) cited, " << defined_total << " defined";
    for (const auto& [stage, folder] : folders)
        if (!chapters.count(stage)) line << "; " << folder.filename().string() << "/ has no chapter yet";
    if (summary) *summary = line.str();
    return problems;
}

}  // namespace edu::docs
