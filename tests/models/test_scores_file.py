"""The dev rows' scores kept beside them (`mixserve weights fit --scores`): read back as written, and
not reused once the rows, a member or an adapter's bytes differ (a refit would otherwise fit the gate
to another model's numbers)."""
import numpy as np

from mixserve.config import parse_config
from mixserve.models.scores_file import load_scores, save_scores, scores_key
from mixserve.models.weights import Scored


def config_of(tmp_path, second: str = "s"):
    (tmp_path / "base").mkdir(exist_ok=True)
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "lora").mkdir(exist_ok=True)
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    return parse_config({"members": [{"name": "g", "model": "base"},
                                     {"name": second, "model": "base", "adapter": "lora"}]}, tmp_path)


def test_scores_come_back_as_written_and_only_for_the_same_rows_and_members(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"prompt": f"Question {i}", "completion": " 4\n", **({"fold": i % 2} if i else {})} for i in range(5)]
    scored = [Scored(r["prompt"], rng.normal(size=(2, 1 + i)), rng.normal(size=2), 3 + i, r.get("fold"))
              for i, r in enumerate(rows)]
    (tmp_path / "lora" / "adapter_model.safetensors").parent.mkdir(parents=True)
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(b"one")
    key = scores_key(config_of(tmp_path), rows)
    path = tmp_path / "dev.scores.npz"
    save_scores(path, key, scored)
    back = load_scores(path, key)
    assert [(r.prompt, r.bytes, r.fold) for r in back] == [(r.prompt, r.bytes, r.fold) for r in scored]
    assert all(np.array_equal(a.logp, b.logp) and np.array_equal(a.prompt_logp, b.prompt_logp)
               for a, b in zip(back, scored))

    assert load_scores(tmp_path / "none.npz", key) is None
    assert scores_key(config_of(tmp_path), rows[:4]) != key  # a row fewer
    assert scores_key(config_of(tmp_path, second="t"), rows) != key  # a member renamed
    (tmp_path / "lora" / "adapter_model.safetensors").write_bytes(b"two")  # retrained at the same path
    retrained = scores_key(config_of(tmp_path), rows)
    assert retrained != key and load_scores(path, retrained) is None
