"""Python stubs for mixserve.proto, generated on first use (import) with the installed grpcio-tools.

Generating them here, keyed by the proto's hash and the installed versions, means the stubs always
match the grpcio and protobuf that will load them (docs/architecture.md, "Environment facts").
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

PROTO = Path(__file__).with_name("mixserve.proto")


def _generate() -> Path:
    import grpc
    from google import protobuf

    key = hashlib.sha256(PROTO.read_bytes() + f"{grpc.__version__}:{protobuf.__version__}".encode()).hexdigest()[:16]
    root = Path(os.environ.get("MIXSERVE_CACHE", Path.home() / ".cache" / "mixserve"))
    out = root / "proto" / key
    if (out / "mixserve_pb2_grpc.py").exists():
        return out
    from grpc_tools import protoc

    tmp = out.with_name(f"{key}.tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", f"--grpc_python_out={tmp}", str(PROTO)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {PROTO}")
    try:
        tmp.rename(out)
    except OSError:  # another process won the race; its copy is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _load(name: str, folder: Path):
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # mixserve_pb2_grpc imports mixserve_pb2 by this name
    spec.loader.exec_module(module)
    return module


_folder = _generate()
pb2 = _load("mixserve_pb2", _folder)
pb2_grpc = _load("mixserve_pb2_grpc", _folder)
SERVICE = pb2.DESCRIPTOR.services_by_name["Ensemble"].full_name
