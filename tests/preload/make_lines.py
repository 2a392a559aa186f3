# tests/preload/make_lines.py: writes N deterministic lines "word number word" for sort_test.sh.
# Words of 1-40 letters in mixed case, numbers with repeats, so every sort key has ties.
import random
import sys

count = int(sys.argv[1])
rng = random.Random(42)
letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
out = []
for _ in range(count):
    first = "".join(rng.choice(letters) for _ in range(rng.randrange(1, 41)))
    second = "".join(rng.choice(letters) for _ in range(rng.randrange(1, 8)))
    out.append(f"{first} {rng.randrange(100000)} {second}\n")
sys.stdout.write("".join(out))
