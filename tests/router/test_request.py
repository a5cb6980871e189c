"""Bad request parameters: a clear error naming the field, before any member is called."""
import pytest

from mixserve.actors.messages import MemberInfo
from mixserve.router.request import GenerateRequest, NotFoundError, RequestError, validate

MEMBERS = {"a": MemberInfo("a", "t1", 10, 100, (0,)), "b": MemberInfo("b", "t1", 10, 100, (0,)),
           "c": MemberInfo("c", "t2", 10, 100, (0,)), "d": MemberInfo("d", "t3", 10, 100, (0,), (0x41,))}


def check(infos=None, **fields):
    return validate(GenerateRequest(**fields), MEMBERS, {"a": 0.5, "b": 0.5}, "me", None, model_name="ens",
                    infos=infos)


@pytest.mark.parametrize("fields, param, message", [
    ({}, "prompt", "exactly one of prompt or messages"),
    ({"prompt": ""}, "prompt", "non-empty string"),
    ({"messages": []}, "messages", "non-empty list"),
    ({"messages": [{"role": "user"}]}, "messages", r"messages\[0\] must have string role and content"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens", r"between 1 and 4096 \(got 0\)"),
    ({"prompt": "x", "max_tokens": 5000}, "max_tokens", "between 1 and 4096"),
    ({"prompt": "x", "max_tokens": 2.5}, "max_tokens", "must be an integer"),
    ({"prompt": "x", "temperature": -0.1}, "temperature", "between 0.0 and 100.0"),
    ({"prompt": "x", "temperature": float("nan")}, "temperature", "must be a number"),
    ({"prompt": "x", "top_p": 0}, "top_p", r"\(0, 1\]"),
    ({"prompt": "x", "top_p": 1.5}, "top_p", "between"),
    ({"prompt": "x", "top_k": -1}, "top_k", "between"),
    ({"prompt": "x", "seed": -3}, "seed", "between"),
    ({"prompt": "x", "n": 0}, "n", "between"),
    ({"prompt": "x", "stop": ("",)}, "stop", "non-empty strings"),
    ({"prompt": "x", "method": "vote"}, "method", "one of me, ce, single"),
    ({"prompt": "x", "weights": {"a": -1}}, "weights.a", "between"),
    ({"prompt": "x", "weights": {"z": 1}}, "weights", r"unknown members \['z'\]"),
    ({"prompt": "x", "weights": {"a": 0}}, "weights", "at least one positive"),
    ({"prompt": "x", "weights": {"a": float("inf")}}, "weights.a", "must be a number"),
    ({"prompt": "x", "stop": 5}, "stop", r"a string or a list of up to 4 non-empty strings \(got 5\)"),
    ({"prompt": "x", "stop": True}, "stop", "a string or a list"),
    ({"prompt": "x", "stop": ("a",) * 5}, "stop", "up to 4"),
    ({"prompt": "x", "stop": ("x" * 1_000_000,) * 4}, "stop", r"at most 256 bytes each \(got one of 1000000\)"),
    ({"prompt": "x", "stop": ("é" * 129,)}, "stop", "at most 256 bytes"),  # 258 bytes in UTF-8
    ({"prompt": "x", "stop": ("\ud800",)}, "stop", "stop is not valid Unicode: a lone surrogate at character 0"),
    ({"prompt": "h\ud800i"}, "prompt", "prompt is not valid Unicode: a lone surrogate at character 1"),
    ({"messages": [{"role": "user", "content": "\udfff"}]}, "messages", r"messages\[0\]\.content is not valid"),
    ({"messages": [{"role": "user", "content": "x"}] * 1025}, "messages", "at most 1024"),
    ({"prompt": "x", "session": "s\ud800"}, "session", "not valid Unicode"),
    ({"prompt": "x", "temperature": 1e-310}, "temperature", r"0 \(greedy\) or between 0.01 and 100.0"),
    ({"prompt": "x", "temperature": 0.009}, "temperature", r"0 \(greedy\) or between"),
])
def test_bad_fields_are_named(fields, param, message):
    with pytest.raises(RequestError, match=message) as e:
        check(**fields)
    assert e.value.param == param and e.value.status == 400


def test_ce_across_tokenizers_needs_members_that_spell_every_byte():
    check(MEMBERS, prompt="x", method="ce", weights={"a": 1, "b": 1, "c": 1})  # aligned by token bytes
    check(MEMBERS, prompt="x", method="ce")  # one shared tokenizer: no alignment needed
    with pytest.raises(RequestError, match=r"members \['d'\] have no token for some bytes of plain text") as e:
        check(MEMBERS, prompt="x", method="ce", weights={"a": 0.5, "c": 0.2, "d": 0.3})
    assert e.value.param == "method"


@pytest.mark.parametrize("fields, param, message", [
    ({"prompt": [1, 2], "weights": {"a": 1, "c": 1}}, "prompt", "a prompt of token ids needs members that share"),
    ({"prompt": "x", "logprobs": 1, "weights": {"a": 1, "c": 1}}, "logprobs", "log-probabilities of an ensemble"),
    ({"prompt": [1, 10]}, "prompt", "token id 10; the vocabulary has 10 tokens"),
])
def test_what_needs_the_members_tokenizers_is_checked_given_their_infos(fields, param, message):
    check(**fields)  # the CLI, before any member starts, cannot tell yet
    with pytest.raises(RequestError, match=message) as e:
        check(MEMBERS, **fields)
    assert e.value.param == param
    check(MEMBERS, **{**fields, "weights": {"a": 1, "b": 1}, "prompt": [1, 9]})  # a and b share one tokenizer


def test_a_member_named_as_the_model_is_method_single_on_it():
    assert check(prompt="x", model="ens").method == "me"
    plan = check(prompt="x", model="c")
    assert (plan.method, plan.member, plan.weights) == ("single", "c", {"c": 1.0})
    with pytest.raises(NotFoundError, match=r"model 'gpt-5' does not exist; models: ens, a, b, c, d") as e:
        check(prompt="x", model="gpt-5")
    assert (e.value.param, e.value.status) == ("model", 404)
    with pytest.raises(RequestError, match=r"model 'c' is one member; method must be single \(got 'me'\)"):
        check(prompt="x", model="c", method="me")


def test_unknown_single_member_is_not_found():
    with pytest.raises(NotFoundError, match="unknown member 'z'") as e:
        check(prompt="x", method="single", member="z")
    assert e.value.status == 404


def test_defaults_are_exact_mixture_sampling_with_a_reported_seed():
    plan = check(prompt="x")
    p = plan.params
    assert (p.temperature, p.top_p, p.top_k, p.max_tokens) == (1.0, 1.0, 0, 16)
    assert plan.weights == {"a": 0.5, "b": 0.5} and isinstance(p.seed, int)
    assert check(prompt="x", weights={"a": 1, "b": 0}).weights == {"a": 1.0}  # zero leaves a member out


def test_weights_near_the_float_maximum_normalise_to_the_mixture_asked_for():
    """1e308 + 1e308 is inf: summed first, both weights normalised to 0."""
    assert check(prompt="x", weights={"a": 1e308, "b": 1e308}).weights == {"a": 0.5, "b": 0.5}
    assert check(prompt="x", weights={"a": 1.5e308, "b": 0.5e308}).weights == pytest.approx({"a": 0.75, "b": 0.25})
    assert check(prompt="x", weights={"a": 5e-324, "b": 0}).weights == {"a": 1.0}  # the smallest positive float


def test_the_smallest_temperature_and_greedy_are_taken():
    assert check(prompt="x", temperature=0.01).params.temperature == 0.01
    assert check(prompt="x", temperature=0).params.temperature == 0.0
    assert check(prompt="x", stop="é" * 128).params.stop == ("é" * 128,)  # 256 bytes: the most
