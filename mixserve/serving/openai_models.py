"""The OpenAI-compatible HTTP API's bodies as types: FastAPI parses every request into one of these
and /openapi.json describes them (docs/serving.md, "HTTP").

A request model checks a body's shape, this wire's part: the types, no unknown fields, and the
fields only HTTP has (stream, stream_options). What the values may be (ranges, members, weights,
context lengths) is the request's rule, checked once for HTTP and gRPC alike by router/request.py's
`validate`; the bounds the schema states are its constants, so the two cannot drift apart.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mixserve.config import METHODS
from mixserve.router.request import (MAX_LOGPROBS, MAX_MESSAGES, MAX_N, MAX_SEED, MAX_SESSION_ID, MAX_STOP,
                                     MAX_STOP_BYTES, MAX_TEMPERATURE, MAX_TOKENS_LIMIT, MAX_TOP_K, MIN_TEMPERATURE)


def _documented(description: str, **bounds):
    """An optional field (null is absent) whose `bounds` the schema states and `validate` enforces."""
    return Field(None, description=description, json_schema_extra=bounds or None)


def _ignored(kind: str):
    return Field(None, description=f"OpenAI's ({kind}); accepted and ignored: it changes nothing that is sampled")


class _Body(BaseModel):
    # Strict: "16" is no max_tokens and 1 no `stream`; a field this API does not know is refused, named.
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Body):
    include_usage: bool | None = Field(None, description="end the stream with a chunk carrying the usage")


class _Request(_Body):
    """What both endpoints take: sampling, the ensemble's controls, and OpenAI's fields we ignore."""

    model: str | None = Field(None, description="the ensemble's name (first in /v1/models), or a member's: "
                                                "that member alone (method single); default the ensemble")
    max_tokens: int | None = _documented("tokens to generate; default 16", minimum=1, maximum=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = _documented("max_tokens's newer name (max_tokens wins)", minimum=1,
                                                    maximum=MAX_TOKENS_LIMIT)
    temperature: float | None = _documented(
        f"0 is greedy, else {MIN_TEMPERATURE} to {MAX_TEMPERATURE}; default 1 (the exact mixture)",
        minimum=0, maximum=MAX_TEMPERATURE)
    top_p: float | None = _documented("nucleus sampling, in (0, 1]; default 1 (off)", exclusiveMinimum=0, maximum=1)
    top_k: int | None = _documented("the k likeliest tokens only; default 0 (off)", minimum=0, maximum=MAX_TOP_K)
    n: int | None = _documented("independent samples (sample j uses seed + j); default 1; each holds one of "
                                "the server's max_concurrent_sessions", minimum=1, maximum=MAX_N)
    stop: str | list[str] | None = _documented(
        f"up to {MAX_STOP} non-empty strings of at most {MAX_STOP_BYTES} bytes (UTF-8) each; the text ends "
        f"before the first match", maxItems=MAX_STOP)
    seed: int | None = _documented("the same seed gives the same text; default a random one, reported back",
                                   minimum=0, maximum=MAX_SEED)
    stream: bool | None = Field(None, description="server-sent events, ending in `data: [DONE]`")
    stream_options: StreamOptions | None = None
    method: str | None = _documented("how the members mix; default the config's", enum=[*METHODS, None])
    weights: dict[str, float] | None = _documented("member name -> a finite weight >= 0 (0 leaves the member out), "
                                                   "normalised; default the gate's for the prompt, else the config's",
                                                   minProperties=1)
    session: str | None = _documented("start (with a prompt) or continue (without one) the session of this id",
                                      minLength=1, maxLength=MAX_SESSION_ID)
    token_healing: bool | None = Field(None, description="me across tokenizers: a member taking over mid-word "
                                                         "re-spells its start; default the config's")
    user: str | None = _ignored("an end-user id")
    frequency_penalty: float | None = _ignored("a penalty")
    presence_penalty: float | None = _ignored("a penalty")
    logit_bias: dict[str, float] | None = _ignored("a bias per token")
    suffix: str | None = _ignored("text after the completion")
    best_of: int | None = _ignored("server-side samples")
    top_logprobs: int | None = Field(None, description="chat's log-probs: refused (they are served on "
                                                       "/v1/completions); ignored on /v1/completions")


class CompletionRequest(_Request):
    """POST /v1/completions."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["prompt"]}, {"required": ["session"]}]})

    prompt: str | list[int] | list[str] | list[list[int]] | None = Field(
        None, description="text, or token ids in the members' shared vocabulary; a batch of one ([\"text\"], "
                          "[[ids]]) is one prompt. Required unless continuing a session")
    logprobs: int | None = _documented("log-probs of each token and this many alternatives", minimum=0,
                                       maximum=MAX_LOGPROBS)
    echo: bool | None = Field(None, description="the reply starts with the prompt (scored too, with logprobs)")


class ChatMessage(_Body):
    role: str = Field(description="system, user, assistant, ...: each member's chat template renders it")
    content: str
    name: str | None = _ignored("a participant's name")


class ChatCompletionRequest(_Request):
    """POST /v1/chat/completions."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["messages"]}, {"required": ["session"]}]})

    messages: list[ChatMessage] | None = _documented("the chat; required unless continuing a session",
                                                     minItems=1, maxItems=MAX_MESSAGES)
    logprobs: bool | None = Field(None, description="refused when true: log-probs are served on /v1/completions")
    echo: bool | None = _ignored("completions' echo")


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    member_tokens: dict[str, int] = Field(description="tokens each member produced (\"mixture\" under ce)")
    member_forward_calls: int = Field(description="model forwards summed over members: 1 per token for me")
    router_round_trips: int = Field(description="router -> member calls: about 1 - sum(w^2) per token for me")


class Logprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class _Choice(_Response):
    index: int
    finish_reason: Literal["stop", "length"]
    members: list[str] = Field(description="the member that produced each token (\"mixture\" under ce)")


class CompletionChoice(_Choice):
    text: str
    logprobs: Logprobs | None


class AssistantMessage(_Response):
    role: Literal["assistant"]
    content: str


class ChatChoice(_Choice):
    message: AssistantMessage
    logprobs: None


class _Completion(_Response):
    id: str
    object: str
    created: int
    model: str
    choices: list
    usage: Usage
    method: str = Field(description="the method that ran")
    seed: int = Field(description="the request's seed, or the one drawn for it")
    weights: dict[str, float] = Field(description="the mixture weights used: the request's, the gate's or the "
                                                  "config's")


class Completion(_Completion):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]


class ChatCompletion(_Completion):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]


class ModelCard(_Response):
    """The ensemble (with its method and weights) or one member (its model, weight and tokenizer)."""

    id: str
    object: Literal["model"]
    owned_by: str
    method: str | None = None
    weights: dict[str, float] | None = None
    model: str | None = None
    weight: float | None = None
    tokenizer: str | None = Field(None, description="members with equal fingerprints share token ids")


class ModelList(_Response):
    object: Literal["list"]
    data: list[ModelCard]


class Health(_Response):
    status: Literal["ok", "degraded"]
    live_sessions: dict[str, int] | None = Field(description="sessions each member holds on its replicas that "
                                                             "answered; null when a member has none answering (503)")
    replicas_down: dict[str, int] = Field(default_factory=dict, description="each member's replicas that did not "
                                          "answer: the member serves on the others while one does (200)")
    active_sessions: int = Field(description="sessions this router has admitted and not finished (what "
                                             "max_concurrent_sessions bounds)")


class ErrorDetail(_Response):
    message: str
    type: str
    param: str | None = Field(description="the offending field")
    code: str | None


class ErrorResponse(_Response):
    """Every error, OpenAI's shape: 400 bad input, 401 no or a wrong key, 404 an unknown model or
    session, 413 a body over max_body_bytes, 429 past max_concurrent_sessions, 500 a member failed on
    the request, 503 a member stayed down."""

    error: ErrorDetail
