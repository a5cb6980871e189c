"""The soak's oracle on outcomes made by hand: what it must flag, what it may explain."""
from mixserve.soak.faults import Fault
from mixserve.soak.load import DISCONNECTED, Outcome
from mixserve.soak.oracle import Oracle, Setup

SETUP = Setup(members={"a": "t1", "b": "t1", "c": "t2"}, engines={"a": "transformers", "b": "transformers",
                                                                   "c": "vllm"}, retry_s=5.0, max_sessions=4)


def spec(i, **extra):
    return {"i": i, "n": 1, "method": "me", "member": None, "weights": {"a": 1, "b": 1}, "logprobs": None, **extra}


def outcome(i, t0, t1, status=200, texts=("xy",), code=None, message="", pieces=(), **extra):
    return Outcome(spec(i, **extra), t0, t1, status, code, message, list(texts), ["length"] * len(texts), {"a": 2},
                   list(pieces))


def judge(outs, faults=(), quiet_texts=None):
    quiet = {o.spec["i"]: Outcome(o.spec, 0, 0, 200, texts=list(quiet_texts or o.texts or ["xy"]))
             for o in outs if o.status in (200, DISCONNECTED)}
    oracle = Oracle(SETUP, list(outs), list(faults), quiet)
    return oracle.judge_all()


def test_a_text_that_differs_from_the_quiet_one_is_wrong_and_the_same_is_ok():
    assert judge([outcome(1, 0, 1)], quiet_texts=["xy"]) == {"ok": 1}
    assert judge([outcome(1, 0, 1)], quiet_texts=["xz"]) == {"wrong_text": 1}


def test_a_crash_excuses_a_changed_rest_only_where_the_engine_allows_it():
    kill = [Fault("member_kill", "c", 0.5, 2.0)]
    inexact = outcome(1, 0, 1, texts=("xyQ",), pieces=[(0.2, 0, "xy")], weights={"a": 1, "c": 1})
    assert judge([inexact], kill, quiet_texts=["xyz"]) == {"changed_after_crash": 1}
    sent_changed = outcome(1, 0, 1, texts=("xQ",), pieces=[(0.2, 0, "xQ")], weights={"a": 1, "c": 1})
    assert judge([sent_changed], kill, quiet_texts=["xyz"]) == {"wrong_text": 1}
    exact = outcome(1, 0, 1, texts=("xyQ",), weights={"a": 1, "b": 1})
    assert judge([exact], [Fault("member_kill", "a", 0.5, 2.0)], quiet_texts=["xyz"]) == {"wrong_text": 1}


def test_a_dropped_stream_must_have_received_a_prefix():
    assert judge([outcome(1, 0, 1, status=DISCONNECTED, texts=("x",))], quiet_texts=["xyz"]) == {"disconnect_ok": 1}
    assert judge([outcome(1, 0, 1, status=DISCONNECTED, texts=("q",))], quiet_texts=["xyz"]) == {"wrong_text": 1}


def test_a_429_is_explained_only_while_our_own_sessions_filled_admission():
    busy = [outcome(k, 0, 10) for k in range(1, 5)]  # four sessions held: admission (4) is full
    assert judge(busy + [outcome(9, 5, 5.1, status=429)])["explained_429"] == 1
    assert judge([outcome(1, 0, 10), outcome(9, 5, 5.1, status=429)])["unexplained"] == 1


def test_a_503_needs_an_outage_of_about_the_retry_bound_of_the_member_it_names():
    named = dict(status=503, code="member_unavailable", message="member 'a' is unavailable")
    long_kill = [Fault("member_kill", "a", 1.0, 7.0)]
    assert judge([outcome(1, 0, 8, **named)], long_kill) == {"explained_503": 1}
    assert judge([outcome(1, 0, 8, **named)], [Fault("member_kill", "a", 1.0, 2.0)]) == {"unexplained": 1}
    assert judge([outcome(1, 0, 8, **named)], [Fault("member_kill", "b", 1.0, 7.0)]) == {"unexplained": 1}
    assert judge([outcome(1, 20, 28, **named)], long_kill) == {"unexplained": 1}  # long after it came back


def test_anything_during_a_router_outage_is_counted_apart_and_nothing_else_is_excused():
    router = [Fault("router_kill", "router", 1.0, 9.0)]
    assert judge([outcome(1, 0, 2, status=500, message="Internal Server Error")], router) == {"router_lost": 1}
    assert judge([outcome(1, 20, 21, status=500, message="Internal Server Error")], router) == {"unexplained": 1}


def test_a_hostile_request_passes_only_refused_as_its_kind_is_or_served_where_legal():
    assert judge([outcome(1, 0, 1, status=400, texts=(), hostile="stop_number")]) == {"refused_hostile": 1}
    assert judge([outcome(1, 0, 1, status=413, texts=(), hostile="huge_body")]) == {"refused_hostile": 1}
    assert judge([outcome(1, 0, 1, status=400, texts=(), hostile="huge_body")]) == {"unexplained": 1}  # read whole
    assert judge([outcome(1, 0, 1, status=500, texts=(), hostile="deep_nesting")]) == {"unexplained": 1}
    legal = outcome(1, 0, 1, hostile="overflowing_weights")  # served: its text is checked like any other
    assert judge([legal], quiet_texts=["xy"]) == {"ok": 1} and judge([legal], quiet_texts=["xz"]) == {"wrong_text": 1}


def test_a_session_turn_after_a_turn_changed_by_a_crash_is_counted_apart_not_called_wrong():
    # Turn 1 changed with a kill of c (allowed on vLLM); turn 2 continues it, turn 3 continues turn 2:
    # their contexts hold the changed text, the quiet replay's do not.
    kill = [Fault("member_kill", "c", 0.5, 2.0)]
    vllm = dict(weights={"a": 1, "c": 1}, session="s")
    first = outcome(1, 0, 1, texts=("xyQ",), pieces=[(0.2, 0, "xy")], **vllm)
    later = [outcome(2, 3, 4, texts=("other",), continues=1, **vllm),
             outcome(3, 5, 6, texts=("more",), continues=2, **vllm)]
    quiet = {1: ["xyz"], 2: ["quiet"], 3: ["quiet"]}
    outs = [later[1], first, later[0]]  # the order they were heard in need not be the order sent
    oracle = Oracle(SETUP, outs, kill, {o.spec["i"]: Outcome(o.spec, 0, 0, 200, texts=quiet[o.spec["i"]])
                                        for o in outs})
    assert oracle.judge_all() == {"changed_after_crash": 1, "after_a_changed_turn": 2}
    # the same later turns after an unchanged first turn are judged, and wrong
    first_ok = outcome(1, 0, 1, texts=("xyz",), **vllm)
    assert judge([first_ok, later[0]], kill, quiet_texts=["xyz"]) == {"ok": 1, "wrong_text": 1}
