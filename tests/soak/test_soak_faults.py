"""Which processes the soak's faults hit (mixserve/soak/faults.py), on a synthetic Ray actor table:
member replicas found by `mixserve_member:<member>:` with or without a replica index, one replica of
a pool per fault, never a pool another fault holds, one router replica of several."""
import asyncio
import itertools
import random
import signal
import time

from mixserve.soak import faults
from mixserve.soak.faults import REPLICA_CLASS, Injector, pick_replica, pids, pools, routers, whole

MEMBERS = ["a", "b", "c"]


class Cluster:
    """The GCS's actor table as faults.py reads it; a SIGKILL makes Ray (or Serve) bring the actor back."""

    def __init__(self, names: list[str], routers: int = 0):
        self.pids = itertools.count(100)
        self.actors = [self._actor(n, "MemberHost", f"m{k}") for k, n in enumerate(names)]
        self.actors += [self._actor(f"SERVE_REPLICA::mixserve#Ingress#r{k}", REPLICA_CLASS, f"r{k}")
                        for k in range(routers)]
        self.actors.append({**self._actor("mixserve_member:a:0:0badf00d", "MemberHost", "gone"), "State": "DEAD"})
        self.signals: list[tuple[str, int]] = []  # (actor name, signal)

    def _actor(self, name: str, cls: str, actor_id: str) -> dict:
        return {"Name": name, "ActorClassName": cls, "ActorID": actor_id, "State": "ALIVE", "Pid": next(self.pids)}

    def send(self, pid: int, sig) -> None:
        hit = next(a for a in self.actors if a["Pid"] == pid and a["State"] == "ALIVE")
        self.signals.append((hit["Name"], sig))
        if sig != signal.SIGKILL:
            return
        if hit["ActorClassName"] == REPLICA_CLASS:  # Serve starts a new replica: a new actor
            hit["State"] = "DEAD"
            self.actors.append(self._actor(hit["Name"] + "-new", REPLICA_CLASS, hit["ActorID"] + "-new"))
        else:  # Ray restarts the actor: the same one in a new process (the GCS answers with new records)
            self.actors[self.actors.index(hit)] = {**hit, "Pid": next(self.pids)}


def installed(monkeypatch, cluster: Cluster) -> Cluster:
    monkeypatch.setattr(faults, "_actors", lambda: cluster.actors)
    monkeypatch.setattr(faults, "_send", cluster.send)
    monkeypatch.setattr(faults, "_running", lambda: sum(a["ActorClassName"] == REPLICA_CLASS and a["State"] == "ALIVE"
                                                        for a in cluster.actors))
    return cluster


def injector(seed: int = 0, busy: set | None = None) -> Injector:
    start = time.monotonic()
    inj = Injector(lambda: time.monotonic() - start, seed, "http://127.0.0.1:9", 30, MEMBERS,
                   set() if busy is None else busy)

    async def healthy() -> bool:
        return True
    inj._healthy = healthy
    return inj


POOLED = [f"mixserve_member:{m}:{i}:{k:08x}" for k, (m, i) in enumerate(itertools.product(MEMBERS, (0, 1)))]


def test_member_replicas_are_found_by_their_member_s_prefix_with_or_without_an_index():
    cluster = Cluster(POOLED[:4] + ["mixserve_member:c:1234abcd", "mixserve_member:c:5678abcd", "mixserve_memberless"])
    found = pools(MEMBERS, cluster.actors)
    assert {m: [a["Name"] for a in r] for m, r in found.items()} == {
        "a": POOLED[:2], "b": POOLED[2:4], "c": ["mixserve_member:c:1234abcd", "mixserve_member:c:5678abcd"]}
    # the memory watch's roles: a replica's index where the name has one; the dead actor is not watched
    roles = sorted(faults.role(a["Name"], m) for m, r in found.items() for a in r)
    assert roles == ["a:0", "a:1", "b:0", "b:1", "c", "c"]


def test_the_memory_watch_sees_every_replica_and_every_router(monkeypatch):
    cluster = installed(monkeypatch, Cluster(POOLED, routers=2))
    roles = pids(MEMBERS)
    assert sorted(roles.values()) == ["a:0", "a:1", "b:0", "b:1", "c:0", "c:1", "router", "router"]


def test_a_fault_takes_one_replica_of_a_free_pool():
    live = pools(MEMBERS, Cluster(POOLED).actors)
    rng = random.Random(5)
    hits = [pick_replica(rng, live, busy={"b"}) for _ in range(200)]
    assert {m for m, _ in hits} == {"a", "c"}  # never the pool another fault holds
    assert {a["Name"] for _, a in hits} == set(POOLED) - set(POOLED[2:4])  # each replica of the free ones
    assert pick_replica(rng, live, busy=set(MEMBERS)) is None


def test_one_copy_per_member_draws_the_member_as_before_pools():
    """The single topology's fault schedule for a seed is what it was: one draw, the member."""
    live = pools(MEMBERS, Cluster([f"mixserve_member:{m}:{k:08x}" for k, m in enumerate(MEMBERS)]).actors)
    picks, before = random.Random(3), random.Random(3)
    assert [pick_replica(picks, live, set())[0] for _ in range(50)] == [before.choice(MEMBERS) for _ in range(50)]


def test_a_member_kill_signals_one_replica_and_ends_when_its_pool_is_whole(monkeypatch):
    cluster = installed(monkeypatch, Cluster(POOLED))
    busy = {"a", "c"}  # a pause holds them: the kill must take b
    inj = injector(busy=busy)
    asyncio.run(inj.kill_member())
    assert len(cluster.signals) == 1 and cluster.signals[0][0] in POOLED[2:4]
    fault = inj.faults[0]
    assert (fault.kind, fault.target, fault.replica) == ("member_kill", "b", cluster.signals[0][0])
    assert fault.end is not None and busy == {"a", "c"}  # b free again once back
    assert len(pools(MEMBERS, cluster.actors)["b"]) == 2


def test_a_pool_whose_replica_was_replaced_by_a_new_actor_is_whole_again():
    hit = {"Name": POOLED[0], "ActorID": "x", "Pid": 7}
    sibling = {"Name": POOLED[1], "ActorID": "y", "Pid": 8}
    assert not whole(hit, [hit, sibling], 2)  # the GCS has not seen it die yet
    assert not whole(hit, [sibling], 2)
    assert whole(hit, [sibling, {"Name": "mixserve_member:a:0:feedbeef", "ActorID": "z", "Pid": 9}], 2)
    assert whole(hit, [sibling, {**hit, "Pid": 10}], 2)  # Ray restarted the same actor


def test_a_router_kill_takes_one_of_two_replicas(monkeypatch):
    cluster = installed(monkeypatch, Cluster(POOLED, routers=2))
    inj = injector(seed=1)
    asyncio.run(inj.kill_router())
    killed = [n for n, s in cluster.signals]
    assert len(killed) == 1 and killed[0].startswith("SERVE_REPLICA::mixserve#Ingress#")
    assert inj.faults[0].target == "router" and inj.faults[0].end is not None
    assert len(routers(cluster.actors)) == 2 and not any(n.startswith("mixserve_member") for n in killed)
