"""Members on their own nodes: a three-node Ray cluster on this machine (ray.cluster_utils.Cluster)."""
import json
import os
import subprocess
import sys
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
