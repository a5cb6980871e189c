"""`mixserve serve` as `make run` starts it: prints where it listens, answers, stops cleanly and
quietly on Ctrl-C. It runs here with Ray's own token auth on (docs/deploy.md, "What the embedded Ray
exposes"), the one test that does: a peer without the token is refused by Ray, and what the server and
its embedded Ray listen on is loopback but for one port of Serve's, which the token guards."""
import ipaddress
import os
import secrets
import signal
import subprocess
import sys

import grpc
import psutil
import pytest
import requests
from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
from ray.serve.generated import serve_pb2, serve_pb2_grpc

from tests.conftest import free_port
from tests.processes import read_until


def listening(root: psutil.Process) -> list[tuple[str, str, int]]:
    """(process, address, port) of every TCP socket that `root` and its descendants listen on."""
    found = []
    for p in [root, *root.children(recursive=True)]:
        try:
            found += [(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections("tcp")
                      if c.status == psutil.CONN_LISTEN]
        except psutil.NoSuchProcess:
            pass  # a worker that ended meanwhile
    return found


def loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_serve_prints_a_working_curl_line_and_stops_on_ctrl_c(tiny_dir):
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    token = secrets.token_hex(32)
    # Ray's metrics agent on too (the suite turns it off to save CPU): where it listens is checked.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_enable_metrics_collection": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mixserve", "serve", "--config", str(tiny_dir / "ensemble.yaml"),
         "--http-port", str(http), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True)  # its own process group, as in a terminal
    try:
        lines = read_until(proc, "Ctrl-C to stop.", timeout_s=180).splitlines()
        curl = next(line for line in lines if line.startswith("try: curl"))
        assert f"http://127.0.0.1:{http}/v1/completions" in curl
        reply = requests.post(f"http://127.0.0.1:{http}/v1/completions", timeout=60,
                              json={"model": "mixserve", "prompt": "The ocean is", "max_tokens": 8})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 8
        assert "ray_" in requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=30).text

        root = psutil.Process(proc.pid)
        sockets = listening(root)
        assert {port for _, _, port in sockets} >= {http, grpc_port, metrics}
        # Serve binds its replicas' gRPC port for calls between deployments on every interface (hard-coded
        # in Ray Serve): the one port left beyond loopback, and Ray's token auth guards it.
        exposed = [s for s in sockets if not loopback(s[1])]
        assert all(name.startswith("ray::ServeReplica") for name, _, _ in exposed), exposed
        for _, _, port in exposed:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                with pytest.raises(grpc.RpcError) as refused:
                    serve_pb2_grpc.ASGIServiceStub(channel).HandleRequest(serve_pb2.ASGIRequest(), timeout=30)
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        (gcs,) = [port for name, _, port in sockets if name == "gcs_server"]
        with grpc.insecure_channel(f"127.0.0.1:{gcs}") as channel:
            jobs = gcs_service_pb2_grpc.JobInfoGcsServiceStub(channel).GetAllJobInfo
            with pytest.raises(grpc.RpcError) as refused:
                jobs(gcs_service_pb2.GetAllJobInfoRequest(), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert jobs(gcs_service_pb2.GetAllJobInfoRequest(), timeout=30,
                        metadata=[("authorization", f"Bearer {token}")]).job_info_list

        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole group: the driver and Ray's processes
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        alarming = [line for line in rest.splitlines() if any(w in line for w in ("rror", "failed", "Traceback", "(raylet)"))]
        assert alarming == []
        assert "stopped." in rest
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
