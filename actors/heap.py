"""Freed heap given back to the system, every TRIM_S seconds, in a member's process.

glibc keeps what a process frees inside its heap (holes below live chunks, and each thread's arena)
for its next allocations. A vLLM member on CPU frees and allocates all the time (oneDNN compiles a
matmul for each new batch shape and drops the oldest, per-step buffers come and go): with random
prompt lengths it held 45-180 MB of freed heap after 6,400 requests, a resident size that climbs like
a leak. malloc_trim(0) hands the free pages back (each arena's, holes included); one call every 10 s
takes 1-5 ms. docs/studies/member-memory.md has the measurements and the script.
On a C library without malloc_trim (musl, macOS) this does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time

log = logging.getLogger(__name__)

TRIM_S = 10.0


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def trim() -> bool:
    """Give the free heap back now; False where the C library cannot."""
    call = _malloc_trim()
    if call is None:
        return False
    call(0)
    return True


_thread: threading.Thread | None = None


def start_trimming(every_s: float = TRIM_S) -> threading.Thread | None:
    """A daemon thread that trims every `every_s` seconds for the life of the process; one per
    process, however many members it hosts (actors/group.py)."""
    global _thread
    if _thread is not None:
        return _thread
    call = _malloc_trim()
    if call is None:
        log.info("no malloc_trim in this C library: freed heap stays with the process")
        return None

    def run():
        while True:
            time.sleep(every_s)
            call(0)

    _thread = threading.Thread(target=run, name="heap-trim", daemon=True)
    _thread.start()
    return _thread
