#!/usr/bin/env python3
"""bench/stage1_flush.py: VmRSS at the peak and after every key of a dict is deleted (a cache flush).

  PYTHONMALLOC=malloc LD_PRELOAD=bazel-bin/stage1_brk/libedu_stage1.so python3 bench/stage1_flush.py
"""
import re
def rss():
    return int(re.search(r"VmRSS:\s+(\d+)", open("/proc/self/status").read()).group(1)) // 1024
keys = {}
for i in range(400000):
    keys["key:%d" % i] = "value-%d" % i * 4
keep = [str(i) * 10 for i in range(100)]   # a few survivors allocated last, at the top
peak = rss()
keys.clear()
print("peak %d MiB, after flushing every key %d MiB" % (peak, rss()))
