// tests/docs/markers_test.cc: proves the docs-marker checker can fail. The lexer cases feed it
// literal snippets; the course cases write a small course (docs/stage1_demo.md and stage1_demo/)
// into a scratch folder, break it one way at a time, and expect the problem to be named.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "tests/docs/markers.h"

namespace fs = std::filesystem;
using edu::docs::check_course;
using edu::docs::comments_only;
using edu::docs::find_markers;
using edu::docs::Language;

namespace {

std::vector<std::string> names(const std::string& text) {
    std::vector<std::string> out;
    for (const auto& m : find_markers(text, "x")) out.push_back(m.name);
    return out;
}

// A scratch course folder, removed at the end of the test case.
struct Course {
    fs::path root;
    explicit Course(const char* name) {
        const char* tmp = std::getenv("TEST_TMPDIR");
        root = fs::path(tmp ? tmp : fs::temp_directory_path().string()) / name;
        fs::remove_all(root);
        fs::create_directories(root / "docs");
    }
    ~Course() { fs::remove_all(root); }
    void write(const std::string& relative, const std::string& text) const {
        fs::create_directories((root / relative).parent_path());
        std::ofstream(root / relative) << text;
    }
    // A consistent course: two markers, both defined and cited.
    void consistent() const {
        write("docs/stage1_demo.md", "# Stage 1\nThe block [S1.1] and the heap [S1.2].\n");
        write("stage1_demo/types.inc", "; [S1.1] The block.\nBLOCK equ 16 ; size\n");
        write("stage1_demo/heap.cc", "// [S1.2] The heap.\nint heap;\n");
    }
    std::vector<std::string> problems() const { return check_course(root, nullptr); }
};

bool mentions(const std::vector<std::string>& problems, const std::string& a, const std::string& b) {
    for (const auto& p : problems)
        if (p.find(a) != std::string::npos && p.find(b) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("markers are found with their line numbers, malformed ones are not") {
    auto found = find_markers("x [S1.4] y\n\n[S12.30] [S1.] [S.1] [s1.1] [S1.2", "f");
    REQUIRE(found.size() == 2);
    CHECK(found[0].name == "[S1.4]");
    CHECK(found[0].stage == 1);
    CHECK(found[0].line == 1);
    CHECK(found[1].name == "[S12.30]");
    CHECK(found[1].stage == 12);
    CHECK(found[1].line == 3);
}

TEST_CASE("an assembly comment after an instruction defines a marker, a string does not") {
    std::string src = "mov rax, 1 ; [S1.1] one\ndb \"[S1.2]\", 0 ; text\ndb '[S1.3];' ; [S1.4]\n";
    CHECK(names(comments_only(src, Language::assembly)) == std::vector<std::string>{"[S1.1]", "[S1.4]"});
}

TEST_CASE("C++ comments define markers, string and character literals do not") {
    std::string src =
        "int a = 1'000; // [S2.1]\n"
        "const char* s = \"[S2.2] // not a comment\";\n"
        "/* [S2.3]\n   [S2.4] */ char c = '/';\n"
        "auto r = R\"x([S2.5])x\"; // [S2.6]\n";
    std::string kept = comments_only(src, Language::cxx);
    CHECK(names(kept) == std::vector<std::string>{"[S2.1]", "[S2.3]", "[S2.4]", "[S2.6]"});
    auto found = find_markers(kept, "f");
    REQUIRE(found.size() == 4);
    CHECK(found[2].line == 4);  // newlines survive, so lines still count
    CHECK(found[3].line == 5);
}

TEST_CASE("a consistent course passes") {
    Course course("consistent");
    course.consistent();
    std::string summary;
    CHECK(check_course(course.root, &summary).empty());
    CHECK(summary.find("2 marker(s) cited, 2 defined") != std::string::npos);
}

TEST_CASE("a chapter citing a marker no comment defines fails, naming the marker") {
    Course course("missing");
    course.consistent();
    course.write("docs/stage1_demo.md", "# Stage 1\n[S1.1] [S1.2]\nand [S1.3]\n");
    auto problems = course.problems();
    REQUIRE(problems.size() == 1);
    CHECK(mentions(problems, "docs/stage1_demo.md:3", "[S1.3]"));
}

TEST_CASE("a marker in a string literal does not count as defined") {
    Course course("in_string");
    course.consistent();
    course.write("stage1_demo/heap.cc", "const char* s = \"[S1.2]\";\n");
    CHECK(mentions(course.problems(), "cites [S1.2]", "stage1_demo/"));
}

TEST_CASE("a marker the chapter never cites fails, naming its file and line") {
    Course course("uncited");
    course.consistent();
    course.write("stage1_demo/sub/extra.asm", "nop\n; [S1.9] forgotten\n");
    auto problems = course.problems();
    REQUIRE(problems.size() == 1);
    CHECK(mentions(problems, "stage1_demo/sub/extra.asm:2", "[S1.9]"));
}

TEST_CASE("a marker of another stage defined in a stage's folder fails") {
    Course course("wrong_stage");
    course.consistent();
    course.write("stage1_demo/heap.h", "// [S2.1] belongs to stage 2\n");
    CHECK(mentions(course.problems(), "stage1_demo/heap.h:1", "stage 2"));
}

TEST_CASE("a chapter may cite another stage's marker defined in that stage's folder") {
    Course course("cross");
    course.consistent();
    course.write("docs/stage1_demo.md", "[S1.1] [S1.2], see also [S2.1]\n");
    course.write("stage2_next/pool.h", "// [S2.1] the pool\n");
    CHECK(course.problems().empty());
    course.write("docs/stage1_demo.md", "[S1.1] [S1.2], see also [S3.1]\n");
    CHECK(mentions(course.problems(), "[S3.1]", "any stage folder"));
}

TEST_CASE("a chapter without its stage folder fails; a folder without a chapter is skipped") {
    Course course("orphans");
    course.consistent();
    course.write("stage2_next/pool.h", "// [S2.1] not cited yet: stage 2 has no chapter\n");
    std::string summary;
    CHECK(check_course(course.root, &summary).empty());
    CHECK(summary.find("stage2_next/ has no chapter yet") != std::string::npos);
    course.write("docs/stage3_gone.md", "[S3.1]\n");
    CHECK(mentions(course.problems(), "docs/stage3_gone.md", "no stage folder stage3_gone/"));
}
