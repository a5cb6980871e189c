"""The specialist's training path on a tiny member (the real run is `mixserve models train-specialist`,
minutes on SmolLM2): the adapter is written with its settings and loss curve, a config's `adapter:`
merges it into the member, and a missing or misfitting adapter is a clear error."""
import json
from dataclasses import asdict, replace
import os
import random
import re
import subprocess
import sys

import pytest
import torch

from mixserve.actors.loading import model_dir
from mixserve.references import ModelReferenceError
from mixserve.config import ConfigError, parse_config
from mixserve.eval.tasks import arithmetic, dev_split, task_rows
from mixserve.models.expert import SPECIALIST
from mixserve.models.specialist import ADD, ASK, SPLIT, START, TAKE, TIMES, problems


def test_training_problems_share_only_the_arithmetic_with_the_eval_tasks_and_the_dev_split():
    train_qs = problems(2000, SPECIALIST.seed)
    eval_qs = {f"Question: {p['question']}\nAnswer:" for rows in task_rows().values() for p in rows if "question" in p}
    eval_qs |= {f"Question: {p['question']}\nAnswer:" for p in arithmetic(2000, random.Random(20261125))}
    dev_qs = {r["prompt"] for r in dev_split()}
    assert not {f"Question: {p['question']}\nAnswer:" for p in train_qs} & (eval_qs | dev_qs)
    # none of the eval's (and so the dev split's) sentences: "X has N things. Then X gets k more. Then X
    # gives away k. Then X ends up with k times as many. Then X splits them into k equal groups and keeps
    # one group. How many things does X have now?"
    phrases = (" has ", "Then ", " gets ", "gives away", "ends up with", "times as many", "equal groups", "have now")
    assert not any(w in p["question"] for p in train_qs for w in phrases)


def test_training_answers_follow_from_the_question_across_two_digit_numbers_and_four_operations():
    """Each sentence read back through the templates: the answer is the arithmetic's, divisions have no
    remainder, and the problems reach two-digit numbers, all four operations and the small ones."""
    def pattern(template: str) -> re.Pattern:
        text = re.escape(template).replace(r"\{name\}", r"\w+").replace(r"\{thing\}", r"\w+")
        return re.compile(text.replace(r"\{n\}", r"(\d+)").replace(r"\{k\}", r"(\d+)"))

    kinds = {op: [pattern(t) for t in templates]
             for op, templates in (("start", START), ("+", ADD), ("-", TAKE), ("*", TIMES), ("/", SPLIT), ("ask", ASK))}
    used, starts = set(), []
    for p in problems(2000, SPECIALIST.seed):
        sentences = re.findall(r"[^.?]+[.?]", p["question"])
        total = int(next(m for m in (r.fullmatch(sentences[0]) for r in kinds["start"]) if m)[1])
        starts.append(total)
        assert any(r.fullmatch(sentences[-1].strip()) for r in kinds["ask"])
        for sentence in sentences[1:-1]:
            op, k = next((op, int(m[1])) for op in "+-*/" for r in kinds[op] if (m := r.fullmatch(sentence.strip())))
            used.add(op)
            assert op != "/" or total % k == 0
            total = {"+": total + k, "-": total - k, "*": total * k, "/": total // k}[op]
            assert total >= 0
        assert p["answer"] == str(total)
    assert used == set("+-*/") and max(starts) >= 90 and sum(s < 10 for s in starts) > 400


def retrain(tiny_dir, out, hash_seed: str) -> dict:
    """`mixserve models train-specialist` on the tiny member, in a fresh process: torch's thread count
    (which changes the float sums) is a fresh process's, and string hashing (and so any set's order)
    follows `hash_seed`."""
    subprocess.run([sys.executable, "-m", "mixserve", "models", "train-specialist", "--out", str(out),
                    "--base", str(tiny_dir / "a"), "--steps", "3"], check=True, timeout=300,
                   env={**os.environ, "PYTHONHASHSEED": hash_seed}, capture_output=True)
    return json.loads((out / "training.json").read_text())


@pytest.fixture(scope="module")
def adapter(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adapter")
    return out, retrain(tiny_dir, out, "0")


def test_the_command_retrains_the_same_adapter_byte_for_byte(adapter, tiny_dir, tmp_path):
    out, summary = adapter
    again = retrain(tiny_dir, tmp_path, "1")
    for name in ("adapter_model.safetensors", "adapter_config.json", "loss.png"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name
    assert again["losses"] == summary["losses"] and again["settings"] == summary["settings"]


def test_training_writes_the_adapter_its_settings_and_loss_curve(adapter, tiny_dir):
    out, summary = adapter
    assert {"adapter_config.json", "adapter_model.safetensors", "training.json", "loss.png"} <= {p.name for p in out.iterdir()}
    assert summary["settings"] == json.loads(json.dumps(asdict(replace(SPECIALIST, base=str(tiny_dir / "a"), steps=3))))
    assert len(summary["losses"]) == 3 and summary["trainable_parameters"] > 0 and summary["threads"] >= 1
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_member_with_the_adapter_loads_the_merged_weights(adapter, tiny_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    monkeypatch.setenv("MIXSERVE_CACHE", str(tmp_path / "cache"))
    out, _ = adapter
    config = parse_config({"members": [{"name": "plain", "model": "a"},
                                       {"name": "tuned", "model": "a", "adapter": str(out)}]}, tiny_dir)
    plain, tuned = (model_dir(m.source) for m in config.members)
    assert plain == tiny_dir / "a" and tuned.parent == tmp_path / "cache" / "merged"
    before, after = load_file(plain / "model.safetensors"), load_file(tuned / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[name], after[name])  # the trained LoRA product is in the weights
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])  # no LoRA there
    assert model_dir(config.members[1].source) == tuned  # merged once, then found in the cache


def test_a_missing_or_misfitting_adapter_is_a_clear_error(adapter, tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MIXSERVE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"members\[0\] \(t\)\.adapter: adapter 'nope' not found"):
        parse_config({"members": [{"name": "t", "model": "a", "adapter": "nope"}]}, tiny_dir)
    out, _ = adapter
    wrong = tmp_path / "wrong"  # the same weights told to be rank 4: what another model's adapter looks like
    wrong.mkdir()
    (wrong / "adapter_model.safetensors").write_bytes((out / "adapter_model.safetensors").read_bytes())
    cfg = json.loads((out / "adapter_config.json").read_text())
    (wrong / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4}))
    config = parse_config({"members": [{"name": "t", "model": "a", "adapter": str(wrong)}]}, tiny_dir)
    with pytest.raises(ModelReferenceError, match="does not fit the model"):
        model_dir(config.members[0].source)
