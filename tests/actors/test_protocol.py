"""Every member implements actors/protocol.py's Member (each engine's actor and in-process core, and
the tests' fake), and proto/mixserve.proto's `service Member` names the same calls: a call missing,
misnamed or taking other parameters anywhere fails here. Sync or async is each implementation's own."""
import inspect
import re

import pytest

from mixserve.actors.protocol import Member
from mixserve.engines import ENGINES
from mixserve.proto import pb2
from tests.fakes import FakeCore

CALLS = [name for name, value in vars(Member).items() if callable(value) and not name.startswith("_")]
ACTORS = [engine.actor_class() for engine in ENGINES.values()]  # vllm itself is imported in the actor only
CORES = [engine.core_class() for engine in ENGINES.values() if engine.core is not None] + [FakeCore]


def parameters(method) -> list[tuple[str, object]]:
    """(name, default) of each parameter after self; not the one Ray adds to an actor class's methods once
    an actor of it was made in this process (the test order must not matter)."""
    return [(p.name, p.default) for p in list(inspect.signature(method).parameters.values())[1:]
            if p.name != "_ray_trace_ctx"]


def snake(rpc: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower()


def test_the_protocol_has_the_calls_the_router_makes():
    assert CALLS == ["info", "prompt_ids", "pieces", "step", "whole", "release", "live_sessions", "score", "stats"]


@pytest.mark.parametrize("member", ACTORS + CORES, ids=lambda cls: cls.__name__)
def test_every_member_has_every_call_with_its_parameters(member):
    missing = [name for name in CALLS if not callable(getattr(member, name, None))]
    assert missing == [], f"{member.__name__} lacks {missing} of actors/protocol.py's Member"
    differ = {name: parameters(getattr(member, name)) for name in CALLS
              if parameters(getattr(member, name)) != parameters(getattr(Member, name))}
    assert differ == {}, f"{member.__name__}'s parameters differ from actors/protocol.py's Member"


@pytest.mark.parametrize("actor", ACTORS, ids=lambda cls: cls.__name__)
def test_an_actor_streams_its_steps(actor):
    assert inspect.isasyncgenfunction(actor.step)


def test_the_proto_service_names_the_protocols_calls_and_parameters():
    service = pb2.DESCRIPTOR.services_by_name["Member"]
    assert [snake(rpc.name) for rpc in service.methods] == CALLS
    for rpc in service.methods:
        params = list(inspect.signature(getattr(Member, snake(rpc.name))).parameters.values())[1:]
        if [p.annotation for p in params] != [rpc.input_type.name]:  # not one message (StepRequest) whole
            assert [f.name for f in rpc.input_type.fields] == [p.name for p in params], rpc.name
        assert rpc.server_streaming == (rpc.name == "Step"), rpc.name
