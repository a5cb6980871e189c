"""OpenAI-compatible request parsing and response shapes for /v1/completions and /v1/chat/completions.

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

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
               429: "rate_limit_error", 500: "server_error", 503: "server_error", 504: "server_error"}
# OpenAI fields we accept and ignore: they change nothing about what is sampled.
IGNORED = {"user", "frequency_penalty", "presence_penalty", "logit_bias", "suffix", "best_of", "stream_options",
           "stream", "model", "prompt", "messages", "logprobs", "echo", "top_logprobs", "max_completion_tokens"}
SAMPLING = {"max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "method", "weights", "session",
            "token_healing"}


def error_body(e: RequestError) -> dict:
    return {"error": {"message": str(e), "type": ERROR_TYPES.get(e.status, "invalid_request_error"),
                      "param": e.param, "code": e.code}}


def parse(body, chat: bool):
    """A JSON body -> (GenerateRequest, stream, include_usage): the OpenAI shape translated, and what
    only this wire has (stream, the endpoint's fields) checked; the request itself is checked once,
    by router/request.py's validate."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    unknown = sorted(set(body) - IGNORED - SAMPLING)
    if unknown:
        raise RequestError(f"unknown fields {unknown}", unknown[0])
    if not isinstance(body.get("stream", False), bool):
        raise RequestError("stream must be true or false", "stream")
    if chat and (body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None):
        raise RequestError("logprobs are served on /v1/completions (as `logprobs: N`), not on chat", "logprobs")
    if body.get("stream") and (body.get("logprobs") is not None or body.get("echo")):
        raise RequestError("logprobs and echo need stream: false (they score the whole text at the end)",
                           "logprobs" if body.get("logprobs") is not None else "echo")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise RequestError("stream_options must be an object", "stream_options")
    fields = {k: body[k] for k in SAMPLING if k in body and body[k] is not None}
    if not chat:
        fields.update({k: body[k] for k in ("logprobs", "echo") if body.get(k) is not None})
    if "max_completion_tokens" in body and "max_tokens" not in fields:
        fields["max_tokens"] = body["max_completion_tokens"]
    if isinstance(fields.get("stop"), list):
        fields["stop"] = tuple(fields["stop"])
    if chat:
        fields["messages"] = body.get("messages")
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one (lm-eval sends [[ids]] and ["text"])
        fields["prompt"] = prompt
    if chat and fields["messages"] is None and "session" not in fields:
        raise RequestError("messages is required", "messages")
    if not chat and fields["prompt"] is None and "session" not in fields:
        raise RequestError("prompt is required", "prompt")
    return GenerateRequest(model=body.get("model"), **fields), body.get("stream", False), \
        bool(options.get("include_usage"))


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
