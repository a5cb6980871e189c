"""The data plane's codec, before and after it became typed msgspec frames (docs/studies/wire-codec.md).

Times one encode and one decode of three frames as each codec carries them: a step (one segment of 8
ids), a part (one token) and a ce row (a 49,152-entry float32 distribution, SmolLM2's vocabulary). The
old codec is the hand-written one actors/wire.py had until the change, copied here with the dataclass
messages it coded: it is gone from the product.

    .venv/bin/python docs/studies/wire_codec.py
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import msgpack
import numpy as np

from mixserve.actors import wire
from mixserve.actors.messages import SamplingParams, Segment, StepRequest, StepResult


# -- the old codec and messages, as they were -------------------------------------------------------
@dataclass(frozen=True)
class OldSampling:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    stop: tuple = ()
    seed: int = 0


@dataclass(frozen=True)
class OldSegment:
    ids: tuple = ()
    text: bytes | None = None
    own: bool = False


@dataclass(frozen=True)
class OldRequest:
    session: str
    delta: tuple
    first_step: int
    steps: int
    sampling: OldSampling
    distribution: bool = False
    fresh: bool = False
    heal: bool = False


@dataclass(frozen=True)
class OldResult:
    tokens: list = field(default_factory=list)
    pieces: list = field(default_factory=list)
    finish: str = ""
    probs: np.ndarray | None = None
    forwards: int = 0


_CLASSES = (OldSampling, OldSegment, OldRequest, OldResult)
_CODES = {cls: 2 + i for i, cls in enumerate(_CLASSES)}
_LISTS = {cls: {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("list")} for cls in _CLASSES}


def _default(obj):
    if isinstance(obj, np.ndarray):
        return msgpack.ExtType(1, msgpack.packb((obj.dtype.str, obj.shape, obj.tobytes())))
    return msgpack.ExtType(_CODES[type(obj)], old_dumps([getattr(obj, f.name) for f in dataclasses.fields(obj)]))


def _ext(code: int, data: bytes):
    if code == 1:
        dtype, shape, raw = msgpack.unpackb(data, use_list=False)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    cls = _CLASSES[code - 2]
    values = old_loads(data)
    return cls(*(list(v) if f.name in _LISTS[cls] else v for f, v in zip(dataclasses.fields(cls), values)))


def old_dumps(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def old_loads(data: bytes):
    return msgpack.unpackb(data, ext_hook=_ext, use_list=False, raw=False, strict_map_key=False)


# -- the measurement ---------------------------------------------------------------------------------
def per_call_us(fn, n: int) -> float:
    fn()
    best = float("inf")
    for _ in range(5):  # the best of five batches: the least disturbed by other work on the machine
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


def main() -> None:
    probs = np.random.default_rng(0).random(49_152, dtype=np.float32)
    ids, stop = (1, 2, 3, 4, 5, 6, 7, 8), ("\n\n",)
    old = {"step": [1, 5, OldRequest("s" * 22, (OldSegment(ids),), 100, 8, OldSampling(0.7, 0.9, 0, 128, stop, 1))],
           "part": [7, 5, OldResult([1234], [b" hello"], "", None, 1)],
           "ce row": [9, 5, OldResult([], [], "", probs, 1)]}
    new = {"step": wire.Step(5, StepRequest("s" * 22, (Segment(ids),), 100, 8, SamplingParams(0.7, 0.9, 0, 128, stop, 1))),
           "part": wire.Part(5, StepResult([1234], [b" hello"], "", None, 1)),
           "ce row": wire.Done(5, StepResult([], [], "", probs, 1))}
    decode = {"step": wire.to_member, "part": wire.to_router, "ce row": wire.to_router}
    print("| frame | hand-written codec, µs | msgspec frames, µs | ratio | bytes before | bytes after |")
    print("|---|---|---|---|---|---|")
    for name in old:
        n = 500 if name == "ce row" else 20_000
        before = per_call_us(lambda: old_loads(old_dumps(old[name])), n)
        after = per_call_us(lambda: decode[name](wire.encode(new[name])), n)
        print(f"| {name} | {before:.2f} | {after:.2f} | {before / after:.1f}x | {len(old_dumps(old[name])):,} | "
              f"{len(wire.encode(new[name])):,} |")


if __name__ == "__main__":
    main()
