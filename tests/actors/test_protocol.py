"""Every member implements actors/protocol.py's interface: the member actor (actors/host.py, the same for
every engine) its MemberActor, the data plane's calls too; each engine, each in-process core and the
tests' fake its Member. A call missing, misnamed or
taking other parameters anywhere fails here. Sync or async is each implementation's own. The proto
describes only what is served: the client-facing Ensemble service."""
import inspect

import pytest

from mixserve.actors.host import MemberHost
from mixserve.actors.protocol import Member, MemberActor
from mixserve.engines import ENGINES
from mixserve.proto import pb2
from tests.fakes import FakeCore

CALLS = [name for name, value in vars(Member).items() if callable(value) and not name.startswith("_")]
ACTOR_CALLS = CALLS + [name for name, value in vars(MemberActor).items() if callable(value) and not name.startswith("_")]
ENGINES_ = [engine.engine_class() for engine in ENGINES.values()]  # vllm itself is imported in the engine only
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


@pytest.mark.parametrize("member, protocol, calls", [(MemberHost, MemberActor, ACTOR_CALLS)]
                         + [(cls, Member, CALLS) for cls in ENGINES_ + CORES], ids=lambda x: getattr(x, "__name__", ""))
def test_every_member_has_every_call_with_its_parameters(member, protocol, calls):
    missing = [name for name in calls if not callable(getattr(member, name, None))]
    assert missing == [], f"{member.__name__} lacks {missing} of actors/protocol.py's {protocol.__name__}"
    differ = {name: parameters(getattr(member, name)) for name in calls
              if parameters(getattr(member, name)) != parameters(getattr(protocol, name))}
    assert differ == {}, f"{member.__name__}'s parameters differ from actors/protocol.py's {protocol.__name__}"


@pytest.mark.parametrize("member", [MemberHost] + ENGINES_, ids=lambda cls: cls.__name__)
def test_the_actor_and_every_engine_stream_their_steps(member):
    assert inspect.isasyncgenfunction(member.step)


def test_no_engine_carries_a_transport():
    """The transport wraps the engine (actors/host.py), not the engine a transport."""
    carried = {cls.__name__: [n for n in ACTOR_CALLS[len(CALLS):] if hasattr(cls, n)] for cls in ENGINES_}
    assert carried == {cls.__name__: [] for cls in ENGINES_}


def test_the_proto_describes_only_the_served_service():
    assert list(pb2.DESCRIPTOR.services_by_name) == ["Ensemble"]
