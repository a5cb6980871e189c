"""Scale-out under faults (docs/deploy.md, "Scaling out"; issue 29): two router replicas over member pools
that the keeper owns. A router replica killed under load leaves the members' processes as they were
(no model loads again), the other replica's streams finish unharmed, and new requests over HTTP and gRPC
are answered within 2 s of the kill; a member replica killed under load costs no text (its sessions
replay onto the sibling) and Ray brings the pool back to two."""
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests

from mixserve.proto import pb2, pb2_grpc
from tests.conftest import _deploy

ANSWER_S = 2.0  # the bound: new requests answered within this of a router replica's death
LONG = {"prompt": "the sun", "max_tokens": 120, "stream": True}


@pytest.fixture(scope="module")
def app(tiny_dir, serve_instance):
    from ray import serve

    members = [{"name": "p1", "model": "a", "replicas": 2, "resources": {"num_cpus": 0.25}, "batch_invariant": True},
               {"name": "p2", "model": "b", "resources": {"num_cpus": 0.25}, "batch_invariant": True}]
    server = _deploy(tiny_dir, serve_instance, "scaled", "/scaled",
                     {"members": members, "model_name": "scaled", "router": {"replicas": 2}, "member_retry_s": 60})
    yield server, serve.get_deployment_handle("Pools", app_name="scaled")
    serve.delete("scaled")


def stream(app, body: dict, started: threading.Event | None = None, box: dict | None = None) -> dict:
    """A streamed completion: the router replica that served it, its text, and whether it ended well."""
    out = {"router": None, "text": "", "done": False, "error": None}
    if box is not None:
        box.update(out)
        out = box
    try:
        with requests.post(app.http + "/v1/completions", json=body, stream=True, timeout=120) as reply:
            out["router"] = reply.headers.get("x-mixserve-router")
            if started is not None:
                started.set()
            for line in reply.iter_lines():
                if line == b"data: [DONE]":
                    out["done"] = True
                elif line.startswith(b"data: "):
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        out["error"] = chunk["error"]
                    else:
                        out["text"] += "".join(c.get("text", "") for c in chunk.get("choices", []))
    except requests.RequestException as e:
        out["error"] = repr(e)
    return out


def short_http(app) -> int:
    reply = requests.post(app.http + "/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=30)
    return reply.status_code


def short_grpc(channel) -> bool:
    parts = list(pb2_grpc.EnsembleStub(channel).Generate(
        pb2.GenerateRequest(prompt="hi", sampling=pb2.SamplingParams(max_tokens=4)), timeout=30))
    return parts[-1].usage.completion_tokens > 0


def test_a_killed_router_replica_leaves_the_members_and_the_other_replicas_streams(app):
    server, pools = app
    pids = pools.pids.remote().result(timeout_s=60)
    with grpc.insecure_channel(server.grpc) as channel, ThreadPoolExecutor(16) as pool:
        grpc.channel_ready_future(channel).result(timeout=60)
        assert short_grpc(channel)
        # Streams until both replicas hold some (Serve spreads them; bounded in count).
        boxes, futures = [], []
        for i in range(12):
            box, started = {}, threading.Event()
            futures.append(pool.submit(stream, server, {**LONG, "seed": i}, started, box))
            assert started.wait(60), "a stream did not start"
            boxes.append(box)
            if len({b["router"] for b in boxes}) == 2 and i >= 3:
                break
        routers = {b["router"] for b in boxes}
        assert len(routers) == 2, routers
        victim = boxes[0]["router"]
        os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)
        killed = time.monotonic()
        http_ok = short_http(server) == 200
        http_s = time.monotonic() - killed
        grpc_ok = short_grpc(channel)
        grpc_s = time.monotonic() - killed
        results = [f.result(timeout=180) for f in futures]
    on_victim = sum(r["router"] == victim for r in results)
    print(f"\nanswered after the kill: http {http_s:.2f} s, grpc {grpc_s:.2f} s; {on_victim} of {len(results)} streams on it")
    assert http_ok and http_s < ANSWER_S, http_s
    assert grpc_ok and grpc_s < ANSWER_S, grpc_s
    survivors = [r for r in results if r["router"] != victim]
    assert survivors and all(r["done"] and r["error"] is None for r in survivors), survivors
    assert pools.pids.remote().result(timeout_s=60) == pids  # no member restarted, no model loaded again


def test_a_killed_member_replica_costs_no_text_and_its_pool_comes_back(app):
    server, pools = app
    bodies = [{**LONG, "seed": 100 + i} for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        expected = [r["text"] for r in pool.map(lambda b: stream(server, b), bodies)]
    pids = pools.pids.remote().result(timeout_s=60)
    victim = next(rid for rid in pids if rid.startswith("p1:"))
    with ThreadPoolExecutor(6) as pool:
        started = [threading.Event() for _ in bodies]
        futures = [pool.submit(stream, server, b, e) for b, e in zip(bodies, started)]
        assert all(e.wait(60) for e in started)
        os.kill(pids[victim], signal.SIGKILL)
        results = [f.result(timeout=180) for f in futures]
    assert all(r["done"] and r["error"] is None for r in results), results
    assert [r["text"] for r in results] == expected  # 0 wrong texts (batch-invariant members)
    deadline = time.monotonic() + 120
    while True:  # Ray restarts the replica in place: the pool is two again
        try:
            now = pools.pids.remote().result(timeout_s=30)
            if now[victim] != pids[victim]:
                break
        except Exception:  # noqa: BLE001 - the restarting replica does not answer yet
            pass
        assert time.monotonic() < deadline, "the killed replica did not come back"
        time.sleep(0.2)  # polling Ray for the restarted process, with a bound
    assert sorted(now) == sorted(pids) and sum(rid.startswith("p1:") for rid in now) == 2
