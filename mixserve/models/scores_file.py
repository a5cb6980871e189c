"""The members' scores of a dev split, kept beside it (`mixserve weights fit --scores`): scoring every
reference with every member is most of a fit's time (6 of the experts' 8 minutes), and a refit that
only changes how the gate is chosen needs the same numbers again.

A file is reused only when its key matches: a digest of the dev rows as read and of each member's
name, engine, model and adapter weights (their bytes, so that a retrained adapter at the same path
is scored again). Anything else is scored afresh and the file rewritten.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixserve.config import EnsembleConfig

SCORED_FIELDS = ("prompt", "bytes", "fold")


@dataclass
class Scored:
    """A dev row as the members scored it: what the fit (mixserve/models/weights.py) works on."""
    prompt: str
    logp: np.ndarray  # (members, reference tokens): log p_i of each reference token
    prompt_logp: np.ndarray  # (members,): log p_i of the prompt's tokens after the first
    bytes: int  # the reference's length in UTF-8 bytes
    fold: int | None = None  # the cross-validation fold the dev file puts it in; None: dealt at random


def scores_key(config: EnsembleConfig, rows: list[dict]) -> str:
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode())
    for m in config.members:
        digest.update(json.dumps([m.name, m.engine, m.source.kind, m.source.path, m.dtype]).encode())
        if m.source.adapter:
            for f in sorted(Path(m.source.adapter).glob("adapter*")):
                digest.update(f.name.encode())
                digest.update(hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def load_scores(path: str | Path, key: str):
    """The scored rows kept in `path` under `key`, or None when there are none (no file, another key)."""
    path = Path(path)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != key:
            return None
        meta = json.loads(str(f["rows"]))
        ends = np.cumsum(f["lengths"])
        logp = np.split(f["logp"], ends[:-1], axis=1)
        return [Scored(m["prompt"], lp, pl, m["bytes"], m["fold"]) for m, lp, pl in zip(meta, logp, f["prompt_logp"])]


def save_scores(path: str | Path, key: str, scored: list) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps([{k: getattr(r, k) for k in SCORED_FIELDS} for r in scored])
    with path.open("wb") as f:  # np.savez would add .npz to a name without it
        np.savez(f, key=np.array(key), rows=np.array(meta), lengths=np.array([r.logp.shape[1] for r in scored]),
                 logp=np.concatenate([r.logp for r in scored], axis=1),
                 prompt_logp=np.stack([r.prompt_logp for r in scored]))
