"""tools/diff/pictures_test.py: the chapters' pictures (docs/pictures) show what tools/pictures
draws from this tree. Records the three step-through pages as tools/pictures does (the demo's, a
small `fragment`, traces/remote-free.rep), with address-space layout randomisation off as
tools/pictures records them, so a stage 2 arena's address in a label does not move, photographs
them with pictures.py and compares its record of what each picture shows (docs/pictures/shown.txt:
the step, the view, the change in words, a digest of the blocks) with the kept one. The pixels
are not compared: another Chromium's fonts and antialiasing draw the same heap in other bytes,
and a CI machine may install a newer one. A difference means the stages or the page changed
what a chapter shows: look at both, and run tools/pictures. Run by html_test.sh (Debian's
python3 with python3-selenium, chromium, chromium-driver).
"""
import os
import sys
import tempfile
import unittest

STAGEDIFF = sys.argv.pop(1)
DEMO = sys.argv.pop(1)
REMOTE_FREE = os.path.abspath(sys.argv.pop(1))     # traces/remote-free.rep
KEPT = os.path.dirname(os.path.abspath(sys.argv.pop(1)))  # docs/pictures/shown.txt: its folder
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pictures  # noqa: E402
from fixed_layout import fixed_layout  # noqa: E402


def record(out):
    import subprocess
    pages = [os.path.join(out, n) for n in ("demo.html", "fragment.html", "remote-free.html")]
    for argv in ([DEMO, "--html=" + pages[0]],
                 [STAGEDIFF, "--workload=fragment", "--scale=0.04", "--seed=3", "--html=" + pages[1]],
                 [STAGEDIFF, "--trace=" + REMOTE_FREE, "--html=" + pages[2]]):
        subprocess.run(argv, check=True, capture_output=True, preexec_fn=fixed_layout)
    return pages


class Pictures(unittest.TestCase):
    def test_every_picture_shows_what_tools_pictures_draws_today(self):
        names = [p[0] for p in pictures.PICTURES]
        self.assertEqual(sorted(names + [pictures.RECORD]), sorted(os.listdir(KEPT)))
        work = tempfile.mkdtemp()
        pages = record(work)
        made = os.path.join(work, "made")
        os.mkdir(made)
        pictures.main(*pages, made)
        self.assertEqual(sorted(names + [pictures.RECORD]), sorted(os.listdir(made)))
        with open(os.path.join(KEPT, pictures.RECORD)) as f:
            kept = f.read()
        with open(os.path.join(made, pictures.RECORD)) as f:
            now = f.read()
        self.maxDiff = None
        self.assertEqual(now, kept, "docs/pictures/shown.txt differs from what tools/pictures records now "
                                    f"(pictures written to {made}); look at both, then run tools/pictures")


if __name__ == "__main__":
    unittest.main(verbosity=2)
