"""The mixture check of docs/evaluation.md, "Experts of one base", run alone: the eval harness's own
chi-square (mixserve/eval/check.py) through the gate of cluster/experts.yaml, as `mixserve eval` runs it at its end.
Run from the repository root: .venv/bin/python docs/studies/experts/mixture_check.py"""
import json, time
from mixserve.config import load_config
from mixserve.cluster.ray_cluster import connect
from mixserve.serving.served import served
from mixserve.eval.check import mixture_check
from mixserve.eval.harness import CHECK_PROMPT
t = time.time()
config = load_config("cluster/experts.yaml")
connect(None)
with served(config) as url:
    out = mixture_check(url, config.model_name, None, CHECK_PROMPT, True, 2000)
out = {k: v for k, v in out.items()} if isinstance(out, dict) else out
print(json.dumps(out, default=float)[:3000])
print("seconds", time.time() - t)
