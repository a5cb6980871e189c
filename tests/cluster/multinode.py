"""Run by test_multinode.py in its own process (its own Ray): a head and two worker nodes on this
machine, each worker declaring one member's custom resource. Prints where each member landed and the
text for a fixed seed, as JSON."""
import json
import os
import sys

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.state import list_actors  # noqa: E402

from mixserve.serving.ensemble import build_ensemble  # noqa: E402
from mixserve.config import parse_config  # noqa: E402


def main(tiny_dir: str, prompt: str, seed: int) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": True})
    workers = {name: cluster.add_node(num_cpus=1, resources={f"member_{name}": 1}) for name in ("a", "b")}
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    members = [{"name": n, "model": n, "weight": 0.5, "resources": {"num_cpus": 1, f"member_{n}": 1},
                "batch_invariant": True} for n in ("a", "b")]
    with build_ensemble(parse_config({"members": members}, tiny_dir), address=cluster.address) as engine:
        text = engine.generate(prompt=prompt, max_tokens=40, seed=seed).choices[0].text
        ids = {actor._actor_id.hex(): name for name, actor in engine.actors.items()}
        landed = {ids[a.actor_id]: a.node_id for a in list_actors(filters=[("state", "=", "ALIVE")])
                  if a.actor_id in ids}
    print(json.dumps({"text": text, "landed": landed, "head": cluster.head_node.node_id,
                      "workers": {name: node.node_id for name, node in workers.items()}}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
