"""Member pools seen from two routers (docs/architecture.md, "Pools"; issue 29): a named session's next
turn, sent through another router over the same pools, reaches the replicas that hold its KV and feeds
them only what they have not seen, never its history again; and the text is the one a single request
would have written (invariant 3)."""
import asyncio
import os
import signal
import time

import pytest
import ray

from mixserve.config import parse_config
from mixserve.router.request import GenerateRequest
from mixserve.serving.ensemble import build_ensemble

PROMPT = "the sun rises over the quiet hills and " * 12


@pytest.fixture(scope="module")
def routers(tiny_dir, ray_local):
    members = [{"name": name, "model": model, "replicas": 2, "batch_invariant": True, "resources": {"num_cpus": 0.25}}
               for name, model in (("h1", "a"), ("h2", "b"))]
    config = parse_config({"members": members, "member_retry_s": 60}, tiny_dir)
    with build_ensemble(config) as one:
        with build_ensemble(config, keeper=one.keeper) as two:  # a second router attached to the same pools
            yield one, two


def fed(ensemble) -> dict[str, int]:
    """Tokens each replica has fed its model so far."""
    view = ray.get(ensemble.keeper.view.remote(), timeout=60)
    return {rid: ray.get(actor.stats.remote(), timeout=60)["positions"]
            for pool in view["pools"].values() for rid, actor, _ in pool}


def test_a_second_turn_through_another_router_reuses_the_replicas_kv(routers):
    one, two = routers
    start = fed(one)
    first = one.generate(prompt=PROMPT, max_tokens=24, seed=5, session="chat")
    assert first.choices[0].finish_reason == "length"
    after_first = fed(one)
    used = {rid for rid in start if after_first[rid] > start[rid]}
    assert {rid.split(":")[0] for rid in used} == {"h1", "h2"}  # one replica of each pool at least
    second = two.generate(session="chat", max_tokens=24, seed=5)
    after_second = fed(one)
    grown = {rid: after_second[rid] - after_first[rid] for rid in start}
    assert {rid for rid, n in grown.items() if n} <= used, (used, grown)  # the same replicas
    history = first.usage.prompt_tokens + 24
    # each token is fed to each member once (its own when sampled, the other's at its turn), plus the
    # first turn's last token: about 2 x 24, never the history again
    assert sum(grown.values()) <= 2 * 24 + 4 < history, (grown, history)
    whole = one.generate(prompt=PROMPT, max_tokens=48, seed=5)
    assert first.choices[0].text + second.choices[0].text == whole.choices[0].text


def test_a_stopped_replica_gets_no_new_work_while_its_sibling_answers(routers):
    """A replica that stops (SIGSTOP: a hung device, a debugger) answers no PING: once the router finds
    it silent, new sessions and tokenizations go to its sibling, and requests complete with the texts
    of a quiet run instead of waiting member_retry_s (60 s here) on it; once it resumes it is used again."""
    one, _ = routers
    prompts = [f"{word} rises over the hills" for word in ("sun", "moon", "mist", "wind", "tide", "star")]
    quiet = [one.generate(prompt=p, max_tokens=8, seed=i).choices[0].text for i, p in enumerate(prompts)]
    view = ray.get(one.keeper.view.remote(), timeout=60)
    stopped, actor, _ = view["pools"]["h1"][0]
    pid = ray.get(actor.stats.remote(), timeout=60)["pid"]
    pool = one.router.members["h1"]

    async def scenario():
        channel = pool.slots[stopped].client.channel
        for seed in range(40):  # until this event loop's channel to the replica is open (sessions land by hash)
            await one.router.generate(GenerateRequest(prompt="warm", max_tokens=2, seed=seed))
            if channel.can_open():
                break
        assert channel.can_open()
        os.kill(pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            while not channel.silent():  # bounded: found within SILENT_S of its last PONG
                assert time.monotonic() < deadline, "the stopped replica was never found silent"
                await asyncio.sleep(0.05)
            started = time.monotonic()
            texts = [(await asyncio.wait_for(one.router.generate(GenerateRequest(prompt=p, max_tokens=8, seed=i)),
                                             30)).choices[0].text for i, p in enumerate(prompts)]
            took = time.monotonic() - started
            census = await one.router.census(1.5)  # what /health reports: h1 serves on its sibling
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while channel.silent():
            assert time.monotonic() < deadline, "the resumed replica was never heard again"
            await asyncio.sleep(0.05)
        return texts, took, census

    texts, took, census = asyncio.run(scenario())
    assert texts == quiet and took < 30
    assert census["h1"][1:] == (1, 2) and all(down == 0 for _, down, _ in (census[m] for m in census if m != "h1"))
