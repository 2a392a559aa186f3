# tests/preload/workload.py: an allocation-heavy Python program with a deterministic digest.
# Builds and drops dicts, lists, strings, bytes of many sizes and a few MiB-sized objects,
# makes reference cycles for the garbage collector, and prints one line per phase with a
# SHA-256 of what it computed. Nothing printed depends on addresses or hash randomisation.
import gc
import hashlib
import random
import sys

rng = random.Random(20261121)
digest = hashlib.sha256()


def report(phase, *values):
    text = repr(values).encode()
    digest.update(text)
    print(f"{phase}: {hashlib.sha256(text).hexdigest()[:16]}")


# Dicts that grow and shrink, keyed by strings of many lengths.
def key_of(i):
    return "k" * (i % 37) + str(i)


table = {}
for i in range(60000):
    table[key_of(i)] = [i, str(i) * (i % 11), (i, i * 2)]
    if i % 3 == 0:
        table.pop(key_of(i // 2), None)
report("dicts", len(table), sum(len(v[1]) for v in table.values()), sorted(table)[:5])

# Lists of bytes objects of sizes from 0 to 64 KiB, replaced in random order.
blobs = [b""] * 4096
for step in range(15000):
    slot = rng.randrange(len(blobs))
    size = rng.choice((0, 1, 7, 16, 24, 100, 511, 512, 513, 1000, 4096, 4097, 20000, 65536))
    blobs[slot] = bytes([step & 255]) * size
report("bytes", sum(len(b) for b in blobs), sum(b[0] for b in blobs if b))

# Strings built by joins, slices and formatting.
words = ["".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(1, 30))) for _ in range(20000)]
text = " ".join(words)
pieces = [text[i : i + rng.randrange(1, 200)] for i in range(0, len(text), 97)]
upper = [p.upper() + f"{len(p):05d}" for p in pieces]
report("strings", len(text), len(pieces), hashlib.sha256("".join(upper).encode()).hexdigest())

# A few MiB-sized objects, grown and dropped.
big = []
for mib in (1, 2, 3, 5, 8):
    block = bytearray(mib << 20)
    block[::4096] = bytes([mib]) * len(block[::4096])
    big.append(block)
big[2].extend(bytes(3 << 20))
checks = [sum(b[::4096]) for b in big]
del big[1::2]
report("big", checks, [len(b) for b in big])
big.clear()

# Reference cycles the collector must find, among surviving objects.
class Node:
    def __init__(self, value):
        self.value = value
        self.peer = None
        self.payload = [value] * (value % 50)


survivors = []
for round_ in range(20):
    nodes = [Node(round_ * 1000 + i) for i in range(2000)]
    for a, b in zip(nodes, nodes[1:] + nodes[:1]):
        a.peer = b
    survivors.append(nodes[round_].value)
    del nodes
    collected = gc.collect()
report("gc", survivors, collected > 0)

# Sorting and a set of tuples (sorted before printing: set order is not ours to rely on).
pairs = {(rng.randrange(1000), rng.randrange(1000)) for _ in range(20000)}
ordered = sorted(pairs, key=lambda p: (p[1], p[0]))
report("sets", len(pairs), ordered[:3], ordered[-3:])

print(f"digest: {digest.hexdigest()}")
sys.stdout.flush()
