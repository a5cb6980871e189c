"""Members on their own nodes: a three-node Ray cluster on this machine (ray.cluster_utils.Cluster)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_members_land_on_their_own_nodes_and_the_text_matches_one_node(tiny_dir, ensemble):
    out = subprocess.run([sys.executable, "-m", "tests.cluster.multinode", str(tiny_dir), "the moon", "13"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["landed"] == result["workers"]  # a on the member_a node, b on the member_b node
    assert result["head"] not in result["landed"].values()
    one_node = ensemble.generate(prompt="the moon", max_tokens=40, seed=13).choices[0].text
    assert result["text"] == one_node


def test_serve_joins_a_cluster_of_real_ray_processes(tiny_dir, tmp_path):
    """`ray start` a head and a worker (as on two machines), then `mixserve serve --address` and HTTP."""
    import signal
    import tempfile

    import requests
    import yaml

    from tests.conftest import free_port
    from tests.processes import read_until

    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    gcs, http = free_port(), free_port()
    temp = tempfile.mkdtemp(prefix="mxr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    members = [{"name": n, "model": str(tiny_dir / n), "resources": {"num_cpus": 0.5, f"member_{n}": 1}}
               for n in ("a", "b")]
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({"members": members}))
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
                              json={"prompt": "the cat", "max_tokens": 6, "seed": 2})
        assert reply.status_code == 200 and set(reply.json()["usage"]["member_tokens"]) <= {"a", "b"}
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
