"""A request's failure is its own (docs/architecture.md invariant 8), against fake members: a request
that does not fit a member's context is refused with a 400 naming the member before any member works,
whatever the method or a session's log; a member that refuses a request's input fails that request
alone; eager sync's catch-ups are bounded like every call (invariant 6)."""
import asyncio
import time

import pytest

from mixserve.actors import wire
from mixserve.actors.messages import InputRefused, StepResult
from mixserve.router.clients import LocalMember
from mixserve.router.request import ContextError, GenerateRequest, RequestError, UnavailableError
from mixserve.router.snapshot import SessionStore
from tests.fakes import FakeCore, fake_router

PROMPT = "hello"  # 5 tokens: the fakes' tokens are bytes


def build(context_b: int, method: str = "me", **keys):
    cores = {"a": FakeCore("a"), "b": FakeCore("b", context=context_b)}
    return fake_router(cores, {"a": 0.5, "b": 0.5}, method=method, **keys), cores


def generate(router, **fields):
    return asyncio.run(router.generate(GenerateRequest(seed=3, **fields)))


@pytest.mark.parametrize("fields", [{"method": "me"}, {"method": "ce"}, {"model": "b"}], ids=["me", "ce", "single"])
def test_a_request_past_a_members_context_is_a_400_naming_it_before_any_member_works(fields):
    router, cores = build(context_b=32)
    with pytest.raises(ContextError) as refused:
        generate(router, prompt=PROMPT, max_tokens=28, **fields)
    assert refused.value.status == 400 and refused.value.param == "max_tokens"
    assert refused.value.code == "context_length_exceeded"
    assert str(refused.value) == ("the prompt is 5 tokens and max_tokens is 28: 33 tokens for member 'b', whose "
                                  "context is 32 tokens; ask for at most 27 tokens")
    assert [core.received for core in cores.values()] == [[], []]  # no member was sent anything
    fits = generate(router, prompt=PROMPT, max_tokens=27, **fields).choices[0]
    assert len(fits.token_ids) == 27 and fits.finish_reason == "length"


def test_a_prompt_that_fills_a_members_context_names_the_prompt():
    router, cores = build(context_b=5)
    with pytest.raises(ContextError, match="member 'b', whose context is 5 tokens; shorten the prompt") as refused:
        generate(router, prompt=PROMPT, max_tokens=1)
    assert refused.value.param == "prompt" and cores["a"].received == []


def test_a_session_continued_past_a_members_context_is_a_400_before_any_member_works():
    router, cores = build(context_b=32, store=LocalMember(SessionStore()))
    generate(router, prompt=PROMPT, max_tokens=20, session="chat")
    sent = [len(core.received) for core in cores.values()]
    with pytest.raises(ContextError) as refused:
        generate(router, session="chat", max_tokens=8)
    assert str(refused.value) == ("session 'chat' holds 25 tokens and max_tokens is 8: 33 tokens for member 'b', "
                                  "whose context is 32 tokens; ask for at most 7 tokens")
    assert [len(core.received) for core in cores.values()] == sent
    again = generate(router, session="chat", max_tokens=7).choices[0]
    assert len(again.token_ids) == 7  # the session was left as it was: it goes on


class Refusing(FakeCore):
    """A member whose own check refuses one kind of input (vLLM refuses some at add time): prompts
    holding the byte 0x7f."""

    def step(self, req):
        if any(0x7F in seg.ids for seg in req.delta):
            raise InputRefused("no 0x7f here")
        return super().step(req)


def test_a_member_that_refuses_one_requests_input_fails_that_request_alone():
    cores = {"a": Refusing("a"), "b": FakeCore("b")}
    router = fake_router(cores, {"a": 0.5, "b": 0.5})
    good = [GenerateRequest(prompt=p, max_tokens=30, seed=i) for i, p in enumerate(["one", "two", "three"])]
    bad = GenerateRequest(prompt="bad\x7f", max_tokens=30, seed=9, method="ce")

    async def together():
        return await asyncio.gather(*(router.generate(r) for r in [*good, bad]), return_exceptions=True)

    *served, refused = asyncio.run(together())
    assert isinstance(refused, RequestError) and refused.status == 400
    assert str(refused) == "member 'a' refused this request: no 0x7f here"
    alone = [asyncio.run(router.generate(r)) for r in good]
    assert [r.choices[0].text for r in served] == [r.choices[0].text for r in alone]
    assert [c.live_sessions() for c in cores.values()] == [0, 0]


@pytest.mark.parametrize("error", [InputRefused("too long"), wire.error(wire.Error(0, "InputRefused", "too long"))],
                         ids=["in process", "over the data plane"])
def test_a_members_refusal_is_a_400_naming_it_however_it_arrives(error):
    router, _ = build(context_b=32)

    async def refuse():
        raise error

    with pytest.raises(RequestError) as refused:
        asyncio.run(router.calls.bounded("b", refuse()))
    assert refused.value.status == 400 and str(refused.value) == "member 'b' refused this request: too long"


class Pausable(LocalMember):
    """A fake member reached as a remote one is: a run streams token by token. After `answered`
    calls it stops answering (a stopped process: SIGSTOP, a hung device)."""

    def __init__(self, core, answered: int = 1 << 30):
        super().__init__(core)
        self.answered = answered

    async def stream(self, req):
        if self.answered == 0:
            await asyncio.Event().wait()
        self.answered -= 1
        whole = await self.call("step", req)
        for i, (token, piece) in enumerate(zip(whole.tokens, whole.pieces)):
            await asyncio.sleep(0)
            yield StepResult([token], [piece], whole.finish if i == len(whole.tokens) - 1 else "", forwards=1)


def test_with_eager_sync_a_member_that_stops_answering_fails_the_request_within_the_bound():
    """b answers its first run, then nothing: the catch-ups eager sync sends it while a decodes go
    unanswered, and b's next run waits for them first. It fails with 503 after member_retry_s,
    where it waited for b for as long as b stayed silent."""
    router, cores = build(context_b=1 << 16, eager_sync=True, member_retry_s=1)
    router.members["a"], router.members["b"] = Pausable(cores["a"]), Pausable(cores["b"], answered=1)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="member 'b' did not answer within 1 s") as failed:
        asyncio.run(asyncio.wait_for(router.generate(GenerateRequest(prompt=PROMPT, max_tokens=60, seed=3)), 60))
    assert failed.value.status == 503 and time.monotonic() - started < 10
