"""Co-located members on vLLM, in process (docs/architecture.md, "Co-located experts"): a base and two
adapters on one vLLM engine (its multi-LoRA) give every member the tokens it gives alone, the three
members' runs and CE rows step together, each member's KV stays its own, and the base is held once."""
import asyncio
import json
from pathlib import Path

import pytest

from mixserve.actors.messages import SamplingParams, StepRequest
from mixserve.actors.vllm_engine import VllmEngine, vllm_group
from mixserve.references import ModelReferenceError, resolve
from tests.colocated import opening, tokens

ARGS = dict(max_batch=4, options={"kv_cache_space_gib": 0.25})


@pytest.fixture(scope="module")
def separate(lora_sources):
    return {name: VllmEngine(name=name, source=source, **ARGS) for name, source in lora_sources.items()}


@pytest.fixture(scope="module")
def group(lora_sources):
    return vllm_group({name: dict(name=name, source=source, **ARGS) for name, source in lora_sources.items()})


def all_at_once(engines, make):
    """Each member's answer to its request, the members' requests in flight together (in the group's
    engine steps, the base's rows beside the adapters')."""
    async def run():
        return dict(zip(engines, await asyncio.gather(*(make(name, e) for name, e in engines.items()))))
    return asyncio.run(run())


def one_by_one(engines, make):
    """The same, each member alone in turn: separate members are separate processes, and two vLLM
    engines must not step at once in one (vLLM's forward context is one per process)."""
    async def run():
        return {name: await make(name, e) for name, e in engines.items()}
    return asyncio.run(run())


def test_each_member_samples_the_same_tokens_alone_or_co_located(separate, group):
    run = lambda name, e: tokens(e, opening(e, f"s-{name}", 24, seed=7))  # noqa: E731
    alone = one_by_one(separate, run)
    shared_before = sum(e.shared_steps for e in group.values())
    together = all_at_once(group, run)
    assert together == alone
    assert len({tuple(t) for t in alone.values()}) == 3  # the adapters change the member's tokens
    assert sum(e.shared_steps for e in group.values()) - shared_before >= 3 * 20  # most of 24 steps, three members
    # the session goes on where it stopped: its KV is the member's, not its neighbour's
    more = lambda name, e: tokens(e, StepRequest(f"s-{name}", (), 24, 8, SamplingParams(seed=7)))  # noqa: E731
    assert all_at_once(group, more) == one_by_one(separate, more)


def test_ce_rows_of_the_whole_group_step_together_and_are_each_members_own(separate, group):
    row = lambda name, e: e.whole(opening(e, f"ce-{name}", 0, seed=3, distribution=True))  # noqa: E731
    before = {name: e.steps for name, e in group.items()}
    forwards = sum(e.forwards for e in group.values())
    together = all_at_once(group, row)
    assert all(e.steps - before[name] == 1 for name, e in group.items())  # one engine step each ...
    assert sum(e.forwards for e in group.values()) - forwards == 1  # ... the same one
    assert group["base"].stepper is group["x"].stepper is group["y"].stepper  # ... of one engine
    alone = one_by_one(separate, row)
    for name in alone:
        assert abs(together[name].probs - alone[name].probs).max() < 1e-5, name
    assert abs(together["x"].probs - together["base"].probs).max() > 1e-3  # not the base's row


def test_the_group_holds_the_base_once(separate, group):
    def size(engine):
        model = engine.vllm.engine_core.engine_core.model_executor.driver_worker.worker.model_runner.model
        return sum(p.numel() * p.element_size() for p in model.parameters())

    engines = {id(e.vllm): e for e in group.values()}
    assert len(engines) == 1
    assert size(next(iter(engines.values()))) < 1.3 * size(separate["base"])
    assert group["base"].lora is None and group["x"].lora.lora_int_id != group["y"].lora.lora_int_id


def test_an_adapter_that_does_not_fit_or_adapts_lm_head_is_refused_by_name(lora_sources, tmp_path):
    right = Path(lora_sources["x"].adapter)
    config = json.loads((right / "adapter_config.json").read_text())
    for name, change, error in (("lm-head", {"target_modules": ["q_proj", "lm_head"]}, "adapts the embeddings or lm_head"),
                                ("dora", {"use_dora": True}, "does not fit the model: .*DoRA")):
        wrong = tmp_path / name  # the same weights, told to be something vLLM does not run
        wrong.mkdir()
        (wrong / "adapter_model.safetensors").write_bytes((right / "adapter_model.safetensors").read_bytes())
        (wrong / "adapter_config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises((ValueError, ModelReferenceError), match=f"{name}.*{error}"):
            VllmEngine(name=name, source=resolve(lora_sources["base"].path, adapter=str(wrong)), **ARGS)


def test_lora_settings_keep_a_spare_slot_and_the_smallest_rank_that_holds_every_adapter(tmp_path):
    from mixserve.actors.vllm_setup import lora_options

    folders = []
    for name, rank in (("a", 4), ("b", 9)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"r": rank, "target_modules": ["q_proj"]}))
        folders.append(str(tmp_path / name))
    assert lora_options(folders[:1]) == {"enable_lora": True, "max_loras": 2, "max_cpu_loras": 2, "max_lora_rank": 8}
    assert lora_options(folders)["max_loras"] == 3 and lora_options(folders)["max_lora_rank"] == 16
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 1024, "target_modules": ["q_proj"]}))
    with pytest.raises(ValueError, match="rank 1024: vLLM takes ranks up to 512"):
        lora_options(folders)
