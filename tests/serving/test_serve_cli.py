"""`mixserve serve` as `make run` starts it: prints where it listens, answers, stops cleanly and
quietly on Ctrl-C."""
import os
import signal
import subprocess
import sys

import requests

from tests.conftest import free_port
from tests.processes import read_until


def test_serve_prints_a_working_curl_line_and_stops_on_ctrl_c(tiny_dir):
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixserve", "serve", "--config", str(tiny_dir / "ensemble.yaml"),
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        start_new_session=True)  # its own process group, as in a terminal
    try:
        lines = read_until(proc, "Ctrl-C to stop.", timeout_s=180).splitlines()
        curl = next(line for line in lines if line.startswith("try: curl"))
        assert f"http://127.0.0.1:{http}/v1/completions" in curl
        reply = requests.post(f"http://127.0.0.1:{http}/v1/completions", timeout=60,
                              json={"model": "mixserve", "prompt": "The ocean is", "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 8
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group: the driver and Ray's processes
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        alarming = [line for line in rest.splitlines() if any(w in line for w in ("rror", "failed", "Traceback", "(raylet)"))]
        assert alarming == []
        assert "stopped." in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
