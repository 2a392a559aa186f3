// tools/diff/report.h: turning Metrics and heap walks into things people read.
// The side-by-side table (text, JSON, CSV), a text dump of a stage's heap, an SVG picture of
// it (blocks by state and size), and the footprint / live-bytes plot drawn with gnuplot.
#pragma once

#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "tools/diff/replay.h"

namespace edu::diff {

// One workload's results: a Metrics per column (the chosen stages, then the C library's).
struct TraceResult {
    std::string name;                    // the path or the built-in's name, as given
    uint64_t ops = 0, ids = 0;
    std::vector<std::string> warnings;
    std::vector<Metrics> runs;
};

// The definitions printed by --help, the tables and the JSON document, word for word.
extern const char* const kUtilisationDefinition;
extern const char* const kMdriverDefinition;

// One workload in detail: a row per measure, a column per stage.
void print_table(std::ostream& out, const std::string& title, const std::vector<Metrics>& runs);
// Every workload at a glance, as mdriver prints it: sections (valid, utilisation, mdriver
// utilisation, throughput), a row per trace and a mean row, a column per stage.
void print_trace_table(std::ostream& out, const std::vector<TraceResult>& results);
// Failures and ENOMEM answers, one line each: "<trace>:<line>: <stage>: <what>".
void print_failures(std::ostream& out, const std::vector<TraceResult>& results);
// One JSON document for the whole run (fields in docs/diffing.md), and the same as CSV.
void print_json(std::ostream& out, const std::vector<TraceResult>& results);
void print_csv(std::ostream& out, const std::vector<TraceResult>& results);

// Escaping for each output format.
std::string json_string(const std::string& s);   // with the quotes
std::string xml_text(const std::string& s);
std::string csv_field(const std::string& s);
std::string gnuplot_string(const std::string& s);  // single-quoted, with the quotes

// The heap as the walker sees it, one line an entry, addresses as offsets from the first
// entry so runs can be compared.
struct HeapLine {
    int64_t offset;
    std::string text;  // "  " and two spaces a level, kind, state, "+offset", size
};
std::vector<HeapLine> heap_lines(const Stage& stage);
// The lines, at most `max_lines`; then one line "... N more entries (`how_to_see_all`)".
void print_heap(std::ostream& out, const std::vector<HeapLine>& heap, std::size_t max_lines,
                const std::string& how_to_see_all);
void print_heap(std::ostream& out, const Stage& stage, std::size_t max_lines, const std::string& how_to_see_all);
// What changed from `before` to `now`: "- " an entry only before had, "+ " one only now has
// (an entry whose state or size changed is both), by offset, at most `max_lines` of them.
// Nothing when they are equal.
void print_heap_changes(std::ostream& out, const std::vector<HeapLine>& before, const std::vector<HeapLine>& now,
                        const std::string& since, std::size_t max_lines, const std::string& how_to_see_all);

// An SVG memory map of the stage's heap: each top-level region (arena, segment, ...) wrapped
// into rows of equal bytes, each row labelled with its offset, blocks drawn in place, coloured
// by state, labelled with their trace ids where wide enough. Offsets count from the heap's first
// region, as print_heap prints them; `from`..`to` (when to > from) zooms to that range.
struct PictureOptions {
    int64_t from = 0, to = 0;  // offsets from the first region (negative below it); to > from zooms
    std::function<int64_t(uintptr_t)> id_at;  // trace id of a used block (-1: unknown)
};
// Returns false with `error` set when the file cannot be written or the range holds nothing.
bool write_heap_picture(const Stage& stage, const std::string& path, const std::string& title,
                        const PictureOptions& options = {}, std::string* error = nullptr);

// Footprint and live bytes against operations, one line pair per stage, as SVG (or PNG when
// the path ends in .png), through gnuplot. Returns false with `error` set on failure.
bool write_plot(const std::vector<Metrics>& runs, const std::string& path, const std::string& title,
                std::string* error);

// "1.5 MiB", "12.3 M" and friends.
std::string human_bytes(uint64_t bytes);
std::string human_count(double value);

}  // namespace edu::diff
