"""A generation request and its validation: the edge where user input becomes trusted types. The
ingresses (mixserve/serving/openai_http.py, mixserve/serving/grpc_service.py) only translate their wire format into a
GenerateRequest; `validate` checks it, once, and the router runs the Plan it returns unchecked but for
its length, which `check_context` checks against each member's context once the prompt is in the
members' tokens (docs/architecture.md invariant 8)."""
from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from mixserve.actors.messages import MemberInfo, SamplingParams

from .policies import METHODS

# The bounds of what a client controls, checked here for HTTP and gRPC alike; the OpenAPI schema
# (mixserve/serving/openai_models.py) states them from these names.
MAX_TOKENS_LIMIT = 4096
MAX_STOP = 4
MAX_STOP_BYTES = 256  # each stop string, in UTF-8: a stop is matched against every new piece of text
MAX_LOGPROBS = 20  # alternatives per token
MAX_MESSAGES = 1024  # chat messages in one request
MAX_N = 1 << 16  # samples (admission's max_concurrent_sessions bounds them first)
MAX_TOP_K = 1 << 20
MAX_SEED = (1 << 63) - 1
MAX_TEMPERATURE = 100.0
# Near 0, logits / temperature overflow to inf and the probabilities to NaN (1e-310 did); vLLM
# raises any positive temperature below 1e-2 to it. 0 is greedy.
MIN_TEMPERATURE = 0.01
MAX_SESSION_ID = 128  # characters
TEXT_BYTES = set(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D}  # what a member must spell to join ce's union vocabulary


class RequestError(ValueError):
    """Bad input, with the offending field (`param`) for OpenAI-style error bodies."""

    status = 400
    code: str | None = None

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class UnavailableError(RequestError):
    """A member the request needs stayed down past the retry bound."""

    status = 503
    code = "member_unavailable"


class MemberFailedError(RequestError):
    """A member raised on this request (a fault in it or its engine, not in the input): 500, named,
    instead of a bare Internal Server Error."""

    status = 500
    code = "member_error"

    def __init__(self, member: str, error: BaseException):
        cause = getattr(error, "cause", None) or error  # a Ray task error carries the member's own
        super().__init__(f"member {member!r} failed on this request: {type(cause).__name__}: {cause}")


class ContextError(RequestError):
    """The request does not fit a member's context (`code` as OpenAI names it)."""

    code = "context_length_exceeded"


class NotFoundError(RequestError):
    status = 404
    code = "model_not_found"


@dataclass(frozen=True)
class GenerateRequest:
    prompt: str | list[int] | None = None  # text, or token ids of the members' one shared tokenizer
    messages: list[dict] | None = None
    method: str | None = None  # None: the config's method
    member: str | None = None  # for method single; None: the config's default member
    weights: dict[str, float] | None = None  # None: the config's weights
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    stop: tuple[str, ...] = ()
    seed: int | None = None  # None: a random seed, reported back
    n: int = 1
    session: str | None = None  # continue (or start, with a prompt) the session of this id
    logprobs: int | None = None  # log-probs of each token and this many alternatives (router/logprobs.py)
    echo: bool = False  # the reply starts with the prompt (with its log-probs, given logprobs)
    token_healing: bool | None = None  # None: the config's
    model: str | None = None  # the ensemble's name, or a member's (method single on it); None: the ensemble


@dataclass(frozen=True)
class Plan:
    """A validated request: what the router runs."""

    method: str
    weights: dict[str, float]  # normalised, only members that take part
    member: str | None
    params: SamplingParams
    n: int
    prompt: str | list[int] | None = None
    messages: list[dict] | None = field(default=None)
    session: str | None = None
    logprobs: int | None = None
    echo: bool = False
    token_healing: bool | None = None
    owner: str = ""  # whose named session this is: the caller's key's id (mixserve/serving/keys.py); "" without keys


def validate(req: GenerateRequest, members: Iterable[str], weights: dict[str, float], method: str,
             default_member: str | None, gate: Callable[[str], dict[str, float]] | None = None, *,
             model_name: str | None = None, infos: dict[str, MemberInfo] | None = None) -> Plan:
    """Check everything a user can get wrong, naming the field: nothing reaches a member before this,
    and nothing is checked again after it. `model` may name the ensemble (`model_name`) or a member.
    What needs the members' tokenizers (ce across them, token ids in or out) is checked given their
    `infos`: the router has them; the CLI, before any actor starts, checks the rest. The weights: the
    request's, else the gate's for the prompt's text (mixserve/gate.py), else the config's."""
    members = list(members)
    _check_session(req)
    method, member = _model(req, members, model_name, method)
    if method not in METHODS:
        raise RequestError(f"method must be one of {', '.join(METHODS)} (got {method!r})", "method")
    if method == "single":
        member = member or default_member or members[0]
        if member not in members:
            raise NotFoundError(f"unknown member {member!r}; members: {', '.join(members)}", "member")
        weights = {member: 1.0}
    else:
        member = None
        if req.weights is not None:
            weights = _weights(req.weights, members)
        elif gate is not None and (text := prompt_text(req)) is not None:
            weights = gate(text) or weights
    params = _sampling(req)
    n = _number(req.n, "n", 1, MAX_N, integer=True)
    if req.session is not None and n != 1:
        raise RequestError("a request that names a session draws one sample (n must be 1)", "n")
    logprobs = None if req.logprobs is None else int(_number(req.logprobs, "logprobs", 0, MAX_LOGPROBS, integer=True))
    if not isinstance(req.echo, bool):
        raise RequestError("echo must be true or false", "echo")
    if req.token_healing is not None and not isinstance(req.token_healing, bool):
        raise RequestError("token_healing must be true or false", "token_healing")
    if req.session is not None and (logprobs is not None or req.echo):
        raise RequestError("logprobs and echo score one request's tokens; leave session out", "session")
    plan = Plan(method, weights, member, params, int(n), req.prompt, req.messages, req.session, logprobs, req.echo,
                req.token_healing)
    if infos is not None:
        check_members(plan, infos)
    return plan


def check_members(plan: Plan, infos: dict[str, MemberInfo]) -> None:
    """The part of the check that needs the members' infos, on a plan made without them (the CLI makes
    its plan before any actor starts, and checks this once they are up: each check runs once)."""
    _check_tokenizers(plan, plan.method, plan.weights, plan.logprobs, infos)


def check_context(plan: Plan, prompt_ids: dict[str, list[int]], logged: int, infos: dict[str, MemberInfo]) -> None:
    """Each member's context holds the whole request, checked once its prompt is in each member's
    tokens and before any member works: the prompt, the `logged` tokens of a continued session and
    max_tokens (as OpenAI counts). The log and the completion count as the tokens they are written in:
    exact where the members share a tokenizer; across tokenizers a member that spells the same text in
    more tokens of its own ends its text with finish "length" at its context, never past it."""
    for name in plan.weights:
        given, limit = len(prompt_ids[name]) + logged, infos[name].context_length
        if given + plan.params.max_tokens <= limit:
            continue
        what = f"session {plan.session!r} holds" if logged else "the prompt is"
        fix = "shorten the prompt" if given >= limit else f"ask for at most {limit - given} tokens"
        raise ContextError(f"{what} {given} tokens and max_tokens is {plan.params.max_tokens}: "
                           f"{given + plan.params.max_tokens} tokens for member {name!r}, whose context is "
                           f"{limit} tokens; {fix}", "max_tokens" if given < limit else "session" if logged else "prompt")


def prompt_text(req: GenerateRequest) -> str | None:
    """What a gate reads: the prompt, or the chat's contents; None for token ids or a continued session
    (those keep the config's weights)."""
    if isinstance(req.prompt, str):
        return req.prompt
    if isinstance(req.messages, list):
        return "\n".join(str(m.get("content", "")) for m in req.messages if isinstance(m, dict))
    return None


def _check_session(req: GenerateRequest) -> None:
    if req.session is not None and (not isinstance(req.session, str) or not 0 < len(req.session) <= MAX_SESSION_ID):
        raise RequestError(f"session must be an id of 1 to {MAX_SESSION_ID} characters", "session")
    if req.session is not None:
        _text(req.session, "session")
    if req.session is not None and req.prompt is None and req.messages is None:
        return  # continuing a session: its prompt is in its snapshot
    _check_prompt(req)


def _check_prompt(req: GenerateRequest) -> None:
    if (req.prompt is None) == (req.messages is None):
        raise RequestError("give exactly one of prompt or messages", "prompt")
    if isinstance(req.prompt, list):
        if not req.prompt or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in req.prompt):
            raise RequestError("prompt must be a non-empty string or a non-empty list of token ids", "prompt")
    elif req.prompt is not None and (not isinstance(req.prompt, str) or not req.prompt):
        raise RequestError("prompt must be a non-empty string or a non-empty list of token ids", "prompt")
    elif req.prompt is not None:
        _text(req.prompt, "prompt")
    if req.messages is not None:
        if not isinstance(req.messages, list) or not 0 < len(req.messages) <= MAX_MESSAGES:
            raise RequestError(f"messages must be a non-empty list of at most {MAX_MESSAGES}", "messages")
        for i, m in enumerate(req.messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise RequestError(f"messages[{i}] must have string role and content", "messages")
            _text(m["role"], f"messages[{i}].role", "messages")
            _text(m["content"], f"messages[{i}].content", "messages")


def _model(req: GenerateRequest, members: list[str], model_name: str | None, method: str) -> tuple[str, str | None]:
    """(method, member) from the request: a member's name as `model` means method single on it."""
    if req.model is None or req.model == model_name:
        return req.method or method, req.member
    if not isinstance(req.model, str) or req.model not in members:
        names = ", ".join([model_name, *members] if model_name else members)
        raise NotFoundError(f"model {req.model!r} does not exist; models: {names}", "model")
    if req.method not in (None, "single"):
        raise RequestError(f"model {req.model!r} is one member; method must be single (got {req.method!r})", "method")
    return "single", req.model


def _weights(given, members: list[str]) -> dict[str, float]:
    if not isinstance(given, dict) or not given:
        raise RequestError("weights must be a non-empty map of member name to weight", "weights")
    unknown = [m for m in given if m not in members]
    if unknown:
        raise RequestError(f"weights name unknown members {unknown}; members: {', '.join(members)}", "weights")
    for name, w in given.items():
        _number(w, f"weights.{name}", 0.0, math.inf)
    largest = max(given.values())
    if largest <= 0:
        raise RequestError("weights must have at least one positive value", "weights")
    # Scaled by the largest first: weights near the float maximum (1e308) would sum to inf and
    # normalise to 0. A zero weight leaves a member out of this request; the rest are normalised to
    # sum to 1. In the config's order, whatever the order given: the member drawn at step t comes from
    # the cumulative weights in this order, and a gRPC map (or a client's JSON) keeps no order (invariant 3).
    scaled = {m: given[m] / largest for m in members if given.get(m, 0) > 0}
    total = sum(scaled.values())  # between 1 and the number of members
    return {m: w / total for m, w in scaled.items()}


def _check_tokenizers(req: GenerateRequest | Plan, method: str, weights: dict[str, float], logprobs: int | None,
                      infos: dict[str, MemberInfo]) -> None:
    """What the members taking part must share: ce mixes distributions over one vocabulary (one
    tokenizer, or members that each spell plain text, aligned on token bytes: router/vocab.py); token
    ids in or out (a token-id prompt, log-probs of an ensemble) need one tokenizer."""
    tokenizers = {infos[name].tokenizer for name in weights}
    if method == "ce" and len(tokenizers) > 1:
        unable = [name for name in weights if TEXT_BYTES & set(infos[name].missing_bytes)]
        if unable:
            raise RequestError(
                f"method=ce across different tokenizers aligns vocabularies by token bytes, but members "
                f"{unable} have no token for some bytes of plain text, so they cannot follow text the others "
                f"write. Use method=me, or ce on members that share a tokenizer", "method")
    for needs, why, param in ((isinstance(req.prompt, list), "a prompt of token ids", "prompt"),
                              (logprobs is not None, "log-probabilities of an ensemble", "logprobs")):
        if needs and len(tokenizers) > 1:
            raise RequestError(f"{why} needs members that share a tokenizer, and {', '.join(weights)} do not; "
                               f"ask one member (model=NAME) or send text", param)
    if isinstance(req.prompt, list):
        vocab = min(infos[name].vocab_size for name in weights)
        if max(req.prompt) >= vocab:
            raise RequestError(f"prompt has token id {max(req.prompt)}; the vocabulary has {vocab} tokens", "prompt")


def _sampling(req: GenerateRequest) -> SamplingParams:
    temperature = _number(req.temperature, "temperature", 0.0, MAX_TEMPERATURE)
    if 0 < temperature < MIN_TEMPERATURE:
        raise RequestError(f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and {MAX_TEMPERATURE} "
                           f"(got {temperature})", "temperature")
    top_p = _number(req.top_p, "top_p", 0.0, 1.0)
    if top_p <= 0:
        raise RequestError(f"top_p must be in (0, 1] (got {top_p})", "top_p")
    top_k = _number(req.top_k, "top_k", 0, MAX_TOP_K, integer=True)
    max_tokens = _number(req.max_tokens, "max_tokens", 1, MAX_TOKENS_LIMIT, integer=True)
    seed = secrets.randbits(63) if req.seed is None else _number(req.seed, "seed", 0, MAX_SEED, integer=True)
    return SamplingParams(float(temperature), float(top_p), int(top_k), int(max_tokens), _stop(req.stop), int(seed))


def _stop(given) -> tuple[str, ...]:
    if given is None:
        return ()
    stop = (given,) if isinstance(given, str) else tuple(given) if isinstance(given, (list, tuple)) else None
    if stop is None or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise RequestError(f"stop must be a string or a list of up to {MAX_STOP} non-empty strings "
                           f"(got {given!r:.80})", "stop")
    for s in stop:
        if len(_text(s, "stop")) > MAX_STOP_BYTES:
            raise RequestError(f"stop strings must be at most {MAX_STOP_BYTES} bytes each (got one of "
                               f"{len(s.encode())})", "stop")
    return stop


def _text(value: str, name: str, param: str | None = None) -> bytes:
    """`value` in UTF-8: a string with a lone surrogate (valid JSON: "\\ud800") is no text a
    tokenizer or a snapshot can take, and is refused here rather than failing in a member."""
    try:
        return value.encode()
    except UnicodeEncodeError as e:
        raise RequestError(f"{name} is not valid Unicode: a lone surrogate at character {e.start}",
                           param or name) from None


def _number(value, name: str, low, high, integer: bool = False):
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        raise RequestError(f"{name} must be {kind} (got {value!r})", name)
    if not low <= value <= high:
        raise RequestError(f"{name} must be between {low} and {high} (got {value})", name)
    return value
