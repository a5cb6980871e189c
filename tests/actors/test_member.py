"""The member core on a tiny model, in process: caching is invisible, catch-up is exact."""
import pytest
import torch

from mixserve.actors import packed
from mixserve.references import resolve
from mixserve.actors.member import MemberCore
from mixserve.actors.messages import InputRefused, SamplingParams, Segment, SessionLost, StepRequest
from mixserve.actors.sampling import pick


@pytest.fixture(scope="module")
def member(tiny_dir):
    return MemberCore("a", resolve(str(tiny_dir / "a")))


def step(member, session, delta=(), first=0, steps=1, **sampling):
    # A delta that starts with the prompt opens the session, as the router's first contact does.
    fresh = first == 0 and bool(delta)
    return member.step(StepRequest(session, tuple(delta), first, steps, SamplingParams(**sampling), fresh=fresh))


def reference_logp(member, ids):
    """Next-token log-probs from transformers' own attention over the whole sequence, no cache."""
    member.model.set_attn_implementation("sdpa")
    try:
        with torch.inference_mode():
            logits = member.model(torch.tensor([ids])).logits[0, -1, : member.book.vocab_size]
    finally:
        member.model.set_attn_implementation(packed.ATTENTION)
    return torch.log_softmax(logits.float(), -1)


def test_cached_decoding_equals_full_recompute_through_catch_up(member):
    prompt = member.prompt_ids("the cat")
    out = step(member, "s1", [Segment(ids=tuple(prompt))], 0, 5, seed=3)
    other = [7, 8, 9]  # tokens another member produced: a catch-up delta
    out2 = step(member, "s1", [Segment(ids=tuple(other))], 5, 4, seed=3)
    ids = prompt + out.tokens + other
    for t, token in enumerate(out2.tokens, start=5):
        assert token == pick(reference_logp(member, ids), SamplingParams(seed=3), t)
        ids.append(token)
    assert out.forwards == 5 and out2.forwards == 4
    member.release("s1")


def test_one_run_equals_steps_one_at_a_time(member):
    prompt = Segment(ids=tuple(member.prompt_ids("a dog")))
    run = step(member, "r", [prompt], 0, 8, seed=11).tokens
    singles = [step(member, "s", [prompt], 0, 1, seed=11).tokens[0]]
    singles += [step(member, "s", (), t, 1, seed=11).tokens[0] for t in range(1, 8)]
    assert run == singles
    assert member.release("r") and member.release("s") and member.live_sessions() == 0


def test_text_from_another_tokenizer_is_retokenized_at_the_boundary(member):
    prompt = member.prompt_ids("the")
    out = step(member, "t", [Segment(ids=tuple(prompt))], 0, 2, seed=5)
    step(member, "t", [Segment(text=" moon river".encode()), Segment(text="é".encode()[:1])], 2, 1, seed=5)
    ids = member.book.sessions["t"].ids
    text = b"".join(member.book.codec.piece(i) for i in ids[len(prompt):-1])
    assert text == b"".join(member.book.codec.piece(i) for i in out.tokens) + " moon river".encode() + b"\xc3"
    assert ids[: len(prompt)] == prompt  # the prompt is never re-tokenized
    member.release("t")


def test_full_context_finishes_with_length(member):
    out = step(member, "c", [Segment(ids=(5,) * (member.book.context_length - 1))], 0, 5, seed=1)
    assert out.finish == "length" and len(out.tokens) == 1
    member.release("c")


def test_unknown_session_without_the_prompt_is_session_lost(member):
    with pytest.raises(SessionLost):
        step(member, "never-opened", (), 3, 1)


def test_least_recently_used_sessions_are_evicted_past_max_sessions(tiny_dir):
    small = MemberCore("a", resolve(str(tiny_dir / "a")), max_sessions=2)
    for name in ("x", "y", "z"):
        step(small, name, [Segment(ids=(5, 6))], 0, 1, seed=1)
    assert list(small.book.sessions) == ["y", "z"] and small.book.evictions == 1
    with pytest.raises(SessionLost):
        step(small, "x", (), 1, 1)


def test_score_gives_each_tokens_log_prob_given_the_ones_before(member):
    ids = member.prompt_ids("the cat sat on the mat")
    live = member.live_sessions()
    scores = member.score(ids, top=3)
    assert scores.token_logprobs.shape == (len(ids) - 1,) and scores.top_ids.shape == (len(ids) - 1, 3)
    for t in range(1, len(ids)):
        ref = reference_logp(member, ids[:t])
        assert abs(float(scores.token_logprobs[t - 1]) - float(ref[ids[t]])) < 1e-4
        assert scores.top_ids[t - 1].tolist() == torch.topk(ref, 3).indices.tolist()
    rows = member.score(ids, rows=True).rows
    assert rows.shape == (len(ids) - 1, member.book.vocab_size)
    assert member.live_sessions() == live  # scoring opens no session


@pytest.mark.parametrize("prefix", [b" th", b"e", b"\xff", b"zzzzzz"])
def test_extending_finds_every_token_that_starts_with_the_bytes(member, prefix):
    expected = sorted(i for i, p in enumerate(member.book.codec.pieces) if p.startswith(prefix))
    assert sorted(member.book.codec.extending(prefix).tolist()) == expected


def test_token_healing_respells_the_word_another_tokenizer_left_open(member):
    prompt = tuple(member.prompt_ids("the cat"))
    text = b" the r"  # written by another member, ending mid-word
    own = member.book.codec.encode(text)  # how this member spells the other's text: its last token is backed off
    extended = 0
    for seed in range(8):
        plain = member.step(StepRequest("plain", (Segment(ids=prompt), Segment(text=text)), 0, 3,
                                        SamplingParams(seed=seed), fresh=True))
        healed = member.step(StepRequest("healed", (Segment(ids=prompt), Segment(text=text)), 0, 3,
                                         SamplingParams(seed=seed), fresh=True, heal=True))
        first = member.book.sessions["healed"].ids[len(prompt) + len(own) - 1]  # the healed token, in its place
        # It starts with the backed-off bytes: either the same token (the word ends there) or a longer one.
        assert member.book.codec.piece(first).startswith(member.book.codec.piece(own[-1]))
        extended += member.book.codec.piece(first) != member.book.codec.piece(own[-1])
        # Either way the session's tokens spell exactly the log: prompt, the other's text, our tokens.
        for name, out in (("plain", plain), ("healed", healed)):
            ids = member.book.sessions[name].ids
            assert b"".join(member.book.codec.piece(i) for i in ids[len(prompt):]) == text + b"".join(out.pieces)
        member.release("plain")
        member.release("healed")
    assert extended  # some seeds re-spelt the word with a longer token: healing did something


def test_a_healed_step_always_writes_new_text(member):
    """When healing picks the backed-off token itself (the word ends where the other member ended it),
    the step samples again instead of returning no text."""
    prompt = tuple(member.prompt_ids("the cat"))
    resampled = 0
    for seed in range(12):
        out = member.step(StepRequest(f"h{seed}", (Segment(ids=prompt), Segment(text=b" the")), 0, 2,
                                      SamplingParams(seed=seed), fresh=True, heal=True))
        assert len(out.tokens) == 2 and out.forwards >= 2
        assert out.pieces[0] or out.tokens[0] in member.book.eos_ids, seed
        resampled += out.forwards > 2
        member.release(f"h{seed}")
    assert resampled > 0  # the case under test happened


def test_messages_a_chat_template_refuses_are_the_requests_fault(member):
    """A template's own rule (Gemma's: roles must alternate) and a member with no template refuse the
    input as InputRefused, the router's 400 naming the member (router/calls.py), not a member failure."""
    tokenizer = member.book.tokenizer
    kept = tokenizer.chat_template
    try:
        tokenizer.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
        with pytest.raises(InputRefused, match="roles must alternate"):
            member.prompt_ids(messages=[{"role": "assistant", "content": "hi"}])
        tokenizer.chat_template = None
        with pytest.raises(InputRefused, match="no chat template"):
            member.prompt_ids(messages=[{"role": "user", "content": "hi"}])
    finally:
        tokenizer.chat_template = kept
    assert member.prompt_ids(messages=[{"role": "user", "content": "hi"}])  # the real template still serves
