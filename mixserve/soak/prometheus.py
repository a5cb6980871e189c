"""The mixserve_* counters as Ray's metrics agent exports them (Prometheus text, `ray_` prefixed),
summed over the series of every process that reports them, against what the soak's clients saw."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def scrape(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, s.get(url) as resp:
        return await resp.text()


def counters(text: str) -> dict:
    """{"tokens": {member: n}, "overloaded": n, "active": n} from one scrape."""
    tokens: dict[str, float] = {}
    overloaded = active = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ray_mixserve_member_tokens_total":
                member = sample.labels["member"]
                tokens[member] = tokens.get(member, 0) + sample.value
            elif sample.name == "ray_mixserve_rejected_requests_total" and sample.labels.get("reason") == "overloaded":
                overloaded += sample.value
            elif sample.name == "ray_mixserve_active_sessions":
                active += sample.value
    return {"tokens": {m: int(v) for m, v in tokens.items()}, "overloaded": int(overloaded), "active": int(active)}


async def settled(url: str, bound_s: float = 20) -> str:
    """A scrape once the counters stop moving: Ray exports them every second, so the last answers'
    counts arrive up to a second after the load ends."""
    text = await scrape(url)
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        await asyncio.sleep(2.5)
        again = await scrape(url)
        if counters(again) == counters(text):
            return again
        text = again
    return text


def agreement(text: str, outcomes, faults) -> dict:
    """The counters against what the clients saw. Every router replica's series stays in the export
    with its last value, so the sums cover the whole soak, less what a killed replica counted in its
    last export interval (the clients' answers from the 2 s before each kill)."""
    kills = [f.start for f in faults if f.kind == "router_kill"]
    seen, lost = Counter(), Counter()
    for o in outcomes:
        if o.status == 200:
            seen.update(o.member_tokens)
            if any(k - 2 <= o.t1 <= k for k in kills):
                lost.update(o.member_tokens)
    unheard = sum(o.spec["max_tokens"] * o.spec["n"] for o in outcomes if o.status not in (200, 429))
    refused = [o for o in outcomes if o.status == 429]
    refused_lost = sum(any(k - 2 <= o.t1 <= k for k in kills) for o in refused)
    server = counters(text)
    tokens_ok = all(seen[m] - lost[m] <= server["tokens"].get(m, 0) <= seen[m] + unheard
                    for m in set(seen) | set(server["tokens"]))
    refused_ok = len(refused) - refused_lost <= server["overloaded"] <= len(refused)
    return {"client_tokens": dict(seen), "server_tokens": server["tokens"], "tokens_in_last_intervals": dict(lost),
            "tokens_unheard": unheard, "client_429": len(refused), "server_429": server["overloaded"],
            "429_in_last_intervals": refused_lost, "agree": tokens_ok and refused_ok}
