"""The soak's load (mixserve/soak/load.py): its warm-up primer holds every kind of request the load draws."""
from mixserve.soak.load import Mix

MEMBERS = {"a": "tok1", "b": "tok1", "c": "tok2"}  # the soak config's shape: a and b share a tokenizer


def features(spec: dict) -> set:
    """What makes a request take another path through the server."""
    weights = None if spec["weights"] is None else tuple(sorted(m for m, w in spec["weights"].items() if w > 0))
    found = {("method", spec["method"]), ("weights", spec["method"], weights), ("member", spec["member"]),
             ("temperature", spec["temperature"], spec["top_p"]), ("chat", spec["chat"]),
             ("stream", spec["proto"], spec["stream"])}
    if spec["n"] > 1:
        found.add(("n>1",))
    if spec["stop"]:
        found.add(("stop",))
    if spec["logprobs"] is not None:
        found.add(("logprobs", spec["method"], spec["member"], weights, spec["echo"]))
    if spec["session"]:
        found.add(("session",))
    return found


def test_the_primer_sends_every_kind_of_request_the_load_draws():
    load = Mix(7, MEMBERS, "mixserve")
    drawn = set().union(*(features(load.next()) for _ in range(3000)))
    primer = Mix(7, MEMBERS, "mixserve").primer()
    primed = set().union(*(features(spec) for spec in primer))
    assert drawn - primed == set()
    assert len(primer) < 40 and len({s["i"] for s in primer}) == len(primer)  # a short, numbered prelude


def test_a_hostile_share_of_the_load_draws_every_kind_and_the_primer_sends_each_once():
    from mixserve.soak import hostile

    mix = Mix(3, {"a": "t1", "b": "t1"}, "ens", hostile=0.1)
    drawn = [mix.next().get("hostile") for _ in range(4000)]
    share = sum(d is not None for d in drawn) / len(drawn)
    assert 0.08 < share < 0.12  # 400 expected of 4000: binomial sd about 19, this band is over 5 sd wide
    assert {d for d in drawn if d} == {k.name for k in hostile.KINDS}
    assert sorted(s["hostile"] for s in mix.primer() if s.get("hostile")) == sorted(k.name for k in hostile.KINDS)
    assert not any(s.get("hostile") for s in Mix(3, {"a": "t1"}, "ens").primer())
    for kind in hostile.KINDS:
        assert hostile.body(kind.name, "ens", ["a", "b"])  # every kind has its body
