"""The data plane's bytes: msgpack frames for the router <-> member messages (actors/messages.py).

A frame is [kind, id, body], its kind one of `Kind` (sent as its number). Dataclasses travel as an
ext of their field values, numpy arrays as an ext of dtype, shape and bytes: the ce distribution (a
vocabulary of float32) is one copy out and one view back. A member's exception travels as its type
name and message (the router raises the same, see `error`).
"""
from __future__ import annotations

import dataclasses
import enum
import functools

import msgpack
import numpy as np

from .messages import SamplingParams, Segment, SessionLost, StepRequest, StepResult



class Kind(enum.IntEnum):
    """What a frame is, on both ends of the data plane (actors/dataplane.py, router/dataplane.py)."""

    # router -> member
    STEP = 1  # a run (StepRequest): answered by PARTs, then END
    WHOLE = 2  # a run with one part (a ce distribution, a one-token run): answered by one DONE
    OPEN = 3  # a session's next run opened ahead (StepRequest); its last FEED starts it, answered as a STEP
    FEED = 4  # an open run's log as it grows: (delta, fresh, final); no answer
    RELEASE = 5  # forget a session (its id): answered by one DONE, whether the member held it
    CANCEL = 6  # drop a call: the caller stopped reading; no answer
    # member -> router
    PART = 7  # a run's tokens so far (StepResult)
    END = 8  # a run is over
    DONE = 9  # a WHOLE's or RELEASE's answer
    ERROR = 10  # the call failed: (exception type name, message)


_ARRAY = 1
_CLASSES = (SamplingParams, Segment, StepRequest, StepResult)  # ext codes 2, 3, ...: append only
_CODES = {cls: 2 + i for i, cls in enumerate(_CLASSES)}
_LISTS = {cls: {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("list")} for cls in _CLASSES}


def _default(obj):
    if isinstance(obj, np.ndarray):
        return msgpack.ExtType(_ARRAY, msgpack.packb((obj.dtype.str, obj.shape, obj.tobytes())))
    code = _CODES.get(type(obj))
    if code is None:
        raise TypeError(f"the data plane does not carry {type(obj).__name__}")
    return msgpack.ExtType(code, dumps([getattr(obj, f.name) for f in dataclasses.fields(obj)]))


def _ext(code: int, data: bytes):
    if code == _ARRAY:
        dtype, shape, raw = msgpack.unpackb(data, use_list=False)
        return np.frombuffer(raw, dtype=np.dtype(dtype)).reshape(shape)
    cls = _CLASSES[code - 2]
    values = loads(data)
    lists = _LISTS[cls]
    return cls(*(list(v) if f.name in lists else v for f, v in zip(dataclasses.fields(cls), values)))


def dumps(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def loads(data: bytes):
    # Arrays as tuples: the messages' sequences are tuples (frozen dataclasses); lists are restored above.
    return msgpack.unpackb(data, ext_hook=_ext, use_list=False, raw=False, strict_map_key=False)


@functools.cache
def _remote_type(name: str) -> type[Exception]:
    """A member's exception type, by name, on the router's side: MemberFailedError's 500 names it."""
    return type(name, (Exception,), {"__module__": "member"})


def error(name: str, message: str) -> Exception:
    """The exception a member raised, rebuilt from its frame. SessionLost is the router's own (it
    replays the session); any other is the member's fault and fails the request with its name."""
    return SessionLost(message) if name == SessionLost.__name__ else _remote_type(name)(message)
