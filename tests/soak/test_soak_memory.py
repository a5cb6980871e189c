"""The soak's memory watch: a restarted member is measured from the end of its own warm-up, and each role
after the soak against the same role once warm-up was over."""
from types import SimpleNamespace

from mixserve.soak import memory
from mixserve.soak.memory import MemoryWatch


def _watch(monkeypatch, timeline):
    """timeline: [(t, {name: (pid, bytes)})]; sampled in order."""
    now = {"t": 0.0, "procs": {}}
    monkeypatch.setattr(memory, "pids", lambda members: {p: n for n, (p, _) in now["procs"].items()})
    sizes = lambda pid: next(b for p, b in now["procs"].values() if p == pid)  # noqa: E731
    monkeypatch.setattr(memory.psutil, "Process",
                        lambda pid: SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=sizes(pid))))
    watch = MemoryWatch(lambda: now["t"], warmup_s=30, members=["a"])
    for t, procs in timeline:
        now["t"], now["procs"] = t, procs
        watch.sample()
    return watch


def test_a_restarted_member_counts_from_its_own_warm_up(monkeypatch):
    watch = _watch(monkeypatch, [
        (0, {"a": (1, 1000)}), (40, {"a": (1, 1050)}),
        (50, {"a": (2, 500)}),  # killed and back: small while it loads and warms up
        (70, {"a": (2, 900)}), (80, {"a": (2, 990)}), (110, {"a": (2, 1000)}),
    ])
    rows = {r["pid"]: r for r in watch.growth()}
    assert rows[1]["growth"] == 0.05 and rows[1]["span_s"] == 40
    # pid 2 from t=80 (30 s after it was first seen), not from its 500 bytes at t=50
    assert rows[2]["settled_bytes"] == 990 and rows[2]["span_s"] == 30
    assert abs(rows[2]["growth"] - (1000 / 990 - 1)) < 1e-4


def test_a_role_is_compared_across_its_processes(monkeypatch):
    watch = _watch(monkeypatch, [
        (0, {"a": (1, 1000), "router": (9, 400)}),
        (50, {"a": (2, 800), "router": (9, 460)}),
        (60, {"a": (2, 1200), "router": (9, 430)}),
    ])
    roles = {r["name"]: r for r in watch.roles()}
    assert roles["a"]["growth"] == 0.2 and roles["a"]["processes"] == 2
    assert roles["router"]["growth"] == 0.075 and roles["router"]["processes"] == 1
    # neither member process served 30 s after its warm-up: they say nothing about a leak
    assert {r["pid"] for r in watch.growth()} == {9}


def test_a_role_of_two_replicas_is_their_sum(monkeypatch):
    # Two router replicas (roles are pid -> name, so both are "router"); one killed and replaced.
    now = {"t": 0.0, "procs": {}}
    monkeypatch.setattr(memory, "pids", lambda members: {p: n for p, (n, _) in now["procs"].items()})
    monkeypatch.setattr(memory.psutil, "Process",
                        lambda pid: SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=now["procs"][pid][1])))
    watch = MemoryWatch(lambda: now["t"], warmup_s=30, members=["a"])
    for now["t"], now["procs"] in [(0, {1: ("router", 400), 2: ("router", 500)}),
                                   (50, {2: ("router", 520), 3: ("router", 300)}),
                                   (90, {2: ("router", 520), 3: ("router", 470)})]:
        watch.sample()
    row = watch.roles()[0]
    assert row["warm_bytes"] == 900 and row["end_bytes"] == 990 and row["processes"] == 3
    assert row["growth"] == 0.1
