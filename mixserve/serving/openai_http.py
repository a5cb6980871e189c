"""OpenAI-compatible requests translated and responses shaped, for /v1/completions and
/v1/chat/completions (the bodies' types: mixserve/serving/openai_models.py; the app: http_app.py).

Ensemble controls ride as extra body fields (the openai client's `extra_body`): `method`, `weights`,
`top_k`. Every response says which method ran; chunks say which member produced them.
"""
from __future__ import annotations

import itertools
import json
import time
import uuid
from contextlib import aclosing

from mixserve.router.logprobs import LogProbs
from mixserve.router.request import GenerateRequest, RequestError
from mixserve.router.result import GenerateResult
from mixserve.router.session_log import Chunk

from .openai_models import ChatCompletionRequest, CompletionRequest

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error",
               504: "server_error"}
# What a request takes from a body, beside the endpoint's own prompt or messages.
SAMPLING = {"max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "method", "weights", "session",
            "token_healing", "model"}


def error_body(e: RequestError) -> dict:
    return {"error": {"message": _printable(str(e)), "type": ERROR_TYPES.get(e.status, "invalid_request_error"),
                      "param": None if e.param is None else _printable(e.param), "code": e.code}}


def _printable(text: str) -> str:
    """An error may quote what it refuses, lone surrogates included; those are no UTF-8 to send."""
    return text.encode("utf-8", "backslashreplace").decode()


def to_request(body: CompletionRequest | ChatCompletionRequest, chat: bool) -> tuple[GenerateRequest, bool, bool]:
    """A parsed body -> (GenerateRequest, stream, include_usage): the OpenAI shape translated, and what
    only this wire has checked; the request itself is checked once, by router/request.py's validate."""
    if chat and (body.logprobs or body.top_logprobs is not None):
        raise RequestError("logprobs are served on /v1/completions (as `logprobs: N`), not on chat", "logprobs")
    if not chat and body.stream and (body.logprobs is not None or body.echo):
        raise RequestError("logprobs and echo need stream: false (they score the whole text at the end)",
                           "logprobs" if body.logprobs is not None else "echo")
    fields = body.model_dump(include=SAMPLING, exclude_none=True)
    if body.max_tokens is None and body.max_completion_tokens is not None:
        fields["max_tokens"] = body.max_completion_tokens
    if isinstance(body.stop, list):
        fields["stop"] = tuple(body.stop)
    if chat:
        fields["messages"] = None if body.messages is None else [{"role": m.role, "content": m.content}
                                                                 for m in body.messages]
    else:
        fields.update(body.model_dump(include={"logprobs", "echo"}, exclude_none=True), prompt=_one(body.prompt))
    what = "messages" if chat else "prompt"
    if fields[what] is None and body.session is None:
        raise RequestError(f"{what} is required", what)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return GenerateRequest(**fields), bool(body.stream), include_usage


def _one(prompt):
    """A batch of one (lm-eval sends [[ids]] and ["text"]) is its prompt; a longer batch is refused."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) > 1:
            raise RequestError(f"prompt is a batch of {len(prompt)}; send one prompt per request", "prompt")
        return prompt[0]
    return prompt


def validation_error(errors: list[dict]) -> RequestError:
    """FastAPI's validation errors (pydantic's, or an unparsable body) as one RequestError naming the
    field: the top-level field is `param`, as the errors `validate` raises name theirs."""
    first = errors[0]
    loc = [part for part in first["loc"] if part != "body"]
    if first["type"] == "json_invalid":
        return RequestError(f"request body is not valid JSON: {first['ctx']['error']} at character {loc[0]}")
    if not loc and first["type"] == "string_unicode":
        return RequestError("a field's name is not valid Unicode: it has a lone surrogate")
    if not loc:
        return RequestError("request body must be a JSON object (Content-Type: application/json)")
    if first["type"] == "extra_forbidden":
        unknown = sorted(_unknown([p for p in e["loc"] if p != "body"])
                         for e in errors if e["type"] == "extra_forbidden")
        return RequestError(f"unknown fields {unknown}", str(loc[0]))
    same = [e["msg"] for e in errors if [p for p in e["loc"] if p != "body"][:1] == loc[:1]]
    return RequestError(f"{_path(loc)}: {'; or '.join(dict.fromkeys(same))} (got {first['input']!r:.60})",
                        str(loc[0]))


def _unknown(loc: list) -> str:
    """An unknown field's name, as given, after the path to its object (stream_options.colour)."""
    return ".".join([_path(loc[:-1]), str(loc[-1])]) if loc[:-1] else str(loc[-1])


def _path(loc: list) -> str:
    """messages[2].role, leaving out the type names pydantic puts in a union's path (stop.list[str])."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and part not in ("str", "int", "float", "bool"):
            path += f".{part}" if path else part
    return path


class Shaper:
    """Builds the response objects of one request: same id, model and creation time throughout."""

    def __init__(self, model: str, chat: bool):
        self.model = model
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.started: set[int] = set()  # choices that have had their first chat delta (role)

    def _envelope(self, kind: str, choices: list[dict], **extra) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices,
                **extra}

    def full(self, result: GenerateResult) -> dict:
        choices = []
        for i, c in enumerate(result.choices):
            choice = {"index": i, "finish_reason": c.finish_reason, "logprobs": None, "members": c.members}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice["text"] = (result.prompt_text or "") + c.text  # prompt_text is set for echo
                choice["logprobs"] = logprobs(c.logprobs, echo=result.prompt_text is not None)
            choices.append(choice)
        return self._envelope("chat.completion" if self.chat else "text_completion", choices,
                              usage=usage(result), method=result.method, seed=result.seed, weights=result.weights)

    def chunk(self, chunk: Chunk, method: str) -> dict:
        choice = {"index": chunk.index, "finish_reason": chunk.finish_reason, "member": chunk.member,
                  "token_ids": chunk.token_ids}
        if self.chat:
            delta = {"content": chunk.text}
            if chunk.index not in self.started:
                self.started.add(chunk.index)
                delta["role"] = "assistant"
            choice["delta"] = delta
        else:
            choice["text"] = chunk.text
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", [choice], method=method)

    def usage_chunk(self, result: GenerateResult) -> dict:
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", [],
                              usage=usage(result), method=result.method, seed=result.seed, weights=result.weights)


def logprobs(lp: LogProbs | None, echo: bool) -> dict | None:
    """OpenAI's completions shape; without echo, the completion's tokens only. text_offset counts
    characters from the start of the prompt, as OpenAI's does."""
    if lp is None:
        return None
    start = 0 if echo else lp.prompt_tokens
    offsets = list(itertools.accumulate((len(t) for t in lp.tokens[:-1]), initial=0))
    return {"tokens": lp.tokens[start:], "token_logprobs": lp.token_logprobs[start:],
            "top_logprobs": lp.top_logprobs[start:], "text_offset": offsets[start:]}


def usage(result: GenerateResult) -> dict:
    u = result.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens, "member_tokens": u.member_tokens,
            "member_forward_calls": u.member_forward_calls, "router_round_trips": u.router_round_trips}


def sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


async def events(first, items, shaper: Shaper, method: str, include_usage: bool):
    """Server-sent events; a client that goes away cancels this and closes the sessions. A failure
    after the first chunk (a member that stayed down) arrives as an error event."""
    async with aclosing(items):
        item = first
        try:
            while not isinstance(item, GenerateResult):
                yield sse(shaper.chunk(item, method))
                item = await items.__anext__()
            if include_usage:
                yield sse(shaper.usage_chunk(item))
        except RequestError as e:
            yield sse(error_body(e))
    yield sse("[DONE]")
