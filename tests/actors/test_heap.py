"""A member gives freed heap back (actors/heap.py): what it frees between live chunks leaves its
resident size, so a soak's memory watch sees live memory and not glibc's hoard."""
import subprocess
import sys

from mixserve.actors import heap

SCRIPT = """
import psutil
from mixserve.actors import heap
rss = lambda: psutil.Process().memory_info().rss
blocks = [bytearray(b"x" * 4000) for _ in range(50_000)]  # 200 MB through malloc, not Python's arenas
kept = blocks[::64]  # a live chunk every 256 KB: nothing at the heap's top to shrink it by
del blocks
before = rss()
assert heap.trim()
print(before - rss())
"""


def test_trimming_hands_back_what_was_freed_between_live_chunks():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    assert int(out.stdout) > 150e6  # of the 197 MB freed


def test_the_trimming_thread_runs_beside_the_process():
    thread = heap.start_trimming(every_s=3600)
    assert thread is not None and thread.daemon and thread.is_alive()
