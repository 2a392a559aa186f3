// tools/diff/report.h: turning Metrics and heap walks into things people read.
// The side-by-side table (text, JSON, CSV), a text dump of a stage's heap, an SVG picture of
// it (blocks by state and size), and the footprint / live-bytes plot drawn with gnuplot.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "contract/allocator.h"
#include "tools/diff/replay.h"

namespace edu::diff {

void print_table(std::ostream& out, const std::string& title, const std::vector<Metrics>& runs);
void print_json(std::ostream& out, const std::string& workload, const std::vector<Metrics>& runs);
void print_csv(std::ostream& out, const std::string& workload, const std::vector<Metrics>& runs);

// The heap as the walker sees it, one line an entry (at most `max_lines`), addresses as
// offsets from the first entry so runs can be compared.
void print_heap(std::ostream& out, const Stage& stage, std::size_t max_lines);

// An SVG memory map of the stage's heap: one row per top-level region (arena, segment, ...),
// blocks drawn in place, coloured by state. Returns false if the file cannot be written.
bool write_heap_picture(const Stage& stage, const std::string& path, const std::string& title);

// Footprint and live bytes against operations, one line pair per stage, as SVG (or PNG when
// the path ends in .png), through gnuplot. Returns false with `error` set on failure.
bool write_plot(const std::vector<Metrics>& runs, const std::string& path, const std::string& title,
                std::string* error);

// "1.5 MiB", "12.3 M" and friends.
std::string human_bytes(uint64_t bytes);
std::string human_count(double value);

}  // namespace edu::diff
