"""`mixserve serve` as `make run` starts it: prints where it listens, answers, stops cleanly on Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import requests

from tests.conftest import free_port


def test_serve_prints_a_working_curl_line_and_stops_on_ctrl_c(tiny_dir):
    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixserve", "serve", "--config", str(tiny_dir / "ensemble.yaml"),
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    try:
        deadline = time.monotonic() + 180
        lines = []
        while not lines or "Ctrl-C" not in lines[-1]:
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline())
        curl = next(line for line in lines if line.startswith("try: curl"))
        assert f"http://127.0.0.1:{http}/v1/completions" in curl
        reply = requests.post(f"http://127.0.0.1:{http}/v1/completions", timeout=60,
                              json={"model": "mixserve", "prompt": "The ocean is", "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 8
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
