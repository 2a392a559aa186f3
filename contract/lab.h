// contract/lab.h: the one call a lab handout's stubs make (tools/lab, docs/teaching.md).
// A part of a stage that a student has not written yet calls edu_lab_not_implemented("S1.coalesce"),
// which prints "edu-alloc lab: part S1.coalesce not implemented: write it between its ..."
// (one line that says where the part goes) and aborts. extern "C" so that
// the NASM stubs of stage 1 call it by its plain name.
#pragma once

extern "C" [[noreturn]] void edu_lab_not_implemented(const char* part);
