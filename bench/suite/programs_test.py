"""bench/suite/programs_test.py: programs.py --callgrind's reading of a callgrind.out file.

A made-up file in callgrind's format with name compression: the program (server) calls zmalloc,
which calls malloc, malloc_usable_size and malloc_size (the name callgrind gives mimalloc's
malloc_usable_size) in the allocator's object; the allocator's calloc
calls its own malloc, which is not the program's call; a call to a function of no interest. Each
counted entry gets its calls and the cost lines after its calls= lines; the total is the sum
of the functions' own costs.
"""

import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import programs  # noqa: E402

FILE = """version: 1
creator: made up
events: Ir

ob=(1) /usr/bin/server
fl=(1) server.c
fn=(1) main
1 10
cfn=(2) zmalloc
calls=3 5
2 300
cob=(2) /lib/libedu_stage9.so
cfi=(2) preload.cc
cfn=(3) calloc
calls=1 7
3 500
cfn=(4) helper
calls=2 9
4 40

fn=(2)
5 30
cob=(2)
cfi=(2)
cfn=(5) malloc
calls=3 11
5 150
cob=(2)
cfi=(2)
cfn=(6) malloc_usable_size
calls=3 12
6 120
cob=(2)
cfi=(2)
cfn=(7) malloc_size
calls=2 13
6 50

fn=(4)
9 40

ob=(2)
fl=(2)
fn=(3)
7 20
cfn=(5)
calls=1 11
8 60
fn=(5)
11 210
fn=(6)
12 120
fn=(7)
13 50
"""


class EntryCosts(unittest.TestCase):
    def setUp(self):
        handle, self.path = tempfile.mkstemp()
        with os.fdopen(handle, "w") as f:
            f.write(FILE)

    def tearDown(self):
        os.unlink(self.path)

    def test_entries_and_wrappers(self):
        costs, total = programs.entry_costs(self.path)
        self.assertEqual(dict(costs), {
            ("server", "zmalloc"): [3, 300],
            ("libedu_stage9.so", "malloc"): [3, 150],               # the allocator's own call to it: not counted
            ("libedu_stage9.so", "malloc_usable_size"): [3, 120],
            ("libedu_stage9.so", "calloc"): [1, 500],
            ("libedu_stage9.so", "malloc_size"): [2, 50],          # mimalloc's usable size, as callgrind names it
        })
        self.assertEqual(total, 10 + 30 + 40 + 20 + 210 + 120 + 50)   # own costs only, no call line


if __name__ == "__main__":
    unittest.main()
