#!/usr/bin/env python3
"""tools/labkit/lab.py (run as tools/lab): the course kit's one command (docs/teaching.md).
  list                               stages, lab parts, the tests that judge each part
  check [ROOT]                       lab markers well formed, in parts.json, cited by chapters
  handout STAGE DIR [--parts=a,b]    a buildable student tree with the parts replaced by stubs
          [--hide-later]             ... and the later stages' parts too, their tests left out
          [--no-times]               ... without the reference's times of its tests (no Bazel)
  test [PART ...] [--stage=N]        build this tree in place and run each part's tests: pass,
                                     FAIL, or the stub each stops at (which part to write next)
  grade [DIR] [--stage=N] [--json=F] gates, per-part verdicts, traces against the reference
        [--parts=a,b]                the lab's parts only (default: the handout's)
        [--traces=a,b]               those traces only (default: every traces/*.rep)
        [--repetitions=N] [--keep] [--log=F] [--reference-stagediff=F]: tools/lab grade --help
Standard library only. The table of parts is tools/labkit/parts.json."""

import argparse
import difflib
import hashlib
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parent.parent            # the tree this script belongs to
TABLE = "tools/labkit/parts.json"
HANDOUT_FILE = ".edu-lab-handout"         # written into a handout: its stage and parts
TIMES_FILE = ".edu-lab-times.json"        # ... and the reference's times of its parts' tests
INCOMPLETE_FILE = ".edu-lab-incomplete"   # ... and, until the last of it is written, this
WORKSPACE_NAME = "edu_alloc"               # WORKSPACE's name: a test's runfiles are under it
SOURCE_EXTENSIONS = {".asm", ".inc", ".h", ".cc"}
# A part's markers, and those of a copy of its answer elsewhere in the reference (stage 4's
# page_extend is S3.extend's answer on stage 4's records): "[lab S3.extend copy begin]". A part
# (or a copy) may have several regions in its file, each between its own pair of markers: an
# answer that spans two functions (S4.abandon) is stubbed, handed out and graded as one.
MARKER = re.compile(r"\[lab (S\d+\.\w+(?: copy)?) (begin|end)\]")
CITATION = re.compile(r"\[lab (S\d+\.\w+)\]")
NOT_IMPLEMENTED = re.compile(r"edu-alloc lab: part (S\d+\.\w+) not implemented")


class LabError(Exception):
    """Grading or a handout could not be made; the message says why."""


# ---- The table and the markers ------------------------------------------------------------

def load_table(root):
    path = Path(root) / TABLE
    try:
        text = path.read_text()
        table = json.loads(text)
    except json.JSONDecodeError as e:   # where the teacher's edit went wrong: FILE:LINE:COLUMN
        raise LabError(f"{path}:{e.lineno}:{e.colno}: cannot read the table of lab parts: {e.msg}")
    except (OSError, ValueError) as e:
        raise LabError(f"{path}: cannot read the table of lab parts: {e}")
    problems = table_shape(path, text, table)
    if problems:
        raise LabError("the table of lab parts lacks what every command reads:\n  " + "\n  ".join(problems))
    return table


STAGE_KEYS = ("folder", "chapter", "gates")
PART_KEYS = ("name", "stage", "file", "procedure", "statement", "tests")


class TableLines:
    """Where the table's entries are written, for problems as FILE:LINE: what is wrong: a
    stage's line is its key's (under "stages"), a part's its "name"'s (under "parts"); an entry
    not found gets the line of "stages" or "parts"."""

    def __init__(self, text, path=TABLE):
        self.path, self.lines = path, text.split("\n")
        self.stages, self.parts = self.find(r'"stages"\s*:'), self.find(r'"parts"\s*:')

    def find(self, pattern, fallback=1):   # the first line at or after the fallback's
        return next((i + 1 for i, l in enumerate(self.lines) if i + 1 >= fallback and re.search(pattern, l)), fallback)

    def stage(self, number):
        key = '"' + re.escape(str(number)) + r'"\s*:'
        return f"{self.path}:{self.find(key, self.stages)}"

    def part(self, name, copy=None):
        at = self.find(r'"name"\s*:\s*"' + re.escape(name) + '"', self.parts)
        if copy:   # its key in the part's "copies"
            at = self.find('"' + re.escape(copy) + r'"\s*:', at)
        return f"{self.path}:{at}"


def table_shape(path, text, table):
    """The keys every command reads, each stage's and each part's, as FILE:LINE: what is missing
    (the line of the stage's key, or of the part's name; else of "stages" or "parts")."""
    if not isinstance(table, dict) or not isinstance(table.get("stages"), dict) or \
            not isinstance(table.get("parts"), list):
        return [f"{path}:1: the table needs \"stages\" (an object) and \"parts\" (a list)"]
    problems = []
    at = TableLines(text, path)
    for number, stage in table["stages"].items():
        where = at.stage(number)
        missing = [k for k in STAGE_KEYS if k not in stage] if isinstance(stage, dict) else list(STAGE_KEYS)
        if missing:
            problems.append(f"{where}: stage {number} has no {', '.join(missing)}")
    for i, part in enumerate(table["parts"], 1):
        if not isinstance(part, dict):
            problems.append(f"{path}:{at.parts}: part {i} is not an object")
            continue
        name = part.get("name")
        where = at.part(name) if isinstance(name, str) else f"{path}:{at.parts}"
        label = f"part {name}" if name else f"part {i} of the list"
        missing = [k for k in PART_KEYS if k not in part]
        if missing:
            problems.append(f"{where}: {label} has no {', '.join(missing)}")
        if "stage" in part and str(part["stage"]) not in table["stages"]:
            problems.append(f"{where}: {label} is in stage {part['stage']}, which \"stages\" does not list")
        if any(not isinstance(t, dict) or "target" not in t for t in part.get("tests", [])):
            problems.append(f"{where}: {label} has a test with no target")
    return problems


def parts_of(table, stage):
    return [p for p in table["parts"] if str(p["stage"]) == str(stage)]


def copies_of(part):
    """{copy marker name: file} for a part: where else the reference holds its answer."""
    return part.get("copies", {})


def language(path):
    return "asm" if Path(path).suffix in (".asm", ".inc") else "cxx"


def scan(root, table):
    """Every [lab X begin/end] marker under the stage folders: ({name: [(file, begin, end), ...]},
    problems), a part's regions in file order. Line numbers are 0-based indexes of the marker
    lines."""
    found, problems = {}, []
    for stage in table["stages"].values():
        folder = Path(root) / stage["folder"]
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix not in SOURCE_EXTENSIONS or not path.is_file():
                continue
            rel = path.relative_to(root).as_posix()
            open_part = None
            for i, line in enumerate(path.read_text().split("\n")):
                for name, kind in MARKER.findall(line):
                    where = f"{rel}:{i + 1}"
                    if kind == "begin":
                        if open_part:
                            problems.append(f"{where}: [lab {name} begin] inside part {open_part[0]}")
                        else:
                            open_part = (name, i)
                    elif not open_part or open_part[0] != name:
                        problems.append(f"{where}: [lab {name} end] without its begin")
                    else:
                        found.setdefault(name, []).append((rel, open_part[1], i))
                        open_part = None
            if open_part:
                problems.append(f"{rel}:{open_part[1] + 1}: [lab {open_part[0]} begin] is never ended")
    return found, problems


def outside_lines(root, table, names):
    """{file: [(line number, text), ...]} of each file that holds one of the parts `names`, every
    line outside those parts' regions (their markers included): what grading takes from the
    reference, whatever the student's file says there."""
    found = scan(root, table)[0]
    inside = {}
    for name in names:
        for rel, begin, end in found.get(name, []):
            inside.setdefault(rel, set()).update(range(begin + 1, end))
    return {rel: [(i + 1, line) for i, line in enumerate(read_lines(Path(root) / rel)) if i not in rows]
            for rel, rows in sorted(inside.items())}


def outside_changes(tree, table):
    """In a handout: FILE:LINE of the first line outside its parts' markers that differs from the
    handout as written, per file (`tools/lab test` prints them: grading would not see the change)."""
    try:
        claim = json.loads((Path(tree) / HANDOUT_FILE).read_text())
    except (OSError, ValueError):   # not a handout, or its record is gone: nothing to compare
        return []
    # The stub's prelude is the handout's, and its banner asks for it to be deleted once the
    # parts are written: deleting it is no change (else it hid the change that matters below it).
    prelude = set(CXX_PRELUDE) | {CXX_PRELUDE_POP}
    written = claim.get("outside", {})
    now = outside_lines(tree, table, claim.get("parts", []))
    changes = []
    for rel, lines in written.items():
        lines = [l for l in lines if l not in prelude]
        current = [(i, l) for i, l in now.get(rel, []) if l not in prelude]
        for k in range(max(len(lines), len(current))):
            if k >= len(lines) or k >= len(current) or lines[k] != current[k][1]:
                line = current[k][0] if k < len(current) else (current[-1][0] if current else 1)
                why = ""
                if k < len(current) and current[k][1].lstrip().startswith("#include"):
                    why = " (an #include: the grading build compiles your part without it)"
                changes.append(f"{rel}:{line}: changed outside the markers of the parts in it{why}; grading takes "
                               "only the code between them, so this change is not graded (LAB.md)")
                break
    return changes


def marker_trouble(part, found, problems, regions_expected):
    """Why a tree's markers of a part cannot be used, with FILE:LINE where a marker is wrong;
    "" when they can: every region begun and ended, as many regions as expected."""
    name = part["name"]
    own = re.compile(rf"\[lab {re.escape(name)} (begin|end)\]|inside part {re.escape(name)}$")
    mine = [p for p in problems if own.search(p)]
    if mine:
        return "; ".join(mine)
    have = len(found.get(name, []))
    if have == 0:
        return f"no [lab {name} begin] and [lab {name} end] in {part['file']}"
    if have != regions_expected:
        return (f"{have} region(s) between [lab {name} begin] and end in {part['file']}, the reference has "
                f"{regions_expected} (a tree handed out at another commit? copy your code into a fresh handout's markers)")
    return ""


FILE_LOCAL_FUNCTION = re.compile(r"^(?:static\s+|inline\s+|constexpr\s+)*[A-Za-z_][\w:<>,*& ]*?[\s*&](\w+)\(")


def helpers_only_in_parts(root, found):
    """A C++ function private to its file (static, or in an unnamed namespace) that only lab
    regions call: a student's part written without it leaves it unused, which -Werror turns into
    a build failure in grading (a handout's stub silences the warning, so `tools/lab test` built
    it). Such helpers must be [[maybe_unused]]. Returns the problems, FILE:LINE first."""
    problems = []
    spans = {}
    for regions in found.values():
        for rel, begin, end in regions:
            spans.setdefault(rel, []).append((begin, end))
    for rel, ranges in sorted(spans.items()):
        if not rel.endswith((".cc", ".h")):
            continue
        lines = (Path(root) / rel).read_text().split("\n")
        in_part = lambda i: any(b <= i <= e for b, e in ranges)
        unnamed = False
        for i, line in enumerate(lines):
            if line.startswith("namespace {"):
                unnamed = True
            elif line.startswith("}  // namespace") and unnamed:
                unnamed = False
            m = FILE_LOCAL_FUNCTION.match(line)
            if not m or line.rstrip().endswith(";") or in_part(i) or "[[maybe_unused]]" in line:
                continue
            if not (unnamed or line.startswith("static ")) or (i and lines[i - 1].startswith("template")):
                continue
            name = m.group(1)
            uses = [j for j, text in enumerate(lines) if j != i and re.search(rf"\b{name}\b", text)]
            if uses and all(in_part(j) for j in uses):
                problems.append(f"{rel}:{i + 1}: {name} is called only from lab parts' code: mark it "
                                "[[maybe_unused]] (a part written without it fails to build in grading)")
    return problems


TEST_CASE_NAME = re.compile(r'\bTEST_CASE(?:_FIXTURE\(\s*\w+\s*,|_TEMPLATE\(|\()\s*(?:"((?:[^"\\]|\\.)*)"|(\w+)\s*[,)])')
# A case named by a constant of its file (tests/threads.cc's kFreshCase, which the case passes
# to a child's --test-case): `constexpr char kName[] = "..."` or `constexpr const char* kName = "..."`.
NAME_CONSTANT = re.compile(r'\bconst(?:expr)?\s+(?:const\s+)?char\s*(?:\*\s*(\w+)|(\w+)\s*\[\s*\])\s*=\s*"((?:[^"\\]|\\.)*)"\s*;')


def test_cases_in(text):
    """The TEST_CASE names of a C++ source, a name given as a literal or as a constant of the file."""
    constants = {a or b: value for a, b, value in NAME_CONSTANT.findall(text)}
    names = [literal if literal or not ident else constants.get(ident) for literal, ident in TEST_CASE_NAME.findall(text)]
    return [re.sub(r"\\(.)", r"\1", n) for n in names if n is not None]


def doctest_filters(cases):
    """A --test-case value as doctest reads it (parseCommaSepArgs): split at commas, a backslash
    keeping a comma or a backslash literal, empty items dropped."""
    filters, item, i = [], "", 0
    while i < len(cases):
        c = cases[i]
        if c == "\\" and i + 1 < len(cases) and cases[i + 1] in ",\\":
            item, i = item + cases[i + 1], i + 2
            continue
        if c == ",":
            filters.append(item)
            item = ""
        else:
            item += c
        i += 1
    return [f for f in filters + [item] if f]


def doctest_matches(name, pattern):
    """doctest's wildcmp without -cs: * any run, ? one character, ASCII case ignored, and every
    other character literal ('[' too, which fnmatch would read as a set)."""
    fold = lambda s: s.translate(ASCII_LOWER)
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in fold(pattern))
    return re.fullmatch(regex, fold(name), re.DOTALL) is not None


ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def selected(names, cases):
    """The names of `names` that `--test-case=cases` runs; every one when cases is empty or
    holds no filter (doctest runs all then: `--test-case=,` is no filter)."""
    filters = doctest_filters(cases or "")
    return [n for n in names if not filters or any(doctest_matches(n, f) for f in filters)]


def test_case_names(root, target):
    """(the TEST_CASE names a test target registers, read from its sources; where they were
    read). A target NAME is its package's NAME.cc when there is one (a stage's own tests, one
    file each); else (a battery, whose macro compiles //tests:battery's files) every .cc of the
    package but those a cc_test of the package's BUILD compiles as its own (tests/lockstep.cc).
    No names: no doctest sources here, nothing to check against."""
    package, name = target[2:].split(":")
    folder = Path(root) / package
    own = folder / f"{name}.cc"
    if own.is_file():
        files, where = [own], own.relative_to(root).as_posix()
    else:
        build = folder / "BUILD"
        rules = re.split(r"\n(?=\S)", build.read_text()) if build.is_file() else []
        others = {f for rule in rules if rule.startswith("cc_test(")
                  for f in re.findall(r'"([^"/:]+\.cc)"', rule)}
        files = [f for f in sorted(folder.glob("*.cc")) if f.name not in others]
        where = f"{package}/*.cc" + (f" but {', '.join(sorted(others))}" if others else "")
    return [n for f in files for n in test_cases_in(f.read_text(errors="replace"))], where


def unmatched_filters(root, name, test, at):
    """Each doctest filter of a part's test (its `cases`) that matches no TEST_CASE of the
    target: doctest runs no case for it and exits 0, so the part would pass whatever it holds."""
    if not test.get("cases"):
        return []
    names, where = test_case_names(root, test["target"])
    if not names:
        return []   # not a package of doctest sources here: nothing to match against
    return [f"{at.part(name)}: part {name}: filter '{f}' of {test['target']} matches no test case in "
            f"{where} (doctest would run none and pass)"
            for f in doctest_filters(test["cases"]) if not any(doctest_matches(n, f) for n in names)]


def shared_cases(root, table, number, at):
    """A test case is one part's own: when two parts' filters select it, a wrong answer in one
    fails the other's test wherever the two are not isolated (`tools/lab test` and a handout
    grading itself, where the score counts), and a reader of parts.json cannot tell which part
    the case judges (last session S2.usedpools's '*new pool*' chose S2.arena_return's case).
    A case may be shared on purpose only where stage `number`'s "shared" lists it: {target,
    cases (doctest filters; none: every case), why}. Problems: every case two parts select that
    no entry lists; every entry without a why, off the stage's gates or its parts' targets,
    matching no case, or listing a case fewer than two parts select (a share is no wider than
    it must be)."""
    problems = []
    stage = table["stages"][number]
    parts = parts_of(table, number)
    targets = list(dict.fromkeys(t["target"] for p in parts for t in p.get("tests", [])))
    shares = stage.get("shared", [])
    for share in shares:
        target, cases = share.get("target"), share.get("cases", "")
        label = f"{at.stage(number)}: stage {number}'s shared {target}" + (f" '{cases}'" if cases else "")
        if not str(share.get("why", "")).strip():
            problems.append(f"{label}: says no why (a case shared on purpose says what every part it judges does in it)")
        if target not in stage["gates"]:
            problems.append(f"{label}: not a gate of stage {number}")
        elif target not in targets:
            problems.append(f"{label}: no part of stage {number} is judged by it, so it shares nothing")
    for target in targets:
        names, where = test_case_names(root, target)
        if not names:
            continue
        owners = {n: [] for n in names}
        for p in parts:
            for t in p["tests"]:
                if t["target"] == target:
                    for n in selected(names, t.get("cases", "")):
                        if p["name"] not in owners[n]:
                            owners[n].append(p["name"])
        mine = [s for s in shares if s.get("target") == target]
        for n, by in owners.items():
            if len(by) > 1 and not any(selected([n], s.get("cases", "")) for s in mine):
                problems.append(f"{at.stage(number)}: {target}'s case '{n}' is selected by {', '.join(by)}: a case is one "
                                f"part's own (a wrong answer in one would fail the other's test), so narrow a "
                                f"filter, or list the case in stage {number}'s \"shared\" with why")
        for s in mine:
            cases = s.get("cases", "")
            label = f"{at.stage(number)}: stage {number}'s shared {target}" + (f" '{cases}'" if cases else "")
            chosen = selected(names, cases)
            if not chosen:
                problems.append(f"{label}: matches no test case in {where}")
            for n in chosen:
                if len(owners[n]) < 2:
                    problems.append(f"{label}: lists '{n}', which {owners[n][0] if owners[n] else 'no part'} "
                                    "alone selects: share no more than two parts select")
    return problems


def check(root, table, text=None):
    """Problems with the lab parts of the tree at root (empty: consistent). `text`: the table as
    written, for the lines of its problems (default: this tree's tools/labkit/parts.json, which
    every command loads)."""
    at = TableLines((REFERENCE / TABLE).read_text() if text is None else text)
    found, problems = scan(root, table)
    problems += helpers_only_in_parts(root, found)
    listed = {p["name"]: p for p in table["parts"]}
    listed.update({c: {"name": c, "file": f, "stage": p["stage"], "copy_of": p["name"]}
                   for p in table["parts"] for c, f in copies_of(p).items()})
    for name, regions in found.items():
        for rel, begin, _ in regions:
            if name not in listed:
                problems.append(f"{rel}:{begin + 1}: part {name} is not in {TABLE}")
            elif listed[name]["file"] != rel:
                problems.append(f"{rel}:{begin + 1}: part {name} is listed in {TABLE} as in {listed[name]['file']}")
    for name, part in listed.items():
        where = at.part(part["copy_of"], name) if "copy_of" in part else at.part(name)
        if name not in found:
            problems.append(f"{where}: part {name} has no [lab {name} begin]/[lab {name} end] in {part['file']}")
        if "copy_of" in part:
            if not name.startswith(part["copy_of"] + " copy"):
                problems.append(f"{where}: {name} is listed as a copy of part {part['copy_of']}")
            continue
        if not name.startswith(f"S{part['stage']}."):
            problems.append(f"{where}: part {name} is listed under stage {part['stage']}")
        if not part.get("statement") or not part.get("tests"):
            problems.append(f"{where}: part {name} needs a statement and the tests that judge it")
        stage = table["stages"][str(part["stage"])]
        for test in part.get("tests", []):
            if test["target"] not in stage["gates"] or test["target"] in stage.get("reference_gates", []):
                problems.append(f"{where}: part {name} is judged by {test['target']}, not a gate of its "
                                "stage that a handout runs")
            problems += unmatched_filters(root, name, test, at)
    for number, stage in table["stages"].items():
        if any(copies_of(p) for p in parts_of(table, number)) and not stage.get("copy_tests_tag"):
            problems.append(f"{at.stage(number)}: stage {number}'s parts have copies but no copy_tests_tag")
        if number != min(table["stages"], key=int) and not stage.get("tests_tag"):
            problems.append(f"{at.stage(number)}: stage {number} has no tests_tag (handout --hide-later leaves its tests out)")
        for target in stage.get("reference_gates", []):
            if target not in stage["gates"]:
                problems.append(f"{at.stage(number)}: stage {number}'s reference gate {target} is not one of its gates")
        problems += shared_cases(root, table, number, at)
    for number, stage in table["stages"].items():
        mine = [p["name"] for p in parts_of(table, number)]
        if len(mine) < 3:
            problems.append(f"{at.stage(number)}: stage {number} has {len(mine)} lab parts (at least 3)")
        chapter = Path(root) / stage["chapter"]
        if not chapter.is_file():
            problems.append(f"{stage['chapter']}: missing")
            continue
        text = chapter.read_text()
        cited = set(CITATION.findall(text))
        for name in mine:
            if name not in cited:
                problems.append(f"{stage['chapter']}: never cites [lab {name}]")
        for i, line in enumerate(text.split("\n")):
            for name in CITATION.findall(line):
                if name not in mine:
                    problems.append(f"{stage['chapter']}:{i + 1}: cites [lab {name}], not a part of stage {number}")
    return problems


def read_lines(path):
    return Path(path).read_text().split("\n")


def regions(root, table, name, found=None):
    """A part's code in the tree at root: for each of its regions, in file order, the lines
    strictly between its markers; None when it has no well-formed markers."""
    found = found if found is not None else scan(root, table)[0]
    if name not in found:
        return None
    return [read_lines(Path(root) / rel)[begin + 1:end] for rel, begin, end in found[name]]


def normalised(lines):
    return [l.strip() for l in lines if l.strip()]


def normalised_regions(bodies):
    return [normalised(lines) for lines in bodies]


# ---- Stubs --------------------------------------------------------------------------------

def wrap(text, width, prefix):
    out, line = [], prefix
    for word in text.split():
        if len(line) + len(word) + 1 > width and line.strip() != prefix.strip():
            out.append(line.rstrip())
            line = prefix
        line += word + " "
    out.append(line.rstrip())
    return out


WRITE_INTRO = "Write this part, then delete these lines up to the end marker."


def marker_comments(body, opener, indent):
    """The comments of a body that carry a chapter marker ([S1.9]), each whole: a comment line
    with a marker and the comment lines that continue it (a first line alone read "... keeps a
    valid header and", its sentence cut off), or a marker's trailing comment on a code line."""
    kept, going = [], False
    for l in body:
        comment = l[l.index(opener):].strip() if opener in l else ""
        whole = l.strip().startswith(opener)
        if comment and re.search(r"\[S\d+\.\d+\]", comment):
            kept.append(indent + comment)
            going = whole
        elif going and whole and not re.search(r"\[lab ", comment):
            kept.append(indent + comment)
        else:
            going = False
    return kept


def stub(part, chapter, reference_body, intro=WRITE_INTRO, region=(1, 1), call=None):
    """The lines that replace one region of a part's body in a handout (region: its number and
    the part's count of regions; the statement stands in the first). Comment lines of the body
    that carry a chapter marker ([S1.9]) stay, so the chapter's citations still resolve. call:
    what the stub passes to edu_lab_not_implemented (contract/lab.cc), by default the name."""
    name = part["name"]
    call = call or name
    if any(f"[lab {name} stub]" in l for l in reference_body):
        return list(reference_body)   # the reference is itself a handout: its stub is the stub
    asm = language(part["file"]) == "asm"
    opener = ";" if asm else "//"
    indent = "        " if asm else "    "
    kept = marker_comments(reference_body, opener, indent)
    number, count = region
    statement = part["statement"] if number == 1 else (
        f"Region {number} of {count} of {name} in this file: the part's statement is at its first region.")
    if count > 1 and number == 1:
        statement += f" (This part has {count} regions in this file, each between its own markers: write them all.)"
    if asm:
        lines = [f"        ; [lab {name} stub] {intro}"]
        lines += wrap(statement, 96, "        ;   ")
        lines += [f"        ;   Guidance: {chapter}, [lab {name}]; judged by: tools/lab grade."]
        lines += [l for l in kept]
        lines += ["        extern  edu_lab_not_implemented",
                  "        and     rsp, -16                        ; a C call wants an aligned stack",
                  "        lea     rdi, [rel .lab_part]",
                  "        call    edu_lab_not_implemented wrt ..plt  ; prints one line, aborts",
                  f".lab_part: db \"{call}\", 0"]
    else:
        lines = [f"    // [lab {name} stub] {intro}"]
        lines += wrap(statement, 96, "    //   ")
        lines += [f"    //   Guidance: {chapter}, [lab {name}]; judged by: tools/lab grade."]
        lines += kept
        lines += [f"    edu_lab_not_implemented(\"{call}\");  // prints one line, aborts"]
    return lines


def stubs(part, chapter, bodies, intro=WRITE_INTRO, call=None):
    """The stubs of every region of a part, from the reference's bodies of them."""
    return [stub(part, chapter, b, intro, (i + 1, len(bodies)), call) for i, b in enumerate(bodies)]


def copy_stubs(part, copy, chapter, bodies, tag):
    """The stub of a copy of a part's answer: the handout of the part's stage holds no answer
    to it anywhere, this copy included. The copy is not the student's to write."""
    why = (f"This is the reference's copy of part {part['name']} ({part['file']}), held back from a "
           f"handout of stage {part['stage']} because it is that part's answer. Your teacher's "
           "grading runs the reference's copy; here `bazel test` leaves out every test that "
           f"reaches this stub (tagged {tag}: LAB.md).")
    return [[l for l in lines if "Guidance: " not in l] for lines in
            stubs(dict(part, name=copy, statement=why, file=copies_of(part)[copy]), chapter, bodies,
                  intro="Not a part to write: leave this stub as it is.")]


def later_stubs(part, chapter, bodies, stage, tags):
    """The stub of a later lab's part in a handout made with --hide-later: that lab's answer is
    held back too, and the part is not the student's to write now."""
    why = (f"Part {part['name']} of lab {part['stage']}, a later lab than this handout's (stage {stage}): its "
           f"answer is held back. Here `bazel test` leaves out the tests of the later stages (tagged "
           f"{', '.join(tags)}: LAB.md).")
    return [[l for l in lines if "Guidance: " not in l] for lines in
            stubs(dict(part, statement=why), chapter, bodies, intro="Not a part to write now: leave this stub as it is.",
                  call=part["name"] + " later")]


def holds_stub(bodies, name):
    """True when a region of a part's body (bodies: its regions' lines) still makes its stub's
    call, whatever else was written around it and whichever commit's statement the stub's
    comment quotes: reached, it aborts, so the part is not written yet."""
    text = "\n".join(l for lines in bodies for l in lines)
    return any(f'edu_lab_not_implemented("{call}")' in text or (
        "edu_lab_not_implemented" in text and f'db "{call}", 0' in text) for call in (name, name + " later"))


def stubbed_regions(bodies, name):
    """For a part of several regions, which still hold the stub: " in region 2 of 2"; else ""."""
    held = [str(i + 1) for i, lines in enumerate(bodies) if holds_stub([lines], name)]
    return f" in region{'s' if len(held) > 1 else ''} {', '.join(held)} of {len(bodies)}" if len(bodies) > 1 and held else ""


# Put before the first #include of a C++ file that holds a stub: the stub's call, and the
# unused-parameter/function warnings (errors here) that a stub causes, off until it is written.
CXX_PRELUDE = [
    "// edu-alloc lab handout: this file holds stubs (tools/lab). Once every part here is",
    "// written, delete these lines (in a header, also the last line's diagnostic pop).",
    "#include \"contract/lab.h\"",
    "#pragma GCC diagnostic push",
    "#pragma GCC diagnostic ignored \"-Wunused-parameter\"",
    "#pragma GCC diagnostic ignored \"-Wunused-function\"",
    "#pragma GCC diagnostic ignored \"-Wunused-variable\"",
    "#pragma GCC diagnostic ignored \"-Wunused-but-set-variable\"",
]
CXX_PRELUDE_POP = "#pragma GCC diagnostic pop"   # a header's last line, closing the prelude's push


def replace_bodies(root, table, replacements):
    """replacements: {part name: new lines for each of its regions}. Rewrites the files under
    root in place; a C++ file that then holds a stub's call gets the prelude (once)."""
    found, problems = scan(root, table)
    by_file = {}
    for name, bodies in replacements.items():
        if name not in found or len(found[name]) != len(bodies):
            raise LabError(f"{root}: part {name} has no well-formed markers for its {len(bodies)} region(s)")
        for (rel, begin, end), lines in zip(found[name], bodies):
            by_file.setdefault(rel, []).append((begin, end, lines))
    for rel, edits in by_file.items():
        text = read_lines(Path(root) / rel)
        for begin, end, lines in sorted(edits, reverse=True):
            text[begin + 1:end] = lines
        if language(rel) == "cxx" and CXX_PRELUDE[2] not in text and \
                any("edu_lab_not_implemented(" in l for l in text):
            first = next((i for i, l in enumerate(text) if l.startswith("#include")), 0)
            text[first:first] = CXX_PRELUDE
            if rel.endswith(".h"):
                text.append(CXX_PRELUDE_POP)
        Path(root, rel).write_text("\n".join(text))


# ---- Handout ------------------------------------------------------------------------------

def tree_files(root, untracked=True):
    """The files of a tree: in a Git checkout the tracked ones (their working copies) and, with
    untracked, the untracked ones Git does not ignore; elsewhere every file but Bazel's links."""
    root = Path(root)
    if (root / ".git").exists():
        kinds = ["--cached", "--others"] if untracked else ["--cached"]
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", *kinds, "--exclude-standard"], capture_output=True, check=True)
        return [f for f in out.stdout.decode().split("\0") if f and (root / f).is_file()]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirnames[:] = [d for d in dirnames if not (d.startswith("bazel-") or d == ".git")]
        files += [(rel / f).as_posix() for f in filenames if not Path(dirpath, f).is_symlink()]
    return files


def copy_tree(source, dest, skip=(), untracked=True):
    for rel in tree_files(source, untracked):
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(source) / rel, target)


def stages_arg(table, stage):
    if stage == "all":
        return list(table["stages"])
    if str(stage) not in table["stages"]:
        raise LabError(f"no stage {stage}: choose one of {', '.join(table['stages'])} or all")
    return [str(stage)]


def handout(table, stage, dest, only=None, hide_later=False, times=False, out=None):
    """Writes the handout of `stage` (its parts, or `only` these) to dest; with times, also the
    reference's times of the chosen parts' tests (ship_times), which bound `tools/lab test`'s runs
    there; out: where to say how they were found. Returns the parts chosen."""
    stages = stages_arg(table, stage)
    later = [s for s in table["stages"] if hide_later and stage != "all" and int(s) > int(stage)]
    chosen = [p for s in stages for p in parts_of(table, s)]
    if only:
        unknown = set(only) - {p["name"] for p in chosen}
        if unknown:
            raise LabError(f"no such part of stage {stage}: {', '.join(sorted(unknown))}")
        chosen = [p for p in chosen if p["name"] in only]
    dest = Path(dest).resolve()
    if dest.exists() and not dest.is_dir():
        raise LabError(f"{dest}: exists and is not a folder")
    if dest.exists() and any(dest.iterdir()):
        raise LabError(f"{dest}: exists and is not empty")
    if dest == REFERENCE.resolve() or REFERENCE.resolve() in dest.parents:
        # Bazel does not stop at the handout's WORKSPACE: `bazel build //...` here would build
        # the handout's packages too (and fail), and the next handout would copy it.
        raise LabError(f"{dest}: inside the reference tree {REFERENCE}; write the handout outside it (../lab1)")
    problems = check(REFERENCE, table)
    if problems:
        raise LabError("the reference tree's lab parts are inconsistent:\n  " + "\n  ".join(problems))
    # A handout stopped half-way (Ctrl-C, a SIGTERM, `timeout`, even a SIGKILL) must not pass
    # for a whole one: INCOMPLETE_FILE is written first and removed last, and `tools/lab test`
    # there says so (one stopped while timing the reference had no times file and said nothing).
    dest.mkdir(parents=True, exist_ok=True)
    (dest / INCOMPLETE_FILE).write_text(
        f"tools/lab handout {stage} was stopped before it finished writing this handout (started "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}): files, LAB.md or the reference's times "
        f"({TIMES_FILE}) may be missing. Remove it and make the handout again.\n")
    try:
        chosen = write_handout(table, stage, stages, later, chosen, dest, hide_later, times, out)
    except BaseException:
        print(f"lab: stopped: {dest} is an incomplete handout ({INCOMPLETE_FILE} says so): remove it and "
              "make the handout again", file=sys.stderr)
        raise
    (dest / INCOMPLETE_FILE).unlink()
    return chosen


def write_handout(table, stage, stages, later, chosen, dest, hide_later, times, out):
    """handout()'s writing, into the folder dest that holds INCOMPLETE_FILE: returns chosen."""
    # Only what Git tracks goes to students: a teacher's untracked notes or worked answers
    # beside the reference (./scratch, ./solutions) must not travel with the handout.
    copy_tree(REFERENCE, dest, skip=("docs/answers",), untracked=False)
    found = scan(REFERENCE, table)[0]
    replacements = {}
    for part in chosen:
        chapter = table["stages"][str(part["stage"])]["chapter"]
        replacements[part["name"]] = stubs(part, chapter, regions(REFERENCE, table, part["name"], found))
        for copy in copies_of(part):   # the part's answer held elsewhere: stage 4, the twin
            replacements[copy] = copy_stubs(part, copy, chapter, regions(REFERENCE, table, copy, found),
                                            table["stages"][str(part["stage"])]["copy_tests_tag"])
    later_tags = [table["stages"][s]["tests_tag"] for s in later]
    for s in later:   # --hide-later: the later labs' answers are held back too
        for part in parts_of(table, s):
            replacements[part["name"]] = later_stubs(part, table["stages"][s]["chapter"],
                                                     regions(REFERENCE, table, part["name"], found), stage, later_tags)
            for copy in copies_of(part):
                replacements[copy] = copy_stubs(part, copy, table["stages"][s]["chapter"],
                                                regions(REFERENCE, table, copy, found), table["stages"][s]["copy_tests_tag"])
    replace_bodies(dest, table, replacements)
    copy_tags = sorted({table["stages"][str(p["stage"])]["copy_tests_tag"] for p in chosen if copies_of(p)})
    skipped_tags = sorted(set(copy_tags) | set(later_tags))
    if skipped_tags:
        filter_tests(dest / ".bazelrc", skipped_tags)
    outside = {rel: [text for _, text in lines]   # what `tools/lab test` watches (outside_changes)
               for rel, lines in outside_lines(dest, table, [p["name"] for p in chosen]).items()}
    (dest / HANDOUT_FILE).write_text(json.dumps({"stage": stage, "parts": [p["name"] for p in chosen],
                                                 "held_back": [p["name"] for s in later for p in parts_of(table, s)],
                                                 "skipped_tags": skipped_tags, "outside": outside}) + "\n")
    shipped = times and ship_times(chosen, dest, out)
    lines = [f"# edu-alloc lab: stage {stage}", "",
             "Write each part below between its `[lab NAME begin]` and `[lab NAME end]` markers,",
             "replacing the stub (which prints `edu-alloc lab: part NAME not implemented` and aborts",
             "when it is reached). A part whose answer spans several functions has a pair of",
             "markers in each (its row below counts its regions): write every one.",
             "The chapter explains each part where it cites `[lab NAME]`: " +
             ", ".join(f"`{table['stages'][s]['chapter']}`" for s in stages) + ".",
             "", "The parts call one another, and a test stops at the first stub it reaches, naming",
             "it. Here, with no reference to stand in for the others, a part is judged only once",
             "every part its tests reach is written (the chapter says which parts each call reaches);",
             "your teacher's grading puts the reference in place of every other part.", "",
             "Grading takes only the code between each part's markers from your tree (the tests,",
             "the rest of each file and everything else are the reference's): write it all there.",
             "`tools/lab test` names the first line you changed outside them in each part's file.",
             "An `#include` is such a line: each `.cc` file of a part includes `<algorithm>` (`std::min`,",
             "`std::max`) and, where a part returns NULL, `contract/diagnostics.h` (`enomem()`) for you.", "",
             f"Grade yourself: `tools/lab grade --stage={stages[0]}` (gates and part verdicts;",
             "the trace score needs the reference tree your teacher grades with).", ""]
    lines += ["## Where to start, and checking one part at a time", ""]
    for s in stages:
        if table["stages"][s].get("start"):
            lines += wrap(f"Stage {s}: {table['stages'][s]['start']}", 96, "") + [""]
    given = [p["name"] for s in stages for p in parts_of(table, s) if p not in chosen]
    if given:
        lines += wrap(f"This handout asks for {', '.join(p['name'] for p in chosen)} only: {', '.join(given)} "
                      f"{'is' if len(given) == 1 else 'are'} written already, so write {chosen[0]['name']} first.",
                      96, "") + [""]
    lines += ["`tools/lab test NAME` builds this tree and runs the tests that judge part NAME (the same",
              "tests and cases your teacher's grading runs for it), then says for each: pass, FAIL, or",
              "the stub it stopped at, so you know which part to write next. `tools/lab test` alone",
              "runs every part below in this order. By hand, one test of a part:", ""]
    limits = (f"`tools/lab test` stops a test that runs {LIMIT_FACTOR} times as long as the reference's "
              f"code took on your teacher's machine (at least {LIMIT_FLOOR} s; `{TIMES_FILE}` holds "
              "those times) and says so: a loop that never ends" if shipped else
              f"`tools/lab test` stops a test still running after {PART_TEST_SECONDS} s: a loop that never ends")
    first = chosen[0]["tests"][0] if chosen else None
    if first:
        lines += ["```sh", test_command(first), "```", ""]
    lines += wrap(limits + " fails rather than hangs.", 96, "") + [""]
    tsan = sorted({t for s in stages for t in table["stages"][s].get("tsan_gates", [])})
    if tsan:   # tools/lab test runs no sanitizer; grading does, and a race fails the part it lies in
        lines += ["`tools/lab test` runs no sanitizer, but grading also runs these tests under",
                  "ThreadSanitizer: a race it reports in a part's lines fails that part, and any report",
                  "holds back the trace marks. Run them so once every part passes:", "",
                  "```sh", "bazel test --config=tsan " + " ".join(tsan), "```", ""]
    copies = {}
    for p in chosen:
        for c, f in copies_of(p).items():
            copies.setdefault(f, []).append(f"`{c}`")
    if copies:
        lines += ["The reference holds these parts' answers elsewhere too, so its copies of them are",
                  "stubs here, not parts to write:", ""]
        lines += [f"- `{f}`: {', '.join(names)}" for f, names in copies.items()] + [""]
        lines += wrap("A test that runs them could never pass here, so `bazel test //...` (and `tools/test`) "
                      "in this tree leaves out every test tagged " + " or ".join(f"`{t}`" for t in copy_tags) +
                      " (the lines at the end of `.bazelrc`), and grading yourself skips them too; your "
                      "teacher's grading runs them with the reference's copies. Every other test fails "
                      "only where a part of yours is missing or wrong.", 96, "") + [""]
    if later:
        lines += wrap(f"This handout also holds back the answers of the later labs: every part of stage "
                      f"{', '.join(later)} is a stub too (not yours to write now), and `bazel test //...` here "
                      f"leaves out every test tagged {' or '.join(f'`{t}`' for t in later_tags)} (the lines at "
                      "the end of `.bazelrc`).", 96, "") + [""]
    if "stage4" in skipped_tags:
        first_out = min([int(s) for s in later] or [4])
        lines += wrap(f"Compare the stages that work here with `tools/run --stages="
                      f"{','.join(str(s) for s in range(1, first_out))}`.", 96, "") + [""]
    lines += ["| order | part | file | what it must do | judged by |", "|---|---|---|---|---|"]
    for i, p in enumerate(chosen, 1):
        tests = "; ".join(t["target"] + (f" `{t['cases']}`" if "cases" in t else "") for t in p["tests"])
        count = len(found[p["name"]])
        where = f"`{p['file']}`" + (f" ({count} regions: {p['procedure']})" if count > 1 else "")
        lines.append(f"| {i} | {p['name']} | {where} | {p['statement']} | {tests} |")
    (dest / "LAB.md").write_text("\n".join(lines) + "\n")
    return chosen


def filter_tests(bazelrc, tags):
    """Leaves the tests tagged `tags` out of `bazel test` in a handout: a `test` line for the
    default configuration, and the tags added to every configuration's own filter (a config's
    --test_tag_filters replaces the default's, it does not add to it)."""
    minus = ",".join(f"-{t}" for t in tags)
    text = Path(bazelrc).read_text() if Path(bazelrc).exists() else ""
    text = re.sub(r"--test_tag_filters=(\S+)", lambda m: f"--test_tag_filters={m.group(1)},{minus}", text)
    text += ("\n# edu-alloc lab handout (tools/lab, LAB.md): tests tagged " + " or ".join(tags) + " run code\n"
             "# this handout holds back as stubs (answers: copies of this lab's, later labs' parts).\n"
             f"test --test_tag_filters={minus}\n")
    Path(bazelrc).write_text(text)


def test_command(test):
    """The shell command that runs one of a part's tests in place."""
    return f"bazel test {test['target']}" + (f" --test_arg=--test-case='{test['cases']}'" if "cases" in test else "")


# ---- Running Bazel and tests --------------------------------------------------------------

def bazel_env():
    env = dict(os.environ)
    env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir   # ~/.bazelrc (disk cache), even in a test
    for key in list(env):
        if key.startswith(("TEST_", "BAZEL_", "RUNFILES_", "BUILD_")):
            del env[key]
    return env


QUIET = ["--ui_event_filters=-info,-stdout,-stderr", "--noshow_progress", "--show_result=0"]


# Stopped from outside while Bazel runs a command, the command is interrupted as Ctrl-C does it
# (SIGINT to the client: the server cancels the build), and the client given this long to exit.
# Killed instead, the client left its server building to the end: `timeout 12 tools/lab handout
# 1 DIR` exited after 48 s, the scratch server's shutdown waiting for the build.
BAZEL_CANCEL_SECONDS = 20


def cache_dir():
    """The lab's own cache on this machine: ~/.cache/edu-alloc/, or under $XDG_CACHE_HOME."""
    home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "edu-alloc"


# Every scratch tree (a grade, a handout's timing) builds with a disk cache of the lab's own, so
# the reference's unchanged files compile once per machine and each later grade recompiles only
# what the student's parts change. Without it a scratch tree built everything cold wherever
# ~/.bazelrc names no disk cache (a new machine, CI): one stage 1 grade took 250 s against 44 s
# warm. Bazel 4 never shrinks a disk cache, so the lab does (prune_disk_cache): over
# DISK_CACHE_BOUND bytes, the files written longest ago go until half of it is left. A file
# removed is only a cache miss for a build that wanted it.
DISK_CACHE_BOUND = 4 << 30


def disk_cache():
    return cache_dir() / "bazel-disk"


def prune_disk_cache(folder=None, bound=DISK_CACHE_BOUND):
    """Removes the oldest files (by modification time) of the disk cache folder while it holds
    more than bound bytes, down to half of bound. Returns the number of bytes removed."""
    files = []
    for path in Path(folder or disk_cache()).rglob("*"):
        try:
            st = path.lstat()
        except OSError:   # removed meanwhile (another grade pruning)
            continue
        if path.is_file():
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    if total <= bound:
        return 0
    removed = 0
    for _, size, path in sorted(files):
        if total - removed <= bound // 2:
            break
        try:
            path.unlink()
            removed += size
        except OSError:
            pass
    return removed


def bazel_command(args, output_base=None):
    """The command line of `bazel ARGS`; with output_base (a scratch tree), a build or test uses
    the lab's disk cache, and a test always runs: a cached result is not a verdict (a race
    ThreadSanitizer missed once would pass every grade after)."""
    startup = [f"--output_base={output_base}"] if output_base else []
    options = QUIET if args[0] in ("build", "test") else []
    if output_base and args[0] in ("build", "test"):
        options = options + [f"--disk_cache={disk_cache()}"]
        if args[0] == "test":
            options.append("--nocache_test_results")
    return ["bazel", *startup, args[0], *options, *args[1:]]


def bazel(tree, *args, log=None, output_base=None):
    """Runs `bazel ARGS` in tree. A scratch tree passes an output_base inside its scratch folder,
    so removing the folder also removes the Bazel server's outputs (otherwise every grading
    would leave a few hundred MiB under ~/.cache/bazel); its builds share the lab's disk cache."""
    if output_base and args[0] in ("build", "test"):
        prune_disk_cache()
    cmd = bazel_command(args, output_base)
    with subprocess.Popen(cmd, cwd=tree, env=bazel_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as client:
        try:
            stdout, stderr = client.communicate()
        except BaseException:   # SIGTERM's SystemExit, Ctrl-C: cancel the command, then go on unwinding
            client.send_signal(signal.SIGINT)
            try:
                client.communicate(timeout=BAZEL_CANCEL_SECONDS)
            except subprocess.TimeoutExpired:
                client.kill()
            raise
    r = subprocess.CompletedProcess(cmd, client.returncode, stdout, stderr)
    if log is not None:
        log.append(f"$ (cd {tree} && {' '.join(cmd)}) -> {r.returncode}\n{r.stdout[-4000:]}{r.stderr[-4000:]}")
    return r


def binary(tree, target):
    pkg, name = target[2:].split(":")
    return Path(tree).resolve() / "bazel-bin" / pkg / name   # absolute: a test runs in its runfiles


def test_log(tree, target):
    """The log of the last `bazel test` run of target in tree, or "" when it has none."""
    pkg, name = target[2:].split(":")
    path = Path(tree).resolve() / "bazel-testlogs" / pkg / name / "test.log"
    return path.read_text(errors="replace") if path.is_file() else ""


DOCTEST_WHERE = re.compile(r"^(\S+:\d+):$")                                  # a failed case's FILE:LINE
DOCTEST_ERROR = re.compile(r"^(\S+:\d+): (?:FATAL )?ERROR: (.*)$")          # FILE:LINE: ERROR: what


TRAILING_COMMENT = re.compile(r"^([^\"]*(?:\"[^\"]*\"[^\"]*)*?)\s//\s*(.+)$")   # code, then // why (no // in a string)


def line_comment(root, at):
    """The trailing comment of the source line `at` (FILE:LINE) under root, which says what the
    assertion there is for: "" when there is none, or no such file."""
    path, _, line = at.rpartition(":")
    try:
        text = read_lines(Path(root) / path)[int(line) - 1]
    except (OSError, ValueError, IndexError):
        return ""
    m = TRAILING_COMMENT.match(text)
    return m.group(2).strip() if m and m.group(1).strip() else ""


def failure_summary(out, root=None):
    """What a failed test run says went wrong, in one line: each failed doctest case (at most
    three) as `FILE:LINE: TEST CASE: what failed (values); logged: its INFO lines` (the case's
    FILE:LINE first when the assertion is in a helper of another file), then the one-line diagnostics of
    the stage (`edu-alloc stage1_brk: ...`), of a stub (`edu-alloc lab: ...`) or of a sanitizer
    (`SUMMARY: ThreadSanitizer: data race FILE:LINE in f`); the last lines of the output when it
    has none. With root (the tree the test ran from), a failed assertion's line that carries a
    trailing comment adds it: the test's own words for what went wrong."""
    lines = out.split("\n")
    cases, diagnostics = [], []
    case = where = None
    for i, line in enumerate(lines):
        if line.startswith("====="):
            case = where = None
        elif DOCTEST_WHERE.match(line) and i + 1 < len(lines) and lines[i + 1].startswith("TEST CASE:"):
            where, case = line[:-1], lines[i + 1][len("TEST CASE:"):].strip()
        elif case is not None and DOCTEST_ERROR.match(line):
            at, what = DOCTEST_ERROR.match(line).groups()
            # Then doctest's "  values: ..." and "  logged: ..." (INFO, over indented lines).
            values, logged, j = "", [], i + 1
            while j < len(lines) and lines[j].startswith("  ") and lines[j].strip():
                text = lines[j].strip()
                if text.startswith("values:"):
                    values = text
                else:
                    logged.append(text[len("logged:"):].strip() if text.startswith("logged:") else text)
                j += 1
            # An assertion in a helper of another file (tests/support.cc) is placed by its case.
            head = f"{at}: {case}" if at.split(":")[0] == where.split(":")[0] else f"{where}: {case}: {at}"
            said = line_comment(root, at) if root is not None else ""
            cases.append(f"{head}: {what}" + (f" ({values})" if values else "")
                         + (f" [the test's comment: {said}]" if said else "")
                         + (f"; logged: {'; '.join(logged[:3])}" if logged else ""))
            case = None   # its first failure names it
        elif line.startswith(("edu-alloc ", "SUMMARY: ")) and line.strip() not in diagnostics:   # a stub's, a sanitizer's
            diagnostics.append(line.strip())
    if not cases and not diagnostics:
        return " | ".join(out.strip().split("\n")[-3:])
    more = f" (and {len(cases) - 3} more failed cases)" if len(cases) > 3 else ""
    return " | ".join(cases[:3] + diagnostics[:2]) + more


SANITIZER_SUMMARY = re.compile(r"SUMMARY: ThreadSanitizer: (.+?) (\S+):(\d+)")


def reports_in_parts(out, found):
    """ThreadSanitizer's reports (their SUMMARY lines) in out whose FILE:LINE lies between a
    part's markers in the tree that `found` scanned: {part: ["data race at FILE:LINE", ...]}."""
    hits = {}
    for kind, path, line in SANITIZER_SUMMARY.findall(out):
        line = int(line)   # 1-based; found holds the 0-based lines of the markers
        for name, spans in found.items():
            if any(path.endswith(rel) and begin + 1 < line <= end for rel, begin, end in spans):
                what = f"{kind} at {path}:{line}"
                if what not in hits.setdefault(name, []):
                    hits[name].append(what)
    return hits


def in_students_lines(text, work, tree, files):
    """text with each FILE:LINE of files (the stage's part files) in the grading tree `work`
    turned into the same line of the student's `tree`. The two differ: the student's file may
    still hold the stub's prelude, and a part's build puts the reference's code in place of the
    student's other parts of the file, longer or shorter. Lines are matched by content (difflib),
    so a line of the student's own code is found wherever it stands; one the student's file does
    not hold (the reference's code) keeps its number and says whose it is."""
    for rel in files:
        pattern = re.compile(r"(?<![\w-])((?:\./)?" + re.escape(rel) + r"):(\d+)")
        if not pattern.search(text):
            continue
        try:
            ours, theirs = read_lines(Path(work) / rel), read_lines(Path(tree) / rel)
        except OSError:
            continue
        line_of = {}
        for a, b, size in difflib.SequenceMatcher(None, ours, theirs, autojunk=False).get_matching_blocks():
            line_of.update({a + i + 1: b + i + 1 for i in range(size)})

        def mapped(m):
            line = int(m.group(2))
            return (f"{m.group(1)}:{line_of[line]}" if line in line_of
                    else f"{m.group(1)}:{line} (the reference's code in the grading tree)")
        text = pattern.sub(mapped, text)
    return text


def seconds_text(seconds):
    """A run's time as the reports give it: two significant digits under a second, tenths under
    ten, whole seconds above."""
    return f"{seconds:.2g}" if seconds < 1 else f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"


def kill_group(proc):
    """Kills a process started in a session of its own, with every process it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# A run past its limit is asked where it is before it is killed: gdb, when the machine has it,
# reads every thread's stack (the frame in a part's lines names the part: a student sees
# S1.find_fit, not only "a loop"), then a SIGTERM lets doctest's signal handler report the test
# case it was running (its "TEST CASE:" header, "test case CRASHED: SIGTERM") before the group is
# killed. Either may find nothing (no gdb, ptrace refused, a handler stuck behind a lock the hung
# code holds): the FAIL then says what it has. STOP_GRACE bounds the wait for doctest's report,
# STACK_SECONDS gdb's attach.
STACK_TOOL = "gdb"
STACK_SECONDS = 30
STOP_GRACE = 5
GDB_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(.+?) \(.*\)(?: at (\S+):(\d+))?(?: from \S+)?\s*$")
DOCTEST_CRASH = re.compile(r"^(\S+:\d+):\nTEST CASE:\s+(.*?)\n(?:.*\n)*?\1: FATAL ERROR: test case CRASHED: SIGTERM", re.M)


# Where run_test's FAIL of a killed run says it was: " in test case ..., stuck in ...".
KILLED_AT = re.compile(r" and killed((?: in test case |, stuck in ).*?)(?: \(the reference's code runs it in seconds)?"
                       r": a loop that never ends\?$")


def stacks_of(pid):
    """Every thread's frames of the running process pid, innermost first, each (function, FILE,
    LINE) with FILE relative to the build's root ("" and 0 for a frame without a source line of
    the project: the C library's); [] when gdb is missing or cannot attach."""
    gdb = shutil.which(STACK_TOOL)
    if not gdb:
        return []
    try:
        r = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "thread apply all bt 64"],
                           capture_output=True, text=True, timeout=STACK_SECONDS, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return []
    threads = []
    for line in r.stdout.split("\n"):
        if line.startswith("Thread "):
            threads.append([])
        m = GDB_FRAME.match(line)
        if m and threads:
            function, path, number = m.groups()
            path = (path or "").removeprefix("./")
            project = bool(path) and not path.startswith(("/", ".."))   # not the C library's sources
            threads[-1].append((function, path if project else "", int(number) if project else 0))
    return [t for t in threads if t]


def where_stuck(threads, found):
    """Where a hung run was stuck, in words, from its threads' frames (stacks_of) and the tree's
    part regions (scan's found): the innermost frame that lies between a part's markers, any
    thread ("part S1.find_fit (s1_find_fit.lab_hang at stage1_brk/freelist.asm:192)"), else the
    innermost frame of the project's code ("stage1_brk/malloc.asm:48 (.big_enough)"); ""."""
    for frames in threads:
        for function, path, line in frames:
            for name, spans in found.items():
                if " copy" not in name and any(path == rel and begin + 1 < line <= end for rel, begin, end in spans):
                    return f"part {name} ({function} at {path}:{line})"
    for frames in threads:
        for function, path, line in frames:
            if path:
                return f"{path}:{line} ({function})"
    return ""


def stuck_case(out):
    """The test case doctest reported when the SIGTERM stopped it: 'FILE:LINE: "NAME"', or ""."""
    found = DOCTEST_CRASH.findall(out)
    return f'{found[-1][0]}: "{found[-1][1]}"' if found else ""


def parts_found(tree):
    """The tree's part regions (scan), {} when the tree has none to read."""
    try:
        return scan(tree, load_table(REFERENCE))[0]
    except (LabError, OSError):
        return {}


def killed_at_limit(proc, tree, timeout, reference_seconds, where):
    """Stops run_test's run `proc`, past its limit of `timeout` seconds, with every process it
    started, and says so: where it was stuck (gdb), the case doctest reports on SIGTERM, and the
    reference's time when reference_seconds gives it."""
    stuck = where_stuck(stacks_of(proc.pid), parts_found(tree))
    stdout = stderr = ""
    try:
        proc.send_signal(signal.SIGTERM)   # doctest reports the case it runs, then exits
        stdout, stderr = proc.communicate(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:   # its handler is stuck too: no case to name
        pass
    kill_group(proc)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:   # a process that left the group holds the pipes
        pass
    case = stuck_case(stdout + stderr)
    at = "".join([f" in test case {case}" if case else "", f", stuck in {stuck}" if stuck else ""])
    if reference_seconds is None:
        return (f"timed out after {timeout:g} s and killed{at} (the reference's code runs it "
                "in seconds: a loop that never ends?)")
    return (f"timed out after {timeout:g} s (the reference takes "
            f"{seconds_text(reference_seconds)} s{where}) and killed{at}: a loop that never ends?")


def run_test(tree, target, cases=None, timeout=600, reference_seconds=None, where=""):
    """Runs a built test binary; returns (passed, parts whose stub it reached, what failed:
    failure_summary). A run still going after `timeout` seconds is killed with every process it
    started (a death test's child keeps spinning otherwise); its FAIL says so, the test case it
    was running and the part (or line) it was stuck in, as far as doctest and gdb tell, and how
    long the reference's run takes when reference_seconds (time_limit) says, measured `where`
    (" on the teacher's machine"; grading's own machine by default)."""
    path = binary(tree, target)
    if not path.exists():
        return False, set(), "not built"
    cmd = [str(path)] + ([f"--test-case={cases}"] if cases else [])
    runfiles = Path(str(path) + ".runfiles") / WORKSPACE_NAME
    env = dict(bazel_env(), EDU_LAB_GRADING="1")
    with subprocess.Popen(cmd, cwd=runfiles if runfiles.is_dir() else tree, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True) as proc:
        # Anything raised in here (a grade stopped by SIGTERM, a test's alarm, even while gdb
        # reads the stacks of a run past its limit) kills the run first: Popen's exit waits for
        # the process, and a hung one would hold the grade forever.
        try:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False, set(), killed_at_limit(proc, tree, timeout, reference_seconds, where)
        except BaseException:
            kill_group(proc)
            raise
    out = stdout + stderr
    ok = proc.returncode == 0
    return ok, set(NOT_IMPLEMENTED.findall(out)), "" if ok else failure_summary(out, tree)


# ---- Time limits --------------------------------------------------------------------------
# A test run in grading may take LIMIT_FACTOR times what the reference's own run of the same
# binary and doctest filter takes on this machine, and never less than LIMIT_FLOOR seconds
# (docs/teaching.md "Time limits"): a part is a fraction of its tests' run, so a student's part
# many times slower than the reference's still fits. The reference's times are measured once
# per reference tree (its files' contents) and machine, in the scratch tree before the
# student's code goes in, and kept in reference_times_file(); a grade at a higher load than the
# measurement's scales the limit by the ratio of (1 + load average per processor), at most
# MAX_LOAD_SCALE times. A
# ThreadSanitizer gate (Bazel's --test_timeout) expects TSAN_SLOWDOWN times its plain run
# (stage 4's battery took 5 times as long, remote_test 7.5 times). Where the reference's run
# does not pass (a handout grading itself: its parts are stubs) the limit is
# PART_TEST_SECONDS, and a tsan gate keeps Bazel's own (its size's). `tools/lab test` in a
# handout takes the same limits from the reference's times the handout ships (ship_times).
LIMIT_FACTOR = 10
LIMIT_FLOOR = 20
# The load's scaling stops at 8 times. The ratio overestimates a busy machine's slowdown (the
# twin test took 4.4 times as long at a load of 22 on 2 cores as at 2.7, where the ratio said 5.1;
# from a quiet record, load 0, the busiest load seen here would say 12.5), so unbounded it grew
# a hung run's cost with every point of load while the real slowdown grew less. 8 is above every
# slowdown measured on the shared machine, so at any load seen there a correct tree still has
# the whole LIMIT_FACTOR for its own slowness, and a hung run costs at most 80 times the
# reference's run (docs/teaching.md "Time limits").
MAX_LOAD_SCALE = 8
TSAN_SLOWDOWN = 8
# A run with no reference time (a handout made with --no-times or before handouts shipped
# times; a run the reference fails) gets 3 minutes: a part that loops forever (a next fit that
# never stops) kept a student waiting 10 minutes a test for the verdict. The slowest tests a
# part has, whole batteries, ran in 8-13 s on the shared 2-core machine at load 5.
PART_TEST_SECONDS = 180


def reference_times_file():
    """The cache of the reference's times, in cache_dir()."""
    return cache_dir() / "lab-reference-times.json"


def machine():
    """This machine, as the cache of the reference's times knows it: host, processor, count."""
    model = ""
    try:
        model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().split("\n")
                      if l.startswith("model name")), "")
    except OSError:
        pass
    return f"{os.uname().nodename}|{model}|{os.cpu_count()}"


def tree_digest(root):
    """The reference tree's identity for the cache: its files by path and content, in a Git
    checkout the tracked ones (a report that `tools/lab grade --json` writes into the tree, or a
    scratch file, would have every grade measure the reference again)."""
    digest = hashlib.sha256()
    for rel in sorted(tree_files(root, untracked=False)):
        digest.update(rel.encode() + b"\0" + (Path(root) / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def load_per_cpu():
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def run_key(target, cases=None):
    return f"{target} {cases or ''}".strip()


# Reference trees whose times the cache keeps, the latest used first: a teacher's one per class,
# more where several trees grade on one machine (the project's helpers, each a tree of its own).
CACHED_TREES = 16


def read_times_cache(path):
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def store_times(path, key, runs):
    """Adds runs ({run_key: record}) to the cache's entry `key` (machine|tree), which becomes the
    latest used; only the CACHED_TREES entries used last stay."""
    cache = read_times_cache(path)
    entry = cache.get(key) if isinstance(cache.get(key), dict) else {}
    cache[key] = {"used": time.time(), "runs": dict(entry.get("runs", {}), **runs)}
    kept = sorted(cache, key=lambda k: cache[k].get("used", 0) if isinstance(cache[k], dict) else 0)[-CACHED_TREES:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = path.with_name(f"{path.name}.{os.getpid()}")
        fresh.write_text(json.dumps({k: cache[k] for k in kept}, indent=1) + "\n")
        os.replace(fresh, path)
    except OSError:
        pass   # a cache that cannot be written costs a measurement next time, nothing else


# A cached record measured at a load per processor at least REMEASURE_QUIETER times busier,
# in (1 + load) terms, than the machine is now is measured again and replaced: limits scale up
# with load but never down (time_limit; teaching.md "Time limits" says why), so a reference
# timed on a busy machine would otherwise give every later grade of the class its long limits.
REMEASURE_QUIETER = 2.0


def measured_busier(record, load=None):
    """True when record (a reference's run) was measured on a machine REMEASURE_QUIETER times
    as busy as this one is now (load: per processor, now by default)."""
    now = load_per_cpu() if load is None else load
    return isinstance(record, dict) and (1 + record.get("load", 0)) >= REMEASURE_QUIETER * (1 + now)


def reference_times(runs, digest, measure):
    """{run_key: {"seconds", "passed", "load"}} for every (target, cases) in runs: from the cache
    when this reference tree was measured on this machine at a load not far above today's
    (measured_busier), else measure(run) -> record. Each record is cached as soon as it is
    measured, so grades side by side share the reference's runs; the cache keeps the
    CACHED_TREES trees used last, so it does not grow with every commit graded."""
    path, key, times = reference_times_file(), f"{machine()}|{digest}", {}
    for run in dict.fromkeys(runs):
        name = run_key(*run)
        entry = read_times_cache(path).get(key)
        times[name] = (entry.get("runs", {}) if isinstance(entry, dict) else {}).get(name)
        if times[name] is None or measured_busier(times[name]):
            times[name] = measure(run)
            store_times(path, key, {name: times[name]})
    store_times(path, key, {})   # used now
    return times


def time_limit(record, tsan=False, load=None):
    """(seconds a run may take, the reference's seconds) from the reference's record, at the
    load average per processor `load` (now, by default); (PART_TEST_SECONDS, None) without a
    passing record, (None, None) for a tsan gate then."""
    if not record or not record["passed"]:
        return (None if tsan else PART_TEST_SECONDS), None
    busier = min(MAX_LOAD_SCALE, max(1.0, (1 + (load_per_cpu() if load is None else load)) / (1 + record["load"])))
    return round(max(LIMIT_FLOOR, LIMIT_FACTOR * record["seconds"] * busier * (TSAN_SLOWDOWN if tsan else 1))), \
        record["seconds"]


def measure_run(tree, target, cases=None):
    """Runs a built test once, as grading does: {seconds, passed, load (per processor)}."""
    load, started = load_per_cpu(), time.monotonic()
    ok, _, _ = run_test(tree, target, cases, timeout=PART_TEST_SECONDS)
    return {"seconds": round(time.monotonic() - started, 3), "passed": ok, "load": round(load, 2)}


# A handout ships the reference's times of its parts' tests (TIMES_FILE), taken from the cache
# above when the teacher's machine has timed this reference tree (a grade did), else measured
# now in a scratch copy of it; `tools/lab test` there bounds each run by them as grading does
# (time_limit), not by PART_TEST_SECONDS. Only the parts' tests: they are all `tools/lab test`
# runs, and grading never reads the file (a student may edit it; grading times the reference
# itself). A handout made without them (--no-times, or an old one) keeps PART_TEST_SECONDS.

class NotMeasured(Exception):
    """The reference's tests did not build in the scratch copy: no time to ship (or cache)."""


def part_runs(parts):
    """The (target, doctest filter) of every test of parts, each once, in order."""
    return list(dict.fromkeys((t["target"], t.get("cases")) for p in parts for t in p["tests"]))


def ship_times(parts, dest, out=None):
    """Writes TIMES_FILE into the handout dest: the reference's record (measure_run) of each of
    parts' tests, with this machine and when. True when written; a reference that is itself a
    handout (its parts are stubs) or whose tests do not build ships none (out says why)."""
    out = out or sys.stdout
    if (REFERENCE / HANDOUT_FILE).exists():
        print(f"lab: {REFERENCE} is a handout: no reference to time; `tools/lab test` in {dest} "
              f"gives each test {PART_TEST_SECONDS} s", file=out)
        return False
    runs, started, scratch = part_runs(parts), time.monotonic(), None

    def measure(run):   # the first run not cached copies the reference and builds every test
        nonlocal scratch
        if scratch is None:
            scratch = Path(tempfile.mkdtemp(prefix="edu-lab-times-"))
            copy_tree(REFERENCE, scratch / "tree", untracked=False)   # what tree_digest knows
            built = bazel(scratch / "tree", "build", "--keep_going", *{t for t, _ in runs},
                          output_base=scratch / "bazel")
            if built.returncode != 0:
                raise NotMeasured(" | ".join(build_errors(built.stderr)[:3]))
        return measure_run(scratch / "tree", *run)
    try:
        times = reference_times(runs, tree_digest(REFERENCE), measure)
    except NotMeasured as e:
        print(f"lab: the reference's tests did not build, so no times shipped (`tools/lab test` gives each "
              f"test {PART_TEST_SECONDS} s): {e}", file=out)
        return False
    finally:
        if scratch is not None:
            bazel(scratch / "tree", "shutdown", output_base=scratch / "bazel")
            shutil.rmtree(scratch, ignore_errors=True)
    (Path(dest) / TIMES_FILE).write_text(json.dumps({
        "about": "the reference's run of each test of this handout's parts on the teacher's machine "
                 f"(seconds; load: the load average per processor then): `tools/lab test` stops a run after "
                 f"{LIMIT_FACTOR} times as long, at least {LIMIT_FLOOR} s, scaled up on a busier machine "
                 f"(at most {MAX_LOAD_SCALE} times). "
                 "Grading never reads this file: it times the reference itself.",
        "machine": machine(), "written": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "runs": times}, indent=1) + "\n")
    print(f"lab: shipped the reference's times of {len(times)} test{'s' * (len(times) != 1)} in {TIMES_FILE} "
          f"({'measured now' if scratch else 'from the cache of this machine'}, "
          f"{time.monotonic() - started:.0f} s)", file=out)
    return True


def shipped_times(tree):
    """The reference's records that the handout tree ships ({run_key: record}): {} without its
    TIMES_FILE; a record that is not one (a student's edit) is left out, so its run gets
    PART_TEST_SECONDS."""
    try:
        runs = json.loads((Path(tree) / TIMES_FILE).read_text()).get("runs")
    except (OSError, ValueError, AttributeError):
        return {}

    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf")
    return {k: r for k, r in (runs.items() if isinstance(runs, dict) else [])
            if isinstance(r, dict) and isinstance(r.get("passed"), bool) and number(r.get("seconds"))
            and number(r.get("load"))}


# ---- Traces -------------------------------------------------------------------------------

# Timed passes per stagediff run (its --reps; a run's rate is its fastest pass). A pass of a
# course trace takes well under a millisecond (binary-bal: 0.3 ms), so a loaded machine's
# preemption lands inside most of three passes and few of fifteen: the reference against itself
# on binary-bal at a load of 5.5-6, 38 grades' worth of five pairs, read medians of 0.79-1.25
# with three passes and the order tied to the processor, 0.91-1.37 with fifteen and the order
# balanced. The passes cost 15 x 0.3 ms a run; the run's process start and validating pass cost more.
TIMED_PASSES = 15


def replay(stagediff, stage_name, trace, cpu=None, passes=TIMED_PASSES):
    """One `stagediff --json` run of one trace through one stage (its own child process,
    so a fresh heap) timing `passes` passes, on processor `cpu` alone when one is given: the
    stage's result record, or {valid: False, failure: why}."""
    pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
    r = subprocess.run([str(stagediff), f"--stages={stage_name}", f"--trace={trace}", "--json", "--no-libc",
                        f"--reps={passes}"], capture_output=True, text=True, timeout=600, preexec_fn=pin)
    try:
        results = json.loads(r.stdout)["traces"][0]["results"]
        return next(s for s in results if s["stage"] == stage_name)
    except (ValueError, KeyError, IndexError, StopIteration):
        lines = (r.stdout + r.stderr).strip().split("\n")
        return {"valid": False, "failure": lines[-1] if lines else f"exit {r.returncode}"}


def best_rate(run):
    """Operations per second of a run's fastest timed pass: on a loaded machine the fastest
    pass is the one least disturbed, for the student's stage and the reference's alike."""
    fastest = run.get("seconds_min") or run.get("seconds")
    return run["operations"] / fastest if fastest else run["ops_per_second"]


# A trace whose median ratio over the first pairs falls short of `enough` (grading passes
# throughput_full_at) is measured with MORE_PAIRS times as many pairs again, and the median of
# all of them counts: a submission that is slow is slow in every pair and stays short, while a
# loaded stretch that slowed three of five pairs' student runs rarely slows eight of fifteen.
MORE_PAIRS = 2


def replay_traces(student, reference, stage_name, traces, repetitions, enough=None):
    """Each trace through the student's and the reference's stage in pairs of fresh processes
    (a fresh heap per trace): the two runs of a pair back to back on one processor, the
    processors taken in turn and, on each processor, which tree goes first alternating (so
    neither tree always goes first on one processor). A tree's rate in a run is its fastest of
    TIMED_PASSES passes; the throughput ratio is the median over the pairs of their ratios, and
    when it is below `enough`, over MORE_PAIRS times as many pairs again as well.
    Why pairs: on the project's 2-core virtual machines a process runs a whole short trace at
    one of two speeds, 1.5 times apart, depending on the processor and the moment (the
    reference against itself, binary-bal: 30 unpinned pairs 0.58-1.55; pinned, 24 of 30 within
    0.96-1.11); the ratio of each tree's fastest run was below 0.8 for the reference against
    itself about one time in seven."""
    cpus = sorted(os.sched_getaffinity(0))
    rows = []

    def pair(r, mine, theirs, trace):
        cpu = cpus[r % len(cpus)]
        if (r // len(cpus)) % 2 == 0:
            mine.append(replay(student, stage_name, trace, cpu))
            theirs.append(replay(reference, stage_name, trace, cpu))
        else:
            theirs.append(replay(reference, stage_name, trace, cpu))
            mine.append(replay(student, stage_name, trace, cpu))

    for trace in traces:
        mine, theirs = [], []
        for r in range(repetitions):
            pair(r, mine, theirs, trace)
            if not mine[-1].get("valid"):
                break
        broken = next((t.get("failure", "") for t in theirs if not t.get("valid")), None)
        if broken is not None:
            # The reference fails it too (a malformed line in a trace the teacher added): no
            # student could be scored on it, so grading stops here rather than fail them all.
            raise LabError(f"{broken.removeprefix('stagediff: ')} (a trace the reference cannot replay: "
                           f"fix it or take it out of {Path(trace).parent})")
        valid = all(m.get("valid") for m in mine)
        row = {"trace": Path(trace).name, "valid": valid,
               "failure": next((m.get("failure", "") for m in mine if not m.get("valid")), "")}
        if valid:
            ratio = lambda: statistics.median(best_rate(m) / best_rate(t) for m, t in zip(mine, theirs))
            if enough is not None and ratio() < enough:
                for r in range(repetitions, repetitions * (1 + MORE_PAIRS)):
                    pair(r, mine, theirs, trace)
                if not all(run.get("valid") for run in mine + theirs):   # valid once, not now: no score
                    row.update(valid=False, failure=next(run.get("failure", "") for run in mine + theirs
                                                         if not run.get("valid")))
                    rows.append(row)
                    continue
            row.update(utilisation=mine[0]["utilisation"], reference_utilisation=theirs[0]["utilisation"],
                       ops_per_second=max(best_rate(m) for m in mine),
                       reference_ops_per_second=max(best_rate(t) for t in theirs),
                       throughput_ratio=ratio(), pairs=len(mine), operations=mine[0]["operations"])
        rows.append(row)
    return rows


def trace_list(root, subset):
    folder = Path(root) / "traces"
    traces = sorted(folder.glob("*.rep"))
    if subset:
        wanted = subset.split(",")
        traces = [t for t in traces if t.stem in wanted]
        missing = set(wanted) - {t.stem for t in traces}
        if missing:
            raise LabError(f"no such trace in {folder}: {', '.join(sorted(missing))}")
    if not traces:
        raise LabError(f"{folder}: no .rep traces to replay")
    return traces


# ---- Grade --------------------------------------------------------------------------------

# Pairs of stagediff runs per trace (replay_traces): the median of five pairs' ratios is the
# throughput rule teaching.md gives; `tools/lab grade` and grade() share this one number.
PAIRS = 5


def grade(table, tree, stage, traces_subset=None, reference_stagediff=None, repetitions=PAIRS, keep=False,
          only=None):
    """Grades the parts of `stage` in the student tree `tree` against REFERENCE (this tree):
    the report (a dict, printed by print_report) and the log of every Bazel command. `only`: the
    parts the lab asked for, by default a handout's own --parts; the others keep the reference's
    code and earn no marks, so the correctness marks are split among these alone."""
    tree = edu_tree(tree)
    info = table["stages"][stage]
    parts = parts_of(table, stage)
    if only is None and (tree / HANDOUT_FILE).exists():
        claim = json.loads((tree / HANDOUT_FILE).read_text())
        if str(claim.get("stage")) == stage:
            only = claim["parts"]
    if only:
        unknown = set(only) - {p["name"] for p in parts}
        if unknown:
            raise LabError(f"no such part of stage {stage}: {', '.join(sorted(unknown))}")
        parts = [p for p in parts if p["name"] in only]
    weights = table["score"]
    traces = trace_list(REFERENCE, traces_subset)
    ref_is_handout = (REFERENCE / HANDOUT_FILE).exists()
    log, started = [], time.time()
    scratch = Path(tempfile.mkdtemp(prefix="edu-lab-grade-"))
    work = scratch / "tree"

    def in_scratch(*args, log=None):   # Bazel in the scratch tree, its outputs in scratch too
        return bazel(work, *args, log=log, output_base=scratch / "bazel")

    try:
        # The grading tree is the reference with the student's code between each part's
        # markers put in place of its own: the tests, the battery, the rest of every file and
        # the stage diff stay the reference's, so neither a test changed in a handout nor a
        # handout made at an older commit changes the grade. A part whose markers are broken
        # gets its stub, so every gate that reaches it fails.
        copy_tree(REFERENCE, work)
        given_found, given_problems = scan(tree, table)
        ref_found = scan(REFERENCE, table)[0]
        chapter = info["chapter"]
        bodies, ref_bodies, verdicts, given = {}, {}, {}, {}
        for p in parts:
            name = p["name"]
            ref_bodies[name] = regions(REFERENCE, table, name, ref_found) or [[]]
            bodies[name] = regions(tree, table, name, given_found)
            trouble = marker_trouble(p, given_found, given_problems, len(ref_bodies[name]))
            if trouble:
                bodies[name] = None   # a region's markers are broken or gone: its code cannot be placed
                verdicts[name] = "markers missing or broken: cannot judge: " + trouble
                given[name] = stubs(p, chapter, ref_bodies[name])
            else:
                given[name] = bodies[name]
                if holds_stub(bodies[name], name) or \
                        normalised_regions(bodies[name]) == normalised_regions(stubs(p, chapter, ref_bodies[name])):
                    verdicts[name] = "not implemented (the handout's stub" + stubbed_regions(bodies[name], name) + ")"

        # Time limits: the reference's own run of every gate and part test, on this machine
        # (cached per reference tree and machine), timed here while the scratch tree is still
        # the reference; a run of the student's code may take LIMIT_FACTOR times as long.
        skipped = [t for t in info.get("reference_gates", []) if ref_is_handout]
        runs = [(t, None) for t in info["gates"] if t not in skipped] + \
               [(t["target"], t.get("cases")) for p in parts for t in p["tests"]]

        reference_built = []

        def measure(run):   # the first run not cached builds them all
            if not reference_built:
                reference_built.append(in_scratch("build", "--keep_going", *{t for t, _ in runs}, log=log))
            return measure_run(work, *run)
        # A handout grading itself has no reference to time (its parts are stubs, or the
        # student's own): every run gets PART_TEST_SECONDS, as in `tools/lab test`.
        reference = {} if ref_is_handout else reference_times(runs, tree_digest(REFERENCE), measure)

        def limited(target, cases=None, tsan=False):   # run_test's arguments and the record's fields
            limit, seconds = time_limit(reference.get(run_key(target, cases)), tsan)
            return {"timeout": limit, "reference_seconds": seconds}

        def timing(limits, detail):   # what a gate's or test's record says of its time limit
            return {"seconds_limit": limits["timeout"], "reference_seconds": limits["reference_seconds"],
                    "timed_out": detail.startswith("timed out")}

        def tsan_test(target, limits=None):   # a tsan gate under Bazel: its limit is --test_timeout
            limits = limits or limited(target, tsan=True)
            bound = [f"--test_timeout={limits['timeout']}"] if limits["timeout"] else []
            r = in_scratch("test", "--config=tsan", *bound, target, log=log)
            # QUIET filters the test's output from Bazel's: its log says which stub it reached.
            out = test_log(work, target) if r.returncode != 0 else ""
            if r.returncode != 0 and "-- Test timed out at" in out:   # Bazel's line in the test's log
                after = (f"timed out after {limits['timeout']} s (the reference takes "
                         f"{seconds_text(limits['reference_seconds'])} s without ThreadSanitizer)" if limits["timeout"]
                         else "timed out at Bazel's limit for its size")
                case = stuck_case(out)   # Bazel's SIGTERM let doctest report its case into the log
                detail = after + " and killed" + (f" in test case {case}" if case else "") + ": a loop that never ends?"
            elif r.returncode == 1:   # Bazel's code for a build that failed: its error lines, as a plain gate's
                detail = "does not build: " + "; ".join(build_errors(r.stderr)[:3])[:300]
            else:
                detail = "" if r.returncode == 0 else failure_summary(out or r.stdout + r.stderr, work)
            return r, out, detail, timing(limits, detail)

        replace_bodies(work, table, given)   # a file left with a stub gets contract/lab.h
        student_found = scan(work, table)[0]
        part_files = sorted({p["file"] for p in parts})

        def for_student(text):   # FILE:LINE as the student's file numbers it, not this tree
            return in_students_lines(text, work, tree, part_files)

        # Gates: the student's parts as they are. Timing the reference built every gate here,
        # so bazel-bin held the reference's binaries: a gate the student's tree did not build ran
        # those and passed (a stage 1 tree whose S1.realloc did not assemble passed all three).
        # Removed first, a gate's binary is there only when this build made it.
        targets = info["gates"] + ["//tools/diff:stagediff"]
        for target in info["gates"]:
            binary(work, target).unlink(missing_ok=True)
        build = in_scratch("build", "--keep_going", *targets, log=log)
        gates, hung = [], []   # hung: the first gate that timed out

        def after_hung(limits):
            # Once a gate has timed out no trace is scored, and a gate's verdict changes no
            # mark: the later gates get the floor rather than their own limits (a stage 1 tree
            # whose S1.find_fit hung took 633 s, 369 s of it stage1_test and the twin test
            # killed after the battery). The parts' tests, which give the marks, keep theirs.
            if hung and limits["timeout"] and limits["timeout"] > LIMIT_FLOOR:
                return dict(limits, timeout=LIMIT_FLOOR), limits["timeout"]
            return limits, None

        def cut_short(detail, full, limits, reference_runs=""):   # the FAIL of a gate killed at after_hung's floor
            if full is None or not detail.startswith("timed out"):
                return detail
            at = KILLED_AT.search(detail)   # the case and part run_test found it in
            return (f"timed out after {limits['timeout']} s and killed{at.group(1) if at else ''}, cut from its "
                    f"limit of {full} s since "
                    f"{hung[0]} timed out first: no trace is scored whatever it does" +
                    (f" (the reference takes {seconds_text(limits['reference_seconds'])} s{reference_runs})"
                     if limits["reference_seconds"] is not None else ""))

        for target in info["gates"]:
            if target in skipped:
                continue   # it reaches a copy that the handout holds back (copy_stub)
            limits, full = after_hung(limited(target))
            if binary(work, target).exists():
                ok, reached, tail = run_test(work, target, **limits)
            else:
                ok, reached, tail = False, set(), "does not build: " + "; ".join(build_errors(build.stderr)[:3])[:300]
            tail = cut_short(for_student(tail), full, limits)
            if tail.startswith("timed out") and not hung:
                hung.append(target)
            gates.append({"gate": target, "passed": ok, "stubs_reached": sorted(reached), "detail": "" if ok else tail,
                          **timing(limits, tail)})
        raced = {}   # part: ThreadSanitizer's reports in its code
        for target in info.get("tsan_gates", []):
            limits, full = after_hung(limited(target, tsan=True))
            r, out, detail, timed = tsan_test(target, limits)
            detail = cut_short(detail, full, limits, " without ThreadSanitizer")
            for name, reports in reports_in_parts(out, student_found).items():
                raced.setdefault(name, []).extend(x for x in map(for_student, reports) if x not in raced[name])
            gates.append({"gate": target + " (ThreadSanitizer)", "passed": r.returncode == 0,
                          "stubs_reached": sorted(set(NOT_IMPLEMENTED.findall(out))), "detail": for_student(detail),
                          **timed})

        # Every tsan gate ran to its end on the student's tree without a report: none of its parts raced.
        tsan_complete = all(g["passed"] for g in gates if g["gate"].endswith(" (ThreadSanitizer)"))
        if info.get("tsan_gates"):
            # The ThreadSanitizer build writes to the same output tree as the default one
            # (Bazel 4 names both k8-fastbuild), so its instrumented libraries replaced some of
            # the default build's: build the default again before running anything else
            # (stage 4's abandon_test crashed on the mixture).
            build = in_scratch("build", "--keep_going", *targets, log=log)

        # Parts: each judged by its tests with every other part as in the reference ([lab]
        # parts are isolated), so one part's marks never depend on another part. A handout
        # grading itself has only stubs to put back: a test that stops at another part's
        # stub leaves the part "not judged" (part_verdict).
        results = []
        for p in parts:
            name = p["name"]
            row = {"part": name, "marks": 0.0, "tests": []}
            if name in verdicts:
                row["verdict"] = verdicts[name]
                results.append(row)
                continue
            # A part whose markers are broken is a stub in the grading tree, with the reference's
            # markers: it is replaced like any other.
            others = {q["name"]: ref_bodies[q["name"]] for q in parts if q["name"] != name
                      and (bodies[q["name"]] is None
                           or normalised_regions(bodies[q["name"]]) != normalised_regions(ref_bodies[q["name"]]))}
            # Built for every part, even one whose others are all the reference's already: the
            # part before may have left bazel-bin holding its own isolation build, in which this
            # part was the reference's (a wrong S1.coalesce beside a find_fit and a realloc equal
            # to the reference's got full marks).
            saved = {rel: (work / rel).read_text() for n in others for rel, _, _ in student_found[n]}
            replace_bodies(work, table, others)
            built = in_scratch("build", "--keep_going", *{t["target"] for t in p["tests"]}, log=log)
            for t in p["tests"]:
                limits = limited(t["target"], t.get("cases"))
                if built.returncode != 0:   # bazel-bin holds an earlier build: not this one
                    ok, reached, tail = False, set(), "not built"
                else:
                    ok, reached, tail = run_test(work, t["target"], t.get("cases"), **limits)
                row["tests"].append({"target": t["target"], "cases": t.get("cases", ""), "passed": ok,
                                     "stubs_reached": sorted(reached), "detail": "" if ok else for_student(tail),
                                     **timing(limits, tail)})
                if ref_is_handout:   # not isolated: another part's wrong answer may fail a shared case
                    row["tests"][-1]["shared_with"] = shared_failures(work, table, name, row["tests"][-1])
            row["verdict"] = for_student(part_verdict(name, row["tests"], built))
            if row["verdict"] == "pass" and name not in raced and not tsan_complete:
                # A tsan gate failed on the student's tree as a whole (another part does not
                # build, stops at a stub or crashes it), so it may never have run this part's
                # code: its race would go unseen and the part keep its marks (a relaxed take in
                # S4.collect_remote beside an S4.reclaim that did not build got 15/15). So the
                # tsan gates run again here, with every other part the reference's.
                here = scan(work, table)[0]   # this part's lines, with the others' bodies replaced
                for target in info["tsan_gates"]:
                    r, out, _, _ = tsan_test(target)
                    for report in map(for_student, reports_in_parts(out, {name: here[name]}).get(name, [])):
                        if report not in raced.setdefault(name, []):
                            raced[name].append(report)
                if not raced.get(name):
                    raced.pop(name, None)
            for rel, text in saved.items():
                (work / rel).write_text(text)
            if row["verdict"] == "pass" and name in raced:
                # Its tests pass without ThreadSanitizer, but a tsan gate reported a race (or
                # another error) in its own lines: stage 4's parts are about memory ordering.
                row["verdict"] = "FAIL: ThreadSanitizer: " + "; ".join(raced[name][:3]) + " (in this part's code)"
            row["marks"] = weights["correctness"] / len(parts) if row["verdict"] == "pass" else 0.0
            results.append(row)

        # Traces: only when every gate passed (correctness is a gate).
        gated = all(g["passed"] for g in gates) and build.returncode == 0
        rows, performance, note = [], 0.0, ""
        if not gated:
            note = "traces not scored: a gate failed (correctness comes first)"
        elif ref_is_handout and not reference_stagediff:
            note = "traces not scored: this tree is a handout; grade with the reference tree (or --reference-stagediff)"
        else:
            if reference_stagediff:
                ref_bin = Path(reference_stagediff)
            else:
                r = bazel(REFERENCE, "build", "//tools/diff:stagediff", log=log)
                if r.returncode != 0:
                    raise LabError(f"the reference tree {REFERENCE} does not build //tools/diff:stagediff")
                ref_bin = binary(REFERENCE, "//tools/diff:stagediff")
            rows = replay_traces(binary(work, "//tools/diff:stagediff"), ref_bin, info["folder"], traces, repetitions,
                                 enough=weights["throughput_full_at"])
            if all(r["valid"] and "utilisation" in r for r in rows):
                full_at = weights["throughput_full_at"]
                util = statistics.mean(min(1.0, r["utilisation"] / r["reference_utilisation"]) for r in rows)
                timed = [r for r in rows if r["operations"] >= weights["throughput_min_operations"]] or rows
                speed = statistics.mean(min(1.0, r["throughput_ratio"] / full_at)
                                        for r in timed)
                performance = weights["utilisation"] * util + weights["throughput"] * speed
            else:
                note = "traces not scored: a replay failed validation"
        correctness = sum(r["marks"] for r in results)
        score = round(correctness + performance, 1)
        report = {"tree": str(tree), "stage": int(stage), "score": score, "weights": weights,
                  "parts_isolated": not ref_is_handout,
                  "parts_not_graded": [p["name"] for p in parts_of(table, stage) if p not in parts],
                  "correctness": round(correctness, 1), "performance": round(performance, 1),
                  "parts": results, "gates": gates, "skipped_gates": skipped, "traces": rows, "note": note,
                  # a handout grading itself has no reference to replay against: the traces'
                  # marks are out of reach there, not lost (the score line says so)
                  "performance_out_of_reach": bool(gated and ref_is_handout and not reference_stagediff),
                  "seconds": round(time.time() - started, 1),
                  "outside_changes": outside_changes(tree, table)}   # the handout's own record
        return report, log
    finally:
        in_scratch("shutdown")
        if keep:
            print(f"lab: scratch tree kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)




def incomplete_note(tree):
    """What a handout's INCOMPLETE_FILE says (`tools/lab handout` was stopped while writing it),
    one line; "" when there is none."""
    try:
        return " ".join((Path(tree) / INCOMPLETE_FILE).read_text().split()) or f"{INCOMPLETE_FILE} is here"
    except OSError:
        return ""


def test_parts(table, tree, names, stage=None, out=sys.stdout, output_base=None):
    """`tools/lab test`: builds the tests that judge the named parts in this tree, in place
    (the tree's own Bazel server), and runs each part's tests with its doctest filters, as
    grading does; one verdict per part (part_verdict). No names: the handout's parts, else
    those of `stage`. Returns the number of parts that did not pass."""
    listed = {p["name"]: p for p in table["parts"]}
    if not names:
        if stage is None and (Path(tree) / HANDOUT_FILE).exists():
            names = json.loads((Path(tree) / HANDOUT_FILE).read_text())["parts"]
        else:
            names = [p["name"] for s in stages_arg(table, stage or "all") for p in parts_of(table, s)]
    unknown = [n for n in names if n not in listed]
    if unknown:
        raise LabError(f"no such part: {', '.join(unknown)} (tools/lab list names them)")
    parts = [listed[n] for n in names]
    targets = sorted({t["target"] for p in parts for t in p["tests"]})
    incomplete = incomplete_note(tree)
    if incomplete:
        print(f"lab: INCOMPLETE HANDOUT: {incomplete}", file=out, flush=True)
    print(f"lab: building {', '.join(targets)}", file=out, flush=True)
    built = bazel(tree, "build", "--keep_going", *targets, output_base=output_base)
    if built.returncode != 0:
        # bazel-bin still holds the last good binaries: running them would judge old code.
        print("does not build (no test run):", file=out)
        for line in build_errors(built.stderr)[:12]:
            print("    " + line, file=out)
        return len(parts)
    failed = 0
    found, problems = scan(tree, table)
    for change in outside_changes(tree, table):
        print(f"lab: {change}", file=out)
    shipped = shipped_times(tree)   # each run's limit: the reference's time on the teacher's machine
    for p in parts:
        records = []
        for test in p["tests"]:
            limit, seconds = time_limit(shipped.get(run_key(test["target"], test.get("cases"))))
            ok, reached, tail = run_test(tree, test["target"], test.get("cases"), timeout=limit,
                                         reference_seconds=seconds, where=" on the teacher's machine")
            records.append({"target": test["target"], "cases": test.get("cases", ""), "passed": ok,
                            "stubs_reached": sorted(reached), "detail": tail})
        verdict = part_verdict(p["name"], records, built)
        failed += verdict != "pass"
        if verdict.startswith("not judged"):
            waiting = sorted({s for r in records for s in r["stubs_reached"]} - {p["name"]})
            passed = sum(r["passed"] for r in records)
            verdict = (f"waiting for {', '.join(waiting)}: {passed} of its {len(records)} tests pass, "
                       f"{len(records) - passed} stop at {'its stub' if len(waiting) == 1 else 'their stubs'}")
        print(f"{p['name']:<18} {verdict}", file=out)
        for r in records:
            state = "pass" if r["passed"] else ("stub " + ", ".join(r["stubs_reached"]) if r["stubs_reached"] else "FAIL")
            print(f"    {state:<24} {test_command(r if r['cases'] else {'target': r['target']})}", file=out)
            if state == "FAIL":
                print(f"        {shorten(r['detail'])}", file=out)
                if shared_failures(tree, table, p["name"], r):
                    print(f"        shared: {shared_failures(tree, table, p['name'], r)}", file=out)
        trouble = marker_trouble(p, found, problems, max(1, len(found.get(p["name"], []))))
        if trouble:   # the tests ran the code as it is; grading takes it only from between the markers
            failed += verdict == "pass"
            print(f"    markers broken: {trouble}: grading would judge {p['name']} as its stub", file=out)
    return failed


def build_errors(stderr):
    """The compiler's and assembler's error lines of a failed Bazel build (FILE:LINE: error),
    each once, without Bazel's command lines; else Bazel's own ERROR lines."""
    lines = stderr.split("\n")
    errors = list(dict.fromkeys(l.strip() for l in lines if re.search(r":\d+(:\d+)?: (fatal )?error", l)))
    return errors or [l.strip()[:200] for l in lines if l.startswith("ERROR:")] or lines[-5:]


def part_verdict(name, tests, built):
    """A part's verdict from its test records (target, cases, passed, stubs_reached) and the
    build that made them. A test that stopped at another part's stub says nothing about this
    part: that happens only in a handout, which holds no reference to put in the other's place."""
    if all(t["passed"] for t in tests):
        return "pass"
    if any(name in t["stubs_reached"] for t in tests):
        return "not implemented: its tests reached its stub"
    waiting = sorted({s for t in tests if not t["passed"] for s in t["stubs_reached"]} - {name})
    if waiting:
        return (f"not judged: its tests stop at the stub of {', '.join(waiting)}, which only the "
                f"reference could stand in for; write {'that part' if len(waiting) == 1 else 'those parts'} "
                "too, or have this tree graded from the reference tree")
    if built.returncode != 0:
        return "does not build: " + "; ".join(build_errors(built.stderr)[:3])[:300]
    return "FAIL: " + "; ".join(f"{t['target']} {t['cases']}".strip() + (" (timed out)" if t.get("timed_out") else "")
                                for t in tests if not t["passed"])


def shared_failures(root, table, name, record):
    """Where parts are not isolated (a handout: `tools/lab test`, a grade of itself), the other
    parts whose filters select a failed case of part `name`'s test `record` too (its stage's
    "shared" lists such cases): a wrong answer in one of them fails the case as well, so the
    student reads which other parts to look at. The failed cases are those failure_summary
    names in the record's detail (FILE:LINE: CASE: what; at most three). "" when none."""
    if record.get("passed") or not record.get("detail"):
        return ""
    stage = next(str(p["stage"]) for p in table["parts"] if p["name"] == name)
    failed = [c for c in dict.fromkeys(test_case_names(root, record["target"])[0]) if f": {c}: " in record["detail"]]
    judges = {c: [q["name"] for q in parts_of(table, stage) if q["name"] != name and any(
        t["target"] == record["target"] and selected([c], t.get("cases", "")) for t in q["tests"])] for c in failed}
    shared = [c for c in failed if judges[c]]
    if not shared:
        return ""
    others = list(dict.fromkeys(o for c in shared for o in judges[c]))
    which = "the failed case above" if len(failed) == 1 else f"{len(shared)} of the {len(failed)} failed cases above"
    return (f"{which} also {'judges' if len(shared) == 1 else 'judge'} {', '.join(others)} (stage {stage}'s \"shared\" "
            f"in {TABLE}): a wrong answer there fails {'it' if len(shared) == 1 else 'them'} too")


def shorten(detail, width=400):
    return detail if len(detail) <= width else detail[:width - 3] + "..."


def print_report(report, out=sys.stdout):
    w = report["weights"]
    print(f"edu-alloc lab grade: stage {report['stage']}, tree {report['tree']}", file=out)
    print("\ngates (every one must pass before the traces count):", file=out)
    for g in report["gates"]:
        extra = f"  stub reached: {', '.join(g['stubs_reached'])}" if g["stubs_reached"] else ""
        print(f"  {'pass' if g['passed'] else 'FAIL'}  {g['gate']}{extra}", file=out)
        if not g["passed"] and not g["stubs_reached"] and g.get("detail"):
            print(f"        {shorten(g['detail'])}", file=out)
    for target in report.get("skipped_gates", []):
        print(f"  skip  {target}  (it reaches copies of the answers that a handout holds back; "
              "your teacher's grading runs it)", file=out)
    each = w["correctness"] / max(1, len(report["parts"]))
    judged = ("each judged with every other part as in the reference" if report.get("parts_isolated", True) else
              "each judged with the other parts as this tree has them: a handout holds no reference")
    print(f"\nparts ({w['correctness']} marks, {each:g} each; {judged}):", file=out)
    if report.get("parts_not_graded"):
        print(f"  (not in this lab, the reference's code: {', '.join(report['parts_not_graded'])})", file=out)
    for p in report["parts"]:
        print(f"  {p['part']:<20} {p['marks']:5.1f}/{each:g}  {p['verdict']}", file=out)
        for t in p.get("tests", []):   # what failed: FILE:LINE and the test case (failure_summary)
            if not t["passed"] and not t["stubs_reached"] and t.get("detail") not in (None, "", "not built"):
                print(f"        {t['target']}: {shorten(t['detail'])}", file=out)
                if t.get("shared_with"):
                    print(f"        shared: {t['shared_with']}", file=out)
    if report.get("outside_changes"):   # why a part's helper may be missing from the grading build
        print("", file=out)
        for change in report["outside_changes"]:
            print(f"not graded: {change}", file=out)
    if report["traces"]:
        print("\ntraces (fresh process per replay; Kops/s: fastest pass; ratio: median of paired runs' ratios):", file=out)
        print(f"  {'trace':<24} {'valid':<5} {'util':>6} {'ref':>6} {'Kops/s':>9} {'ref':>9} {'ratio':>6}", file=out)
        for r in report["traces"]:
            if "utilisation" in r:
                ratio = r["throughput_ratio"]
                print(f"  {r['trace']:<24} {'yes':<5} {r['utilisation']:6.1%} {r['reference_utilisation']:6.1%} "
                      f"{r['ops_per_second'] / 1e3:9.0f} {r['reference_ops_per_second'] / 1e3:9.0f} {ratio:6.2f}", file=out)
            else:
                print(f"  {r['trace']:<24} {'NO':<5} {r['failure']}", file=out)
    if report["note"]:
        print(f"\n{report['note']}", file=out)
    print(f"\nweights: correctness {w['correctness']} (parts), then utilisation {w['utilisation']} "
          f"(min(1, yours / reference)), throughput {w['throughput']} (min(1, yours / reference / "
          f"{w['throughput_full_at']}), traces of at least {w['throughput_min_operations']} operations), averaged over the traces", file=out)
    if report.get("performance_out_of_reach"):
        traces = w["utilisation"] + w["throughput"]
        print(f"score: {report['score']:g}/100 here: correctness {report['correctness']:g} of {w['correctness']}; "
              f"the traces' {traces} marks are not scored in a handout (your teacher's grade with the reference "
              f"tree adds them; graded in {report['seconds']:g} s)", file=out)
        return
    print(f"score: {report['score']:g}/100 (correctness {report['correctness']:g}, performance "
          f"{report['performance']:g}; graded in {report['seconds']:g} s)", file=out)


# ---- Command line -------------------------------------------------------------------------

def names_arg(option, text):
    """A comma-separated option's names (--parts, --traces), or None when it was not given; an
    empty list or an empty name is refused rather than read as "every one"."""
    if text is None:
        return None
    names = text.split(",")
    if names == [""]:
        raise LabError(f"{option}: no {option[2:-1]} named in '{text}'")
    if "" in names:
        raise LabError(f"{option}: an empty name in '{text}'")
    return names


def user_path(path):
    base = os.environ.get("BUILD_WORKING_DIRECTORY") or os.getcwd()
    return Path(base, path).resolve()


def edu_tree(path):
    """`path` resolved, if it is an edu-alloc tree (a WORKSPACE at its top); else a LabError."""
    tree = Path(path).resolve()
    if not (tree / "WORKSPACE").is_file():
        raise LabError(f"{tree}: not an edu-alloc tree (no WORKSPACE)")
    return tree


def stopped(signum, frame):
    """SIGTERM's handler: unwinds once, as Ctrl-C does, and ignores the signal from then on."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def arguments():
    """The command line's parser; the module's docstring is its summary, one line or more per command."""
    parser = argparse.ArgumentParser(prog="tools/lab", description=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="stages, parts and the tests that judge each part")
    c = sub.add_parser("check", help="lab markers are well formed, listed and cited")
    c.add_argument("root", nargs="?", default=str(REFERENCE), help="the tree to check (default: this one)")
    h = sub.add_parser("handout", help="write a student tree")
    h.add_argument("stage", help="1-4, or 'all' (every part of every stage blanked)")
    h.add_argument("dir", help="the folder to write: new or empty, outside this tree")
    h.add_argument("--parts", help="comma-separated part names (default: every part of the stage)")
    h.add_argument("--hide-later", action="store_true",
                   help="stub every part of the later stages too (their labs' answers) and leave their tests out")
    h.add_argument("--no-times", action="store_true",
                   help=f"ship no reference times (no Bazel run): `tools/lab test` there gives each test {PART_TEST_SECONDS} s")
    tp = sub.add_parser("test", help="run the tests of each part in this tree: pass, or the stub each stops at")
    tp.add_argument("parts", nargs="*", help="part names (default: the handout's parts, in the order to write them)")
    tp.add_argument("--stage", help="without part names outside a handout: this stage's parts")
    g = sub.add_parser("grade", help="grade a tree")
    g.add_argument("dir", nargs="?", default=str(REFERENCE), help="the tree to grade (default: this one)")
    g.add_argument("--stage", help="stage to grade (default: the handout's, else 1)")
    g.add_argument("--parts", help="comma-separated parts the lab asked for (default: the handout's "
                   "--parts, else every part of the stage); the others are the reference's and earn no marks")
    g.add_argument("--json", help="also write the report as JSON to this file")
    g.add_argument("--traces", help="comma-separated trace names (default: every traces/*.rep)")
    g.add_argument("--repetitions", type=int, default=PAIRS, help=f"stagediff runs per trace and tree, in pairs (default {PAIRS}; each times {TIMED_PASSES} passes; "
                   "twice as many more where the median falls short of full marks)")
    g.add_argument("--reference-stagediff", help="a built reference stagediff instead of building one")
    g.add_argument("--keep", action="store_true", help="keep the scratch tree (for debugging)")
    g.add_argument("--log", help="write every Bazel command and its output tail to this file")
    return parser


def main(argv):
    args = arguments().parse_args(argv)
    # Stopped from outside (`timeout`, a job runner's SIGTERM), a command unwinds as on Ctrl-C:
    # the Bazel command or test running is killed, and the `finally` of grade() or of a handout
    # timing the reference (ship_times) shuts its scratch server down and removes its scratch
    # tree. Killed outright, both stayed (a server idles for hours, a scratch tree is hundreds of
    # MiB). Only the first SIGTERM unwinds: `timeout` sends its signal to this process and then
    # to its process group, this process again, and a second SystemExit raised while a `finally`
    # was shutting the server down cut the clean-up short, leaving both as before.
    signal.signal(signal.SIGTERM, stopped)
    try:
        table = load_table(REFERENCE)
        if args.command == "list":
            for number, stage in table["stages"].items():
                print(f"stage {number}: {stage['folder']} ({stage['chapter']})")
                print(f"  gates: {', '.join(stage['gates'])}" +
                      (f"; ThreadSanitizer: {', '.join(stage['tsan_gates'])}" if stage.get("tsan_gates") else ""))
                if stage.get("start"):
                    print("\n".join(wrap("start: " + stage["start"], 100, "  ")))
                for p in parts_of(table, number):
                    print(f"  {p['name']:<18} {p['file']} ({p['procedure']})")
                    for line in wrap(p["statement"], 100, "      "):
                        print(line)
                    for t in p["tests"]:
                        print(f"      judged by {t['target']}" + (f" --test-case='{t['cases']}'" if "cases" in t else ""))
            print(f"traces (every stage): {', '.join(t.stem for t in trace_list(REFERENCE, None))}")
            print("check one part in a handout: tools/lab test NAME (its tests, and the stub each stops at)")
            return 0
        if args.command == "test":
            return 1 if test_parts(table, REFERENCE, args.parts, args.stage) else 0
        if args.command == "check":
            problems = check(edu_tree(user_path(args.root)), table)
            for p in problems:
                print(p)
            print(f"lab parts: {'ok' if not problems else 'FAILED'}: {len(table['parts'])} parts in {len(table['stages'])} stages")
            return 1 if problems else 0
        if args.command == "handout":
            dest = user_path(args.dir)
            chosen = handout(table, args.stage, dest, names_arg("--parts", args.parts), args.hide_later,
                             times=not args.no_times)
            print(f"lab: wrote {dest}: stage {args.stage}, stubs for {', '.join(p['name'] for p in chosen)}")
            left_out = sorted(set(tree_files(REFERENCE)) - set(tree_files(REFERENCE, untracked=False)))
            if left_out:
                print(f"lab: left out {len(left_out)} file{'s' * (len(left_out) != 1)} Git does not track "
                      f"({', '.join(left_out[:3])}{', ...' if len(left_out) > 3 else ''}): `git add` what students should get")
            print(f"lab: its LAB.md says where to start (write {chosen[0]['name']} first); in it, `tools/lab test` "
                  "runs each part's tests and names the stub each stops at")
            return 0
        for option, path in (("--json", args.json), ("--log", args.log)):   # written after grading: check now
            if path and not user_path(path).parent.is_dir():
                raise LabError(f"{option}: cannot write into {user_path(path).parent}: no such folder")
        if args.reference_stagediff:   # run only once the gates pass: check it before them
            args.reference_stagediff = str(user_path(args.reference_stagediff))
            if not (os.path.isfile(args.reference_stagediff) and os.access(args.reference_stagediff, os.X_OK)):
                raise LabError(f"--reference-stagediff: {args.reference_stagediff}: not an executable file")
        only = names_arg("--parts", args.parts)
        names_arg("--traces", args.traces)   # trace_list takes them as given
        if args.repetitions < 1:
            raise LabError(f"--repetitions: {args.repetitions}: at least 1 run per trace and tree")
        tree = user_path(args.dir)
        stage = args.stage
        if stage is None and (tree / HANDOUT_FILE).exists():
            stage = str(json.loads((tree / HANDOUT_FILE).read_text())["stage"])
        stage = stage or "1"
        if stage == "all":   # a handout of every stage is graded one stage at a time
            raise LabError(f"{tree} is a handout of every stage: grade one at a time, "
                           f"--stage={' or --stage='.join(table['stages'])}")
        if stage not in table["stages"]:
            raise LabError(f"no stage {stage} to grade")
        report, log = grade(table, tree, stage, args.traces, args.reference_stagediff, args.repetitions, args.keep, only)
        if args.log:
            user_path(args.log).write_text("\n".join(log))
        print_report(report)
        if args.json:
            user_path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        return 0
    except LabError as e:
        print(f"tools/lab: {e}", file=sys.stderr)
        return 2
    except OSError as e:   # a folder that cannot be made or written: FILE: why, not a traceback
        print(f"tools/lab: {e.filename}: {e.strerror}" if e.filename else f"tools/lab: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
