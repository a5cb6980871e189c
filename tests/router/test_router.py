"""The router against fake members: lazy sync, ce mixing, determinism, release, finish reasons."""
import asyncio
import time

import pytest
import torch

from mixserve.router.clients import LocalMember, MemberDown
from mixserve.serving.openai_http import error_body
from mixserve.router.request import GenerateRequest, MemberFailedError, RequestError, UnavailableError
from tests.fakes import EOS, FakeCore, fake_router


def build(weights, method="me", runs=True, tokenizers=None, eos_weight=0.0, missing=None, **keys):
    cores = {m: FakeCore(m, (tokenizers or {}).get(m, "bytes"), eos_weight, (missing or {}).get(m, ()))
             for m in weights}
    return fake_router(cores, weights, method=method, run_length_scheduling=runs, **keys), cores


def generate(router, **fields):
    return asyncio.run(router.generate(GenerateRequest(**fields)))


def test_each_member_receives_exactly_its_pending_tokens_once():
    router, cores = build({"a": 0.5, "b": 0.3, "c": 0.2})
    out = generate(router, prompt="hi", max_tokens=80, seed=4)
    tokens, members = out.choices[0].token_ids, out.choices[0].members
    assert len(tokens) == 80 and set(members) == {"a", "b", "c"}
    for name, core in cores.items():
        sent = [[t for seg in delta for t in seg.ids] for _, delta in core.received]
        # Replay the log: a run by `name` starting at step s must be sent log[seen:s], nothing else.
        expected, seen, prompt = [], 0, list(b"hi")
        for s in range(len(tokens)):
            if members[s] == name and (s == 0 or members[s - 1] != name):
                expected.append((prompt if not expected else []) + tokens[seen:s])
            if members[s] == name:
                seen = s + 1
        assert sent == expected
        flat = [t for delta in sent for t in delta]
        assert len(flat) == len(prompt) + sum(m != name for m in members[:seen])  # no token twice


def test_run_length_scheduling_changes_round_trips_not_text():
    with_runs, _ = build({"a": 0.5, "b": 0.5}, runs=True)
    per_step, _ = build({"a": 0.5, "b": 0.5}, runs=False)
    a = generate(with_runs, prompt="x", max_tokens=200, seed=1)
    b = generate(per_step, prompt="x", max_tokens=200, seed=1)
    assert a.choices[0].token_ids == b.choices[0].token_ids
    assert a.choices[0].members == b.choices[0].members
    assert b.usage.router_round_trips == 200
    assert a.usage.router_round_trips < 0.65 * 200  # about 1 - sum(w^2) = 0.5 per token
    assert a.usage.member_forward_calls == 200


def test_greedy_ce_takes_the_argmax_of_the_weighted_mixture():
    router, cores = build({"a": 0.3, "b": 0.7}, method="ce")
    out = generate(router, prompt="q", max_tokens=12, temperature=0)
    last = ord("q")
    for token in out.choices[0].token_ids:
        mixture = 0.3 * cores["a"].logp(last).exp() + 0.7 * cores["b"].logp(last).exp()
        assert token == int(torch.argmax(mixture))
        last = token
    assert set(out.choices[0].members) == {"mixture"}
    assert out.usage.member_forward_calls == 24


def test_ce_across_tokenizers_mixes_tokens_with_the_same_bytes():
    """Two tokenizers that spell every byte alike: the union vocabulary gives the shared mixture,
    and each member is sent the mixture's tokens as text."""
    shared, _ = build({"a": 0.3, "b": 0.7}, method="ce")
    union, cores = build({"a": 0.3, "b": 0.7}, method="ce", tokenizers={"b": "other-bytes"})
    expected = generate(shared, prompt="q", max_tokens=12, temperature=0).choices[0].text
    assert generate(union, prompt="q", max_tokens=12, temperature=0).choices[0].text == expected
    assert any(seg.text == expected[:1].encode() for _, delta in cores["b"].received for seg in delta)


def test_ce_across_tokenizers_never_samples_bytes_a_member_cannot_spell():
    rare = range(0x80, 0x100)  # b has no token for any byte past ASCII
    router, _ = build({"a": 0.5, "b": 0.5}, method="ce", tokenizers={"b": "other-bytes"}, missing={"b": rare})
    texts = [c.text.encode() for c in generate(router, prompt="q", max_tokens=20, n=20, seed=1).choices]
    assert all(byte < 0x80 for text in texts for byte in text) and sum(map(len, texts)) == 400


def test_ce_is_refused_for_members_that_cannot_spell_plain_text():
    router, _ = build({"a": 0.5, "b": 0.5}, method="ce", tokenizers={"b": "words"}, missing={"b": b" e"})
    with pytest.raises(RequestError, match=r"members \['b'\] have no token for some bytes of plain text"):
        generate(router, prompt="q", max_tokens=2)


def test_same_seed_same_text_with_other_sessions_in_flight():
    router, _ = build({"a": 0.5, "b": 0.5})
    alone = [generate(router, prompt="p", max_tokens=30, seed=s).choices[0].token_ids for s in range(6)]

    async def together():
        reqs = [GenerateRequest(prompt="p", max_tokens=30, seed=s) for s in range(6)]
        return await asyncio.gather(*(router.generate(r) for r in reqs))

    assert [r.choices[0].token_ids for r in asyncio.run(together())] == alone
    assert generate(router, prompt="p", max_tokens=30, seed=0, n=6).choices[5].token_ids == alone[5]


def test_sessions_are_released_on_success_and_on_failure():
    router, cores = build({"a": 0.5, "b": 0.5})
    generate(router, prompt="p", max_tokens=20, n=5)
    assert all(c.live_sessions() == 0 for c in cores.values())

    def broken(req):
        raise RuntimeError("member b crashed")

    cores["b"].step = broken
    with pytest.raises(MemberFailedError) as e:  # a 500 that names the member, not a bare one
        generate(router, prompt="p", max_tokens=40, seed=2)
    assert str(e.value) == "member 'b' failed on this request: RuntimeError: member b crashed"
    assert e.value.status == 500 and error_body(e.value)["error"]["type"] == "server_error"
    assert all(c.live_sessions() == 0 for c in cores.values())


def test_finish_reasons_eos_stop_length():
    router, _ = build({"a": 1.0}, eos_weight=1e30)  # EOS all but certain: 1 - 1e-20 or so
    out = generate(router, prompt="p", max_tokens=10, seed=0)
    assert out.choices[0].finish_reason == "stop" and out.choices[0].token_ids == [EOS]
    assert out.choices[0].text == ""
    router, _ = build({"a": 0.5, "b": 0.5})
    full = generate(router, prompt="p", max_tokens=40, seed=3).choices[0]
    assert full.finish_reason == "length"
    stop = next(ch for ch in full.text[10:] if ch.isascii())  # fake tokens are random bytes
    cut = generate(router, prompt="p", max_tokens=40, seed=3, stop=(stop,)).choices[0]
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.index(stop)]


def collect(router, **fields):
    async def run():
        return [item async for item in router.stream(GenerateRequest(**fields))]

    items = asyncio.run(run())
    return items[:-1], items[-1]


def test_streamed_chunks_add_up_to_the_result_and_never_show_the_stop_string():
    router, _ = build({"a": 0.5, "b": 0.5})
    full = generate(router, prompt="p", max_tokens=60, seed=3, n=2).choices
    stop = next(ch for ch in full[0].text[20:] if ch.isascii() and ch.isalnum())
    chunks, result = collect(router, prompt="p", max_tokens=60, seed=3, n=2, stop=(stop,))
    for j, choice in enumerate(result.choices):
        mine = [c for c in chunks if c.index == j]
        assert "".join(c.text for c in mine) == choice.text and stop not in choice.text
        assert [t for c in mine for t in c.token_ids] == choice.token_ids
        assert [c.finish_reason for c in mine][-1] == choice.finish_reason
        assert all(c.finish_reason is None for c in mine[:-1])
        assert all(set(choice.members[k] for k in range(len(choice.members))) >= {c.member} for c in mine)


def test_closing_the_stream_early_frees_every_member():
    router, cores = build({"a": 0.5, "b": 0.5})

    async def read_two_chunks_then_leave():
        stream = router.stream(GenerateRequest(prompt="p", max_tokens=400, seed=1, n=4))
        seen = [await stream.__anext__(), await stream.__anext__()]
        await stream.aclose()
        return seen

    assert len(asyncio.run(read_two_chunks_then_leave())) == 2
    assert all(c.live_sessions() == 0 for c in cores.values())


@pytest.mark.parametrize("method, weights", [("single", {"a": 1.0}), ("me", {"a": 0.3, "b": 0.7}),
                                             ("ce", {"a": 0.3, "b": 0.7})])
def test_logprobs_are_the_member_or_the_mixture_at_every_position(method, weights):
    router, cores = build(weights, method=method)
    out = generate(router, prompt="hey", max_tokens=5, seed=2, logprobs=3, echo=True, temperature=0.5)
    choice, lp = out.choices[0], out.choices[0].logprobs
    ids = list(b"hey") + choice.token_ids
    assert lp.prompt_tokens == 3 and lp.tokens == [text_of(t) for t in ids]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert out.prompt_text == "hey"
    for t in range(1, len(ids)):
        p = sum(w * cores[m].logp(ids[t - 1]).exp() for m, w in weights.items())  # (vocab,)
        assert lp.token_logprobs[t] == pytest.approx(float(p[ids[t]].log()), abs=1e-5)
        best = torch.topk(p, 3)
        assert list(lp.top_logprobs[t]) == [text_of(int(i)) for i in best.indices]
        assert list(lp.top_logprobs[t].values()) == pytest.approx(best.values.log().tolist(), abs=1e-5)


def text_of(token: int) -> str:
    return chr(token) if token < 128 else f"bytes:\\x{token:02x}"  # the fakes' tokens are single bytes


def test_a_prompt_of_token_ids_is_the_same_as_its_text():
    router, _ = build({"a": 0.5, "b": 0.5})
    by_text = generate(router, prompt="hi", max_tokens=8, seed=3)
    by_ids = generate(router, prompt=list(b"hi"), max_tokens=8, seed=3)
    assert by_ids.choices[0].token_ids == by_text.choices[0].token_ids
    with pytest.raises(RequestError, match="token id 300; the vocabulary has 257"):
        generate(router, prompt=[104, 300], max_tokens=2)


@pytest.mark.parametrize("fields, message", [({"logprobs": 1}, "log-probabilities of an ensemble"),
                                             ({"prompt": [104, 105]}, "a prompt of token ids")])
def test_token_level_requests_need_one_tokenizer(fields, message):
    router, _ = build({"a": 0.5, "b": 0.5}, tokenizers={"b": "other-bytes"})
    with pytest.raises(RequestError, match=message + " needs members that share a tokenizer"):
        generate(router, **{"prompt": "hi", "max_tokens": 2, **fields})


def test_only_members_with_a_tokenizer_of_their_own_heal():
    router, cores = build({"a": 0.4, "b": 0.3, "c": 0.3}, tokenizers={"c": "other-bytes"})
    generate(router, prompt="hi", max_tokens=60, seed=2, token_healing=True)
    assert set(cores["c"].heal) == {True} and set(cores["a"].heal) | set(cores["b"].heal) == {False}
    generate(router, prompt="hi", max_tokens=60, seed=2)  # the config's default: off
    assert cores["c"].heal[-1] is False


def test_the_order_weights_are_given_in_changes_nothing():
    """A gRPC map keeps no order, nor need a client's JSON: {b, a} must draw what {a, b} draws (the
    soak found gRPC requests with weights answering other texts than the same over HTTP)."""
    router, _ = build({"a": 0.5, "b": 0.3, "c": 0.2})
    one = generate(router, prompt="hi", max_tokens=40, seed=7, weights={"a": 1, "b": 3})
    other = generate(router, prompt="hi", max_tokens=40, seed=7, weights={"b": 3, "a": 1})
    assert one.choices[0].members == other.choices[0].members and one.choices[0].text == other.choices[0].text
    assert set(one.choices[0].members) == {"a", "b"}


def test_a_member_slow_to_confirm_a_release_does_not_hold_the_request():
    """A restarting or paused member answers a release late; the request (and its admission slots)
    must end anyway, the release still on its way."""
    router, _ = build({"a": 0.5, "b": 0.5})
    silent = asyncio.Event()

    class Silent(LocalMember):
        def release(self, session, keep=False):
            return asyncio.ensure_future(silent.wait())  # sent, never answered

    router.members["a"] = Silent(router.members["a"].core)

    async def run():
        return await asyncio.wait_for(router.generate(GenerateRequest(prompt="hi", max_tokens=20, seed=3)), 10)

    started = time.monotonic()
    out = asyncio.run(run())
    assert "a" in out.choices[0].members and time.monotonic() - started < 5


def test_a_member_down_while_scoring_log_probs_is_named_alone():
    """Log-probs of an ensemble wait on several members at once; the 503 names the one that is down
    (the soak could not tell which member a "member 'a, b'" error was about)."""
    router, _ = build({"a": 0.5, "b": 0.5}, member_retry_s=0.3)

    class Down(LocalMember):
        def score(self, ids, top, rows):
            done = asyncio.get_running_loop().create_future()
            done.set_exception(MemberDown("The actor is restarting"))
            return done

    router.members["b"] = Down(router.members["b"].core)
    with pytest.raises(UnavailableError, match=r"^member 'b' is unavailable \(The actor is restarting\)"):
        generate(router, prompt="hi", max_tokens=6, seed=3, logprobs=1)
