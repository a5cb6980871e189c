"""Co-located members in process (docs/architecture.md, "Co-located experts"): a base and two adapters on
one copy of the base give every member the tokens it gives alone, CE's rows of all three go in one
forward, and the weights are held once."""
import asyncio
import json
import pickle

import pytest
import torch

from mixserve.actors.engine import MemberEngine
from mixserve.actors.group import GroupMember, MemberView, SharedForward
from mixserve.actors.weights import Weights
from mixserve.references import ModelReferenceError, resolve
from tests.colocated import opening, tokens

ARGS = dict(max_batch=16, batch_invariant=True)  # bit-identical rows whoever shares the forward


@pytest.fixture(scope="module")
def separate(lora_sources):
    return {name: MemberEngine(name=name, source=source, **ARGS) for name, source in lora_sources.items()}


@pytest.fixture(scope="module")
def group(lora_sources):
    weights, shared = Weights(lora_sources["base"]), SharedForward()
    return {name: GroupMember(shared, name=name, source=source, weights=weights, **ARGS)
            for name, source in lora_sources.items()}


def test_each_member_samples_the_same_tokens_alone_or_co_located(separate, group):
    async def run(engines):
        return {name: await tokens(e, opening(e, f"s-{name}", 24, seed=7)) for name, e in engines.items()}

    alone, together = asyncio.run(run(separate)), asyncio.run(run(group))
    assert together == alone
    assert len({tuple(t) for t in alone.values()}) == 3  # the adapters change the member's tokens


def test_the_runtime_adapter_is_the_merged_one(lora_sources, separate, tmp_path, monkeypatch):
    from mixserve.actors.loading import model_dir
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("MIXSERVE_CACHE", str(tmp_path))
    merged = AutoModelForCausalLM.from_pretrained(model_dir(lora_sources["x"]), dtype="float32").eval()
    ids = list(separate["x"].prompt_ids("the moon is near the red tree"))
    with torch.inference_mode():
        want = torch.log_softmax(merged(torch.tensor([ids])).logits[0, :-1], dim=-1)
    got = separate["x"].core.score(ids, rows=True).rows
    assert torch.allclose(torch.from_numpy(got), want, atol=1e-4)


def test_ce_rows_of_the_whole_group_step_in_one_forward(separate, group):
    async def rows(engines):
        reqs = {name: opening(e, f"ce-{name}", 0, seed=3, distribution=True) for name, e in engines.items()}
        parts = await asyncio.gather(*(e.whole(reqs[name]) for name, e in engines.items()))
        return dict(zip(engines, (p.probs for p in parts)))

    before = sum(e.core.forwards for e in group.values())
    together = asyncio.run(rows(group))
    assert sum(e.core.forwards for e in group.values()) - before == 1
    alone = asyncio.run(rows(separate))
    for name in alone:
        assert (together[name] == alone[name]).all(), name


def test_the_group_holds_the_base_once(separate, group):
    def size(model):
        return sum(p.numel() * p.element_size() for p in model.parameters())

    one = size(separate["base"].core.model)
    models = {id(e.core.model): e.core.model for e in group.values()}
    assert len(models) == 1
    assert size(next(iter(models.values()))) < 1.3 * one
    for name in ("x", "y"):  # each adapter is beside the base, not merged into a copy of it
        assert group[name].core.adapter != group["base"].core.adapter == 0


def test_an_adapter_that_does_not_fit_is_refused_by_name(lora_sources, tmp_path):
    from pathlib import Path

    right = Path(lora_sources["x"].adapter)
    config = json.loads((right / "adapter_config.json").read_text())
    for name, change in (("rank", {"r": 2}), ("dora", {"use_dora": True})):
        wrong = tmp_path / name  # the same weights told to be another rank: what another model's adapter looks like
        wrong.mkdir()
        (wrong / "adapter_model.safetensors").write_bytes((right / "adapter_model.safetensors").read_bytes())
        (wrong / "adapter_config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ModelReferenceError, match=f"{name}.*(does not fit the model|only plain LoRA)"):
            Weights(lora_sources["base"]).adapter(resolve(lora_sources["base"].path, adapter=str(wrong)))


class _Method:
    def __init__(self, calls, name, options=None):
        self.calls, self.name, self.opts = calls, name, options or {}

    def remote(self, *args):
        self.calls.append((self.name, self.opts, args))

    def options(self, **options):
        return _Method(self.calls, self.name, options)


class _Actor:
    """What a Ray actor handle looks like to the router: `handle.method[.options(...)].remote(...)`."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("__") or name == "calls":
            raise AttributeError(name)
        return _Method(self.calls, name)


def test_a_member_view_names_its_member_on_every_call_and_pickles():
    view = pickle.loads(pickle.dumps(MemberView(_Actor(), "x")))
    view.step.options(num_returns="streaming").remote("req")
    view.release.remote("s1", True)
    assert view.actor.calls == [("step", {"num_returns": "streaming"}, ("x", "req")),
                                ("release", {}, ("x", "s1", True))]
