#!/usr/bin/env python3
"""traces/generate.py: writes the course's synthetic malloc-lab traces (traces/README.md).
Deterministic: each trace has its own seeded random.Random, so `traces/generate.py` rewrites
every file byte for byte; `--check` compares instead of writing (exit 1 on a difference).
The ltrace-*.rep traces are recorded from real programs, not generated (see the README)."""

import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Trace:
    """Builds a trace: ids are handed out fresh and reused once freed, as mdriver's are."""

    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.ops = []
        self.free_ids = []
        self.next_id = 0
        self.live = {}            # id -> size

    def alloc(self, size):
        i = self.free_ids.pop() if self.free_ids else self._fresh()
        self.ops.append(f"a {i} {size}")
        self.live[i] = size
        return i

    def _fresh(self):
        self.next_id += 1
        return self.next_id - 1

    def free(self, i):
        self.ops.append(f"f {i}")
        del self.live[i]
        self.free_ids.append(i)

    def realloc(self, i, size):
        self.ops.append(f"r {i} {size}")
        self.live[i] = size

    def free_all(self):
        for i in sorted(self.live):
            self.free(i)

    def text(self, comment):
        header = [f"# {line}" for line in comment.split("\n")]
        return "\n".join(header + ["20000", str(self.next_id), str(len(self.ops)), "1"] + self.ops) + "\n"


def binary(seed, small, big, n=2000):
    """CS:APP's binary-bal pattern: small/big pairs, every small block freed, then blocks a
    little larger than the small ones, which fit none of the holes: fragmentation."""
    t = Trace(seed)
    smalls = []
    for _ in range(n):
        smalls.append(t.alloc(small))
        t.alloc(big)
    for i in smalls:
        t.free(i)
    for _ in range(n // 2):
        t.alloc(small + big // 2)
    t.free_all()
    return t


def coalescing(seed, n=3000):
    """Runs of neighbours freed in every order, then requests that fit only a merged run."""
    t = Trace(seed)
    for _ in range(n // 3):
        run = [t.alloc(t.rng.choice((32, 48, 64, 96))) for _ in range(3)]
        order = run[:]
        t.rng.shuffle(order)
        for i in order:
            t.free(i)
        t.alloc(160)
    t.free_all()
    return t


def realloc_growth(seed, vectors=24, steps=40):
    """Vectors that grow by half each step, interleaved with small allocations that sit
    behind them (so some grow in place and some must move)."""
    t = Trace(seed)
    vs = {t.alloc(16): 16 for _ in range(vectors)}
    for _ in range(steps):
        for v in list(vs):
            if t.rng.random() < 0.6:
                vs[v] = min(1 << 17, vs[v] + vs[v] // 2 + 8)
                t.realloc(v, vs[v])
            if t.rng.random() < 0.2:
                t.alloc(t.rng.randint(8, 64))
    t.free_all()
    return t


def realloc_mixed(seed, n=6000):
    """Random reallocs up and down over a live set, as string buffers do."""
    t = Trace(seed)
    for _ in range(n):
        r = t.rng.random()
        if r < 0.35 or not t.live:
            t.alloc(t.rng.randint(1, 2048))
        elif r < 0.7:
            t.realloc(t.rng.choice(sorted(t.live)), t.rng.randint(1, 4096))
        else:
            t.free(t.rng.choice(sorted(t.live)))
    t.free_all()
    return t


def random_sizes(seed, n, sizes, live_target):
    """Random mallocs and frees around a target live set; sizes drawn by `sizes(rng)`."""
    t = Trace(seed)
    for _ in range(n):
        if t.live and (len(t.live) >= live_target or t.rng.random() < 0.45):
            t.free(t.rng.choice(sorted(t.live)))
        else:
            t.alloc(sizes(t.rng))
    t.free_all()
    return t


def phases(seed, count=12, per_phase=1500):
    """Compiler-like: each phase allocates many small nodes (a parse tree, a symbol table),
    keeps a few results for later phases and frees the rest at once at the phase's end."""
    t = Trace(seed)
    kept = []
    for _ in range(count):
        nodes = [t.alloc(t.rng.choice((16, 24, 32, 40, 48, 64, 96, 128, 200))) for _ in range(per_phase)]
        for i in nodes:
            if t.rng.random() < 0.05:
                kept.append(i)
            else:
                t.free(i)
        kept.append(t.alloc(t.rng.randint(1024, 16384)))   # the phase's output table
        while len(kept) > 400:
            t.free(kept.pop(t.rng.randrange(len(kept))))
    t.free_all()
    return t


def fifo(seed, n=12000, window=500):
    """A queue: blocks freed in the order they were allocated (message buffers)."""
    t = Trace(seed)
    queue = []
    for _ in range(n):
        queue.append(t.alloc(t.rng.choice((64, 128, 256, 512, 1000))))
        if len(queue) > window:
            t.free(queue.pop(0))
    t.free_all()
    return t


def lifo(seed, n=12000):
    """A stack: the block allocated last is freed first (nested scopes)."""
    t = Trace(seed)
    stack = []
    for _ in range(n):
        if stack and t.rng.random() < 0.48:
            t.free(stack.pop())
        else:
            stack.append(t.alloc(t.rng.randint(8, 512)))
    t.free_all()
    return t


def large(seed, n=200):
    """Big blocks, 64 KiB to 1 MiB: the break, mmap and giving memory back."""
    return random_sizes(seed, n, lambda rng: rng.randint(1 << 16, 1 << 20), live_target=12)


HAND = {
    "short1-basic.rep": ("Day one: three blocks, freed in the order they were made.",
                         ["a 0 8", "a 1 100", "a 2 2000", "f 0", "f 1", "f 2"]),
    "short2-coalesce.rep": ("Day two: free the middle block, then both neighbours; the last\n"
                            "request fits only if all three merged.",
                            ["a 0 48", "a 1 48", "a 2 48", "a 3 16", "f 1", "f 0", "f 2", "a 4 150", "f 4", "f 3"]),
    "short3-realloc.rep": ("Day three: a block that grows in place (its neighbour is free),\n"
                           "then one that must move (its neighbour is used), then shrinks.",
                           ["a 0 64", "a 1 64", "a 2 64", "f 1", "r 0 120", "r 2 4000", "r 2 10", "f 0", "f 2"]),
    "short4-worked.rep": ("The worked example of docs/stage1_brk.md: malloc(100), malloc(200), free the\n"
                          "first, free the second (the last free merges all three blocks).",
                          ["a 0 100", "a 1 200", "f 0", "f 1"]),
    "remote-free.rep": ("Stage 4's remote free (docs/stage4_threads.md): thread 1 takes four 1000-byte blocks\n"
                        "(the four its page carved); thread 2 ('@2') frees two of them, which wait on the\n"
                        "page's xthread_free; thread 1's next malloc finds its free list empty, collects\n"
                        "them onto it and takes one. Stages 1-3 replay it through their locked entries.",
                        ["a 0 1000", "a 1 1000", "a 2 1000", "a 3 1000", "f 1 @2", "f 2 @2", "a 4 1000",
                         "a 5 1000", "f 0", "f 3", "f 4", "f 5"]),
}

GENERATED = {
    "binary-bal.rep": (lambda: binary(1, 64, 448), "Binary sizes: 64/448 pairs, smalls freed, then 288-byte requests."),
    "binary2-bal.rep": (lambda: binary(2, 16, 112), "Binary sizes: 16/112 pairs, smalls freed, then 72-byte requests."),
    "coalescing.rep": (lambda: coalescing(3), "Runs of three neighbours freed in random order, then 160-byte requests."),
    "realloc-grow.rep": (lambda: realloc_growth(4), "Twenty-four vectors growing by half (up to 128 KiB), small blocks allocated behind them."),
    "realloc-mixed.rep": (lambda: realloc_mixed(5), "Random reallocs up and down (1 B - 4 KiB) over a live set."),
    "random-small.rep": (lambda: random_sizes(6, 20000, lambda rng: rng.randint(1, 256), 2000),
                         "Random mallocs and frees, 1-256 bytes, about 2000 live."),
    "random-wide.rep": (lambda: random_sizes(7, 12000, lambda rng: int(2 ** rng.uniform(0, 16)), 800),
                        "Random mallocs and frees, log-uniform 1 B - 64 KiB, about 800 live."),
    "phases.rep": (lambda: phases(8), "Compiler-like phases: many small nodes freed at each phase's end, a few kept."),
    "fifo.rep": (lambda: fifo(9), "A queue of message buffers (64 B - 1000 B): freed in allocation order."),
    "lifo.rep": (lambda: lifo(10), "A stack: the last block allocated is freed first (8-512 bytes)."),
    "large.rep": (lambda: large(11), "Large blocks, 64 KiB - 1 MiB, about a dozen live."),
}


def all_traces():
    out = {}
    for name, (comment, ops) in HAND.items():
        ids = 1 + max(int(op.split()[1]) for op in ops)
        header = [f"# {line}" for line in (comment + "\nHand-written (traces/generate.py).").split("\n")]
        out[name] = "\n".join(header + ["20000", str(ids), str(len(ops)), "1"] + ops) + "\n"
    for name, (make, comment) in GENERATED.items():
        out[name] = make().text(comment + "\nGenerated by traces/generate.py; do not edit.")
    return out


def main(argv):
    check = "--check" in argv
    different = []
    for name, text in all_traces().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                different.append(name)
        else:
            path.write_text(text)
    if check:
        for name in different:
            print(f"traces/{name}: differs from what traces/generate.py makes")
        print(f"traces: {len(all_traces()) - len(different)} of {len(all_traces())} regenerate byte for byte")
        return 1 if different else 0
    print(f"traces: wrote {len(all_traces())} traces to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
