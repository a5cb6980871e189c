"""Every member implements actors/protocol.py's interface: each engine's actor its MemberActor (the data
plane's calls too), each in-process core and the tests' fake its Member. A call missing, misnamed or
taking other parameters anywhere fails here. Sync or async is each implementation's own. The proto
describes only what is served: the client-facing Ensemble service."""
import inspect

import pytest

from mixserve.actors.protocol import Member, MemberActor
from mixserve.engines import ENGINES
from mixserve.proto import pb2
from tests.fakes import FakeCore

CALLS = [name for name, value in vars(Member).items() if callable(value) and not name.startswith("_")]
ACTOR_CALLS = CALLS + [name for name, value in vars(MemberActor).items() if callable(value) and not name.startswith("_")]
ACTORS = [engine.actor_class() for engine in ENGINES.values()]  # vllm itself is imported in the actor only
CORES = [engine.core_class() for engine in ENGINES.values() if engine.core is not None] + [FakeCore]


def parameters(method) -> list[tuple[str, object]]:
    """(name, default) of each parameter after self; not the one Ray adds to an actor class's methods once
    an actor of it was made in this process (the test order must not matter)."""
    return [(p.name, p.default) for p in list(inspect.signature(method).parameters.values())[1:]
            if p.name != "_ray_trace_ctx"]


def test_the_protocol_has_the_calls_the_router_makes():
    assert CALLS == ["info", "prompt_ids", "pieces", "step", "whole", "release", "live_sessions", "score", "stats"]


def test_the_actor_adds_the_data_planes_calls():
    assert ACTOR_CALLS == CALLS + ["data_plane", "data_plane_stats", "data_plane_trace", "watch"]


@pytest.mark.parametrize("member, protocol, calls", [(cls, MemberActor, ACTOR_CALLS) for cls in ACTORS]
                         + [(cls, Member, CALLS) for cls in CORES], ids=lambda x: getattr(x, "__name__", ""))
def test_every_member_has_every_call_with_its_parameters(member, protocol, calls):
    missing = [name for name in calls if not callable(getattr(member, name, None))]
    assert missing == [], f"{member.__name__} lacks {missing} of actors/protocol.py's {protocol.__name__}"
    differ = {name: parameters(getattr(member, name)) for name in calls
              if parameters(getattr(member, name)) != parameters(getattr(protocol, name))}
    assert differ == {}, f"{member.__name__}'s parameters differ from actors/protocol.py's {protocol.__name__}"


@pytest.mark.parametrize("actor", ACTORS, ids=lambda cls: cls.__name__)
def test_an_actor_streams_its_steps(actor):
    assert inspect.isasyncgenfunction(actor.step)


def test_the_proto_describes_only_the_served_service():
    assert list(pb2.DESCRIPTOR.services_by_name) == ["Ensemble"]
