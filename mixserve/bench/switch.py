"""`mixserve bench`'s breakdown of one switch between members, from timestamps (wall clock, one node).

For every switch of a few ME requests at batch 1 the router notes when the run before's last token
came in, when it sent the next member its run, and when that run's first token came in
(`Router.trace`); the member's data plane notes when the run's starting frame came in and when its
first token went out (`data_plane_trace`). So a switch, from the last token of one member to the
first of the next, splits into:
- router: its bookkeeping between the two (the step loop, the policy, opening the run after);
- hops: the frame to the member and the token back, on the transport;
- member: from the frame in to the first token out: its wake-up, the catch-up, one forward and the
  sampling. One forward is there without a switch too: the member's own step time (its single row).
"""
from __future__ import annotations

import statistics
from collections import deque


async def breakdown(ensemble, requests, measure_one) -> dict | None:
    """Medians in ms over the switches of `requests` (run one at a time), or None without a data plane."""
    router = ensemble.router
    router.trace = deque(maxlen=100_000)
    try:
        for req in requests:
            await measure_one(req)
    finally:
        trace, router.trace = list(router.trace), None
    members = {}
    for name, actor in ensemble.actors.items():
        rows = await actor.data_plane_trace.remote()
        members.update({(session, step): (t_in, t_out) for session, step, t_in, t_out in rows})
    parts: dict[str, list[float]] = {"router": [], "hops": [], "member": [], "switch": []}
    for session, step, _, prev_end, sent, first_in in trace:
        if (member := members.get((session, step))) is None:
            continue  # no data plane (data_plane: ray), or a run that ended before its first token
        t_in, t_out = member
        parts["router"].append(sent - prev_end)
        parts["member"].append(t_out - t_in)
        parts["hops"].append((first_in - sent) - (t_out - t_in))
        parts["switch"].append(first_in - prev_end)
    if not parts["switch"]:
        return None
    return {"switches": len(parts["switch"]), **{f"{k}_ms": 1000 * statistics.median(v) for k, v in parts.items()}}
