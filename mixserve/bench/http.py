"""The `me-http` row of `mixserve bench`: ME as a client of the served app sees it, OpenAI streaming
over loopback HTTP, on the same members and prompts as the in-process rows.

The app is the one `build_app` deploys (its own member actors: the in-process rows' actors are gone by
then, so both never share the CPUs). Each streamed event carries its token ids, so the same
Clock (mixserve/bench/clock.py) times it as times the in-process rows.
"""
from __future__ import annotations

import json

import requests

from mixserve.bench.clock import Clock, Run
from mixserve.router.request import GenerateRequest

TIMEOUT_S = 300  # one request; a hung server fails the run instead of stalling it


def measure_http(url: str, model: str, req: GenerateRequest) -> Run:
    """One streamed /v1/completions request."""
    body = {"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "seed": req.seed,
            "method": req.method, "stream": True, "stream_options": {"include_usage": True}}
    clock, usage = Clock(), None
    with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=TIMEOUT_S) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"me-http: {event['error']['message']}")
            if tokens := sum(len(c.get("token_ids") or ()) for c in event.get("choices", [])):
                clock.arrived(tokens)
            usage = event.get("usage") or usage
    return clock.run(usage["completion_tokens"], usage["member_forward_calls"], usage["router_round_trips"])
