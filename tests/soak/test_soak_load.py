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
