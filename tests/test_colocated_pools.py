"""Co-located members through Ray (docs/architecture.md, "Co-located experts"): with `colocate: true` a
base and its two adapters run as one process per pool replica, the routers still see three members, and
a seeded request writes the same text as with each member in its own process."""
import pytest
import ray

from mixserve.groups import units
from mixserve.config import ConfigError, parse_config
from mixserve.models.tiny import make_adapter
from mixserve.serving.ensemble import build_ensemble


@pytest.fixture(scope="module")
def raw(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("colocate")
    members = [{"name": "base", "model": "a"}]
    for name, seed in (("x", 1), ("y", 2)):
        members.append({"name": name, "model": "a", "adapter": str(make_adapter(str(tiny_dir / "a"), out / name, seed))})
    for m in members:
        m.update(weight=1, replicas=2, batch_invariant=True, resources={"num_cpus": 0.25})
    members.append({"name": "other", "model": "b", "weight": 1, "batch_invariant": True, "resources": {"num_cpus": 0.25}})
    return {"members": members, "member_retry_s": 60}


def test_members_of_one_base_form_one_group_and_must_agree_on_its_process(raw, tiny_dir):
    config = parse_config({**raw, "colocate": True}, tiny_dir)
    grouped = units(config.members, config.colocate)
    assert {u: [m.name for m in g] for u, g in grouped.items()} == {"base+x+y": ["base", "x", "y"], "other": ["other"]}
    apart = parse_config(raw, tiny_dir)
    assert list(units(apart.members, apart.colocate)) == ["base", "x", "y", "other"]
    uneven = {**raw, "colocate": True, "members": [{**raw["members"][0], "replicas": 1}, *raw["members"][1:]]}
    with pytest.raises(ConfigError, match=r"'base' and 'x' share one process .* the same replicas"):
        parse_config(uneven, tiny_dir)


def test_co_located_members_write_the_texts_they_write_apart(raw, tiny_dir, ray_local):
    texts = {}
    for colocate in (False, True):
        # apart, one replica each (fewer processes to start: the texts do not depend on the pool's size)
        members = raw["members"] if colocate else [{**m, "replicas": 1} for m in raw["members"]]
        config = parse_config({**raw, "members": members, "colocate": colocate}, tiny_dir)
        with build_ensemble(config) as ensemble:
            view = ray.get(ensemble.keeper.view.remote(), timeout=60)
            pids = ray.get(ensemble.keeper.pids.remote(), timeout=60)
            texts[colocate] = [ensemble.generate(prompt="the red cat sings and", max_tokens=20, seed=seed,
                                                 method=method).choices[0].text
                               for method in ("me", "ce") for seed in (1, 2, 3)]
            texts[colocate] += [ensemble.generate(prompt="the moon", max_tokens=12, seed=4, model=name).choices[0].text
                                for name in ("base", "x", "y")]
        replicas = {name: sorted(rid for rid, _, _ in pool) for name, pool in view["pools"].items()}
        if colocate:  # each of the group's two replicas is one process serving all three members
            assert replicas["base"] == replicas["x"] == replicas["y"] and len(replicas["x"]) == 2
            assert len(pids) == 3 and len(set(pids.values())) == 3
        else:
            assert len(pids) == 4
    assert texts[True] == texts[False]
    assert len(set(texts[True])) == len(texts[True])  # the seeds and methods write different texts


def test_vllm_members_of_one_base_share_one_vllm_engine_and_write_their_texts_apart(raw, tiny_dir, ray_local):
    """vLLM's multi-LoRA (actors/vllm_stepper.py): the group is one process holding one vLLM engine,
    and each member writes what it writes in a process of its own."""
    vllm = {"engine": "vllm", "engine_options": {"kv_cache_space_gib": 0.25}, "replicas": 1}
    members = [{**{k: v for k, v in m.items() if k != "batch_invariant"}, **vllm} for m in raw["members"][:2]]  # base, x
    texts = {}
    for colocate in (False, True):
        config = parse_config({**raw, "members": members, "colocate": colocate}, tiny_dir)
        assert list(units(config.members, colocate)) == (["base+x"] if colocate else ["base", "x"])
        with build_ensemble(config) as ensemble:
            pids = ray.get(ensemble.keeper.pids.remote(), timeout=60)
            texts[colocate] = [ensemble.generate(prompt="the red cat sings and", max_tokens=16, seed=seed,
                                                 method=method).choices[0].text
                               for method in ("me", "ce") for seed in (1, 2)]
            texts[colocate] += [ensemble.generate(prompt="the moon", max_tokens=12, seed=4, model=name).choices[0].text
                                for name in ("base", "x")]
        assert len(set(pids.values())) == (1 if colocate else 2)
    assert texts[True] == texts[False]
    assert texts[True][-1] != texts[True][-2]  # x's adapter changes what it writes
