#!/usr/bin/env python3
"""bench/stage1_traces_test.py: the loss table of `stage1_traces --losses` accounts for every
byte. Each row's parts (payload, headers, alignment, free blocks by size, the growth margin,
the regions) add up to its peak footprint; its oracle, recomputed here from the trace file
alone (the same requests packed with no gap, in this block format), matches the benchmark's
and is never below the utilisation an allocator of this format reached.
   bazel test //bench:stage1_traces_test"""

import re
import subprocess
import sys
import unittest
from pathlib import Path

BINARY, TRACES = sys.argv[1], sorted(Path(p) for p in sys.argv[2:] if p.endswith(".rep"))
COLUMNS = 8  # payload .. regions


def block(request):
    """A request's block: an 8-byte header, the 16-byte step, the 32-byte minimum ([S1.1])."""
    return max(32, (request + 8 + 15) // 16 * 16)


def oracle(path):
    """Peak live payload over the highest sum of live blocks, plus a region's 16 bytes."""
    live, sizes, packed, packed_peak, peak = 0, {}, 0, 0, 0
    for line in path.read_text().splitlines():
        word = line.split()
        if not word or word[0] not in ("a", "f", "r"):
            continue
        ident = int(word[1])
        if word[0] == "f":
            if ident in sizes:
                size = sizes.pop(ident)
                live, packed = live - size, packed - block(size)
            continue
        size = int(word[2])
        old = sizes.get(ident)
        live += size - (old or 0)
        packed += block(size) - (block(old) if old is not None else 0)
        sizes[ident] = size
        peak, packed_peak = max(peak, live), max(packed_peak, packed)
    return 100.0 * peak / (packed_peak + 16)


class LossTable(unittest.TestCase):
    def test_every_byte_is_accounted_for(self):
        out = subprocess.run([BINARY, "--fits=first,seg", "--losses"] + [str(t) for t in TRACES],
                             check=True, capture_output=True, text=True).stdout
        rows = [line for line in out.splitlines() if line.startswith("| ") and ".rep |" in line]
        self.assertEqual(len(rows), 2 * len(TRACES))
        by_name = {t.name: t for t in TRACES}
        for row in rows:
            cells = [c.strip() for c in row.strip("|").split("|")]
            name, util, best = cells[0], float(cells[2].rstrip("%")), float(cells[3].rstrip("%"))
            parts = [float(c) for c in cells[5:5 + COLUMNS]]
            with self.subTest(row=row):
                self.assertEqual(len(cells), 5 + COLUMNS)
                self.assertAlmostEqual(sum(parts), 100.0, delta=0.05 * COLUMNS)
                self.assertGreaterEqual(best, util)
                self.assertAlmostEqual(best, oracle(by_name[name]), delta=0.05)
        # The hand-written day-two trace fills its heap with no gap (docs/stage1_brk.md).
        self.assertTrue(any(re.match(r"\| short2-coalesce\.rep \| seg \| 69\.2% \| 69\.2% \| 240 \|", r) for r in rows))


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1])
