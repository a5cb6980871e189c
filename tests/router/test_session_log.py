"""The session state machine alone: deltas, cursors, stops (plain Python, milliseconds)."""
from mixserve.actors.messages import SamplingParams, Segment
from mixserve.router.session_log import MIXTURE, Session


def make(stop=(), max_tokens=10, tokenizers=None):
    tokenizers = tokenizers or {"a": "t1", "b": "t1", "c": "t2"}
    prompts = {"a": [1, 2], "b": [1, 2], "c": [9]}
    eos = {"t1": frozenset({0}), "t2": frozenset({0})}
    return Session(prompts, tokenizers, eos, SamplingParams(max_tokens=max_tokens, stop=stop))


def test_first_delta_is_the_prompt_then_only_unseen_tokens():
    s = make()
    assert s.take_delta("a") == (Segment(ids=(1, 2)),)
    s.record("a", [5, 6], [b"x", b"y"])
    assert s.take_delta("a") == ()  # a has seen its own tokens
    assert s.take_delta("b") == (Segment(ids=(1, 2)), Segment(ids=(5, 6)))
    s.record("b", [7], [b"z"])
    assert s.take_delta("a") == (Segment(ids=(7,)),)


def test_other_tokenizers_receive_text_in_log_order():
    s = make()
    s.take_delta("a")
    s.take_delta("c")
    s.record("a", [5], [b"he"])
    assert s.take_delta("c") == (Segment(text=b"he"),)  # a's token, as text
    s.record("c", [3], [b"llo"])
    s.record("c", [4], [b","])
    assert s.take_delta("a") == (Segment(text=b"llo,"),)  # c's two tokens, as one text segment
    s.record("a", [6], [b" w"])
    assert s.take_delta("c") == (Segment(text=b" w"),)
    assert s.output_text() == "hello, w"
    assert s.stretches() == [("a", "he"), ("c", "llo,"), ("a", " w")]


def test_stop_string_across_tokens_ends_text_before_it():
    s = make(stop=("END",))
    s.take_delta("a")
    s.record("a", [1, 2, 3, 4], [b"ok E", b"N", b"D", b"more"])
    assert s.finish_reason == "stop"
    assert s.output_text() == "ok "
    assert len(s.log) == 3  # tokens after the one completing the stop are dropped
    assert s.stretches() == [("a", "ok ")]


def test_eos_and_length_finish_reasons():
    s = make(max_tokens=3)
    s.take_delta("a")
    s.record("a", [5, 0], [b"x", b""])
    assert s.finish_reason == "stop" and s.output_text() == "x"
    s = make(max_tokens=3)
    s.take_delta("a")
    s.record("a", [5, 6, 7], [b"x", b"y", b"z"])
    assert s.finish_reason == "length" and s.remaining == 0


def test_mixture_tokens_go_to_every_member_as_ids():
    s = make(tokenizers={"a": "t1", "b": "t1", MIXTURE: "t1"})
    s.take_delta("a")
    s.take_delta("b")
    s.record(MIXTURE, [5], [b"x"])
    assert s.take_delta("a") == (Segment(ids=(5,)),)
    assert s.take_delta("b") == (Segment(ids=(5,)),)
