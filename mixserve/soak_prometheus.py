"""The mixserve_* counters as Ray's metrics agent exports them (Prometheus text, `ray_` prefixed),
summed over the series of every process that reports them."""
from __future__ import annotations

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
