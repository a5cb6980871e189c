"""Members on their own nodes: `ray start` a head and a worker on this machine (as on two machines), each
declaring one member's resource, then `mixserve serve --address` and HTTP."""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests
import yaml

from tests.conftest import free_port
from tests.processes import read_until


def members_under(node: subprocess.Popen) -> int:
    """Member processes among a `ray start --block` node's descendants (its raylet's workers)."""
    found = 0
    for p in psutil.Process(node.pid).children(recursive=True):
        try:
            found += p.name().startswith("ray::MemberHost")
        except psutil.NoSuchProcess:
            pass  # a worker that ended meanwhile
    return found


def test_serve_joins_a_cluster_and_each_member_lands_on_its_node_and_writes_the_one_node_text(tiny_dir, tmp_path,
                                                                                             ensemble):
    """The ensemble of `ensemble.yaml`, a on the head and b on the worker: the text of a seeded request is
    the one-node ensemble's (the steps and their KV crossed nodes)."""
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    gcs, http = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="mxr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    raw = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    for m in raw["members"]:
        m.update(model=str(tiny_dir / m["model"]), resources={"num_cpus": 0.5, f"member_{m['name']}": 1})
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(raw))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [subprocess.Popen([ray_bin, "start", "--head", f"--port={gcs}", "--num-cpus=1", "--block",
                               f"--temp-dir={temp}", "--include-dashboard=false", '--resources={"member_a": 1}'],
                              **quiet)]
    try:
        subprocess.run([ray_bin, "status", f"--address=127.0.0.1:{gcs}"], timeout=60, check=False, **quiet)
        procs.append(subprocess.Popen([ray_bin, "start", f"--address=127.0.0.1:{gcs}", "--num-cpus=1", "--block",
                                       '--resources={"member_b": 1}'], **quiet))
        serve = subprocess.Popen([sys.executable, "-m", "mixserve", "serve", "--config", str(tmp_path / "two.yaml"),
                                  "--address", f"127.0.0.1:{gcs}", "--http-port", str(http), "--grpc-port", "0"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        procs.append(serve)
        read_until(serve, "Ctrl-C to stop.", timeout_s=180)
        reply = requests.post(f"http://127.0.0.1:{http}/v1/completions", timeout=60,
                              json={"prompt": "the moon", "max_tokens": 40, "seed": 13})
        assert reply.status_code == 200 and set(reply.json()["usage"]["member_tokens"]) == {"a", "b"}
        assert members_under(procs[0]) == 1 and members_under(procs[1]) == 1  # a on the head, b on the worker
        one_node = ensemble.generate(prompt="the moon", max_tokens=40, seed=13).choices[0].text
        assert reply.json()["choices"][0]["text"] == one_node
        serve.send_signal(signal.SIGINT)
        assert serve.wait(timeout=60) == 0
    finally:
        for p in reversed(procs):  # serve, then the worker, then the head
            if p.poll() is None:
                p.terminate()
        # A `ray start --block` node can take a minute to drain after SIGTERM (measured: 60 s of this
        # test's 106); a few seconds' grace, then what is left of the cluster is killed below.
        deadline = time.monotonic() + 3
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["pkill", "-9", "-f", temp], check=False)  # anything of this cluster left behind
