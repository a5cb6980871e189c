"""`mixserve models tiny|bench`: random-initialised members, made offline in seconds.

tiny: a (Llama) and b (Qwen2) share one byte-level BPE tokenizer trained here; c (Llama) has its own,
different tokenizer. Weights are drawn with a wide init so next-token distributions are peaked and
differ between members: an ensemble of them is measurably not any one of them.

bench: two members of about 25 M parameters each (Llama and Qwen2, shared tokenizer), large enough
that the forward, not the serving overhead, dominates a step on one CPU thread, as on an accelerator.
They run in bfloat16, as accelerators serve: on a CPU with bf16 matrix units (AVX512-BF16, AMX) a
forward over 2-5 tokens then costs about what one token costs, as on a GPU, while float32 goes
through BLAS's one-row-at-a-time path below 5 rows and makes every ME catch-up cost k decodes.
A CPU without bf16 units emulates it slowly: set `dtype: float32` in bench.yaml there.
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


TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, initializer_range=0.5, max_position_embeddings=1024)
BENCH = dict(hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
             num_key_value_heads=4, initializer_range=0.02, max_position_embeddings=2048)


def _model(arch: str, vocab_size: int, seed: int, size: dict = TINY):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    shape = dict(vocab_size=vocab_size, eos_token_id=0, bos_token_id=None,
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
    return out


def make_bench(out: str | Path) -> Path:
    """Members m1 and m2 and bench.yaml (me, equal weights, one CPU each, bfloat16)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(seed=1, vocab_size=384)
    for name, arch, seed in (("m1", "llama", 21), ("m2", "qwen2", 22)):
        _model(arch, len(tok), seed, BENCH).save_pretrained(out / name)
        tok.save_pretrained(out / name)
    config = {"members": [{"name": m, "model": m, "weight": 0.5, "dtype": "bfloat16",
                           "resources": {"num_cpus": 1}} for m in ("m1", "m2")],
              "method": "me"}
    (out / "bench.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out
