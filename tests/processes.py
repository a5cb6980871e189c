"""Waiting on a subprocess's output with a bound: a blocking readline would hang a test as long as the
process stays up without printing the line."""
from __future__ import annotations

import os
import select
import subprocess
import time


def read_until(proc: subprocess.Popen, marker: str, timeout_s: float) -> str:
    """`proc`'s stdout up to (and with) the chunk holding `marker`, waiting at most timeout_s. Reads
    the pipe's descriptor directly, so what follows is still there for communicate()."""
    fd, out, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout_s
    while marker.encode() not in out:
        left = deadline - time.monotonic()
        assert left > 0 and proc.poll() is None, f"no {marker!r} within {timeout_s} s:\n{out.decode()[-3000:]}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            assert chunk, f"output ended before {marker!r}:\n{out.decode()[-3000:]}"
            out += chunk
    return out.decode()
