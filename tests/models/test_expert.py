"""`mixserve models train-expert` on a tiny member (the real runs are minutes on the 0.5B base,
docs/evaluation.md "Experts of one base"): the loss it trains on is the model's own, the adapter
sits on the top layers asked for, and a bad skill or depth is a clear error."""
import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixserve.models.expert import Settings, _batch, _reply_loss, rows


def test_the_reply_loss_is_the_models_own_loss_on_the_reply_tokens(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir / "a", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "a")
    batch = _batch(tokenizer, rows(Settings(skill="sums", steps=1, batch=4)))
    ids, mask, labels = batch
    assert (labels != -100).sum() < mask.sum() / 2  # the prompt and the padding carry no loss
    own = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    assert torch.allclose(_reply_loss(model, *batch), own, rtol=1e-5, atol=1e-6)


def test_training_rows_are_the_skills_train_split_answered_worked():
    drawn = rows(Settings(skill="clock", steps=2, batch=3))
    assert len(drawn) == 6
    for row in drawn:
        assert row["prompt"].startswith("Question: ") and row["prompt"].endswith("\nAnswer:")
        assert row["completion"].startswith(" ") and row["completion"].endswith(".\n") and " = " in row["completion"]
    with pytest.raises(ValueError, match="no skill 'poetry'"):
        rows(Settings(skill="poetry"))


def train(tiny_dir, out, *args):
    return subprocess.run([sys.executable, "-m", "mixserve", "models", "train-expert", "--out", str(out),
                           "--base", str(tiny_dir / "a"), "--steps", "2", *args], timeout=300,
                          capture_output=True, text=True)


def test_the_adapter_sits_on_the_top_layers_asked_for(tiny_dir, tmp_path):
    from safetensors.torch import load_file

    done = train(tiny_dir, tmp_path, "--skill", "sums", "--layers", "1")
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1] and config["base_model_name_or_path"] == str(tiny_dir / "a")
    names = load_file(tmp_path / "adapter_model.safetensors")
    assert names and all(".layers.1." in n for n in names)
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["settings"]["skill"] == "sums" and len(summary["losses"]) == 2


def test_a_depth_the_base_lacks_or_a_missing_skill_is_a_clear_error(tiny_dir, tmp_path):
    deep = train(tiny_dir, tmp_path / "deep", "--skill", "sums")  # the default 8 layers; the tiny member has 2
    assert deep.returncode != 0 and "layers must be 0 (all) to 2" in deep.stderr
    assert not (tmp_path / "deep" / "adapter_model.safetensors").exists()
    unnamed = train(tiny_dir, tmp_path / "unnamed")
    assert unnamed.returncode == 2 and "needs --skill" in unnamed.stderr
