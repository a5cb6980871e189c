"""`mixserve soak`'s clients: a seeded mixed load over HTTP and gRPC, every answer recorded for the
oracle (mixserve/soak/oracle.py). Loopback only; every request has a deadline.

A request is a plain dict (a "spec") so that the oracle can replay it on a quiet server; an outcome
records what the client saw: the status, each choice's text, and for streams when each piece came.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field

import aiohttp
import grpc

from mixserve.models.tiny import WORDS

from . import hostile

# What the client saw, beside HTTP status codes: the stream was cut by us, or by the transport.
DISCONNECTED, TRANSPORT, TIMEOUT = "disconnected", "transport", "timeout"
GRPC_STATUS = {"RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "INTERNAL": 500, "INVALID_ARGUMENT": 400,
               "NOT_FOUND": 404, "UNAUTHENTICATED": 401}
CODE_STATUS = {"member_unavailable": 503, "member_error": 500}  # an error event inside a 200 stream


@dataclass
class Outcome:
    spec: dict
    t0: float  # seconds since the soak started
    t1: float = 0.0
    status: int | str = TRANSPORT
    code: str | None = None  # the error body's code (member_unavailable, ...) or the gRPC status name
    message: str = ""
    texts: list[str] = field(default_factory=list)  # per choice
    finish: list[str | None] = field(default_factory=list)
    member_tokens: dict[str, int] = field(default_factory=dict)
    pieces: list[tuple[float, int, str]] = field(default_factory=list)  # streams: (t, choice, text) as received
    logprob_tokens: int | None = None
    verdict: str = ""  # the oracle's


class Mix:
    """Draws request specs from a seed: methods, weightings, protocols, streaming, n, chat, stop
    strings, sessions (started, then continued later), log-probs where the members share a tokenizer,
    and which streams the client drops mid-way."""

    def __init__(self, seed: int, members: dict[str, str], model_name: str, disconnect_rate: float = 0.4,
                 hostile: float = 0.0):
        self.seed = seed
        self.hostile = hostile  # the share of requests that are hostile (mixserve/soak/hostile.py)
        self.rng = random.Random(seed)
        self.members = members  # name -> tokenizer fingerprint
        self.model_name = model_name
        self.disconnect_rate = disconnect_rate
        self.count = 0
        self.open_sessions: list[dict] = []  # finished turns that may be continued: {"session", "seed", ...}

    def _weightings(self, weight) -> list[dict[str, float] | None]:
        """The weightings a request may carry: the config's, all members, the members that share a
        tokenizer, one member of each tokenizer (ME across tokenizers, each at `weight()`)."""
        shared = [m for m in self.members if sum(t == self.members[m] for t in self.members.values()) > 1]
        choices = [None, {m: 1.0 for m in self.members}]
        if len(shared) > 1:
            choices.append({m: (1.0 if m in shared else 0.0) for m in self.members})
        if len(set(self.members.values())) > 1:
            firsts = {t: m for m, t in reversed(list(self.members.items()))}
            choices.append({m: (weight() if m in firsts.values() else 0.0) for m in self.members})
        return choices

    def _weights(self) -> dict[str, float] | None:
        r = self.rng
        return r.choice([None, *self._weightings(lambda: r.choice([1.0, 2.0]))])  # the config's twice as often

    def primer(self) -> list[dict]:
        """One request of each kind next() draws, for the warm-up to send first and one at a time: no
        kind reaches the server for the first time under faults. Each member alone, CE and ME over
        each weighting, greedy, top-p, n > 1, a stop string, chat, streams over HTTP and gRPC, a named
        session, log-probs with and without echo on each member and on an ensemble of one tokenizer."""
        kinds = [dict(method="single", member=m, temperature=0.0) for m in self.members]
        weightings = self._weightings(lambda: 1.0)
        kinds += [dict(method=method, weights=w) for method in ("ce", "me") for w in weightings]
        kinds += [dict(method="me", temperature=0.8, top_p=0.9, n=2), dict(method="me", stop=[WORDS[0][:2]]),
                  dict(method="me", chat=True), dict(method="me", stream=True),
                  dict(method="me", proto="grpc", stream=True), dict(method="me", session=f"soak-primer-{self.seed}")]
        for echo in (False, True):
            kinds += [dict(method="single", member=m, logprobs=2, echo=echo) for m in self.members]
            kinds += [dict(method="me", weights=w, logprobs=2, echo=echo) for w in weightings if self._one_tokenizer(w)]
        kinds += [self._hostile(k) for k in hostile.KINDS] if self.hostile else []
        return [{**self._spec(), "proto": "http", **kind} for kind in kinds]

    def _spec(self) -> dict:
        r = self.rng
        self.count += 1
        return {"i": self.count, "proto": "grpc" if r.random() < 0.3 else "http", "seed": r.randrange(1 << 30),
                "max_tokens": r.randint(4, 40), "n": 1, "temperature": 1.0, "top_p": 1.0, "stop": [],
                "method": None, "member": None, "weights": None, "chat": False, "stream": False,
                "logprobs": None, "echo": False, "session": None, "continues": None, "disconnect_after": None,
                "hostile": None,
                "prompt": " ".join(r.choice(WORDS) for _ in range(r.randint(1, 8)))}

    def next(self) -> dict:
        r = self.rng
        spec = self._spec()
        if r.random() < self.hostile:
            return {**spec, "proto": "http", **self._hostile(r.choice(hostile.KINDS))}
        if self.open_sessions and r.random() < 0.08:
            return self._continue(spec, self.open_sessions.pop(r.randrange(len(self.open_sessions))))
        kind = r.random()
        if kind < 0.12:
            spec.update(method="single", member=r.choice(list(self.members)))
        elif kind < 0.27:
            spec.update(method="ce", weights=self._weights())
        else:
            spec.update(method="me", weights=self._weights())
        spec["n"] = r.choice([1, 1, 1, 2, 3])
        sampling = r.random()
        if sampling < 0.15:
            spec["temperature"] = 0.0
        elif sampling < 0.3:
            spec.update(temperature=0.8, top_p=0.9)
        if r.random() < 0.15:
            spec["stop"] = [r.choice(WORDS)[:2]]
        spec["chat"] = r.random() < 0.25
        spec["stream"] = spec["proto"] == "grpc" or r.random() < 0.5
        if spec["stream"] and r.random() < self.disconnect_rate:
            spec["disconnect_after"] = r.randint(1, 4)
        elif not spec["stream"] and not spec["chat"] and spec["method"] != "ce" and r.random() < 0.3:
            if spec["method"] == "single" or self._one_tokenizer(spec["weights"]):
                spec.update(logprobs=r.choice([0, 2]), echo=r.random() < 0.3)
        if spec["method"] == "me" and spec["n"] == 1 and not spec["stop"] and not spec["chat"] \
                and spec["disconnect_after"] is None and spec["logprobs"] is None and r.random() < 0.15:
            spec["session"] = f"soak-{spec['i']}-{r.randrange(1 << 30):x}"
        return spec

    @staticmethod
    def _hostile(kind: hostile.Hostile) -> dict:
        return {"hostile": kind.name, "chat": kind.path.endswith("chat/completions"), "stream": False}

    def _one_tokenizer(self, weights: dict | None) -> bool:
        used = [m for m in self.members if weights is None or weights.get(m, 0) > 0]
        return len({self.members[m] for m in used}) == 1

    def _continue(self, spec: dict, turn: dict) -> dict:
        """The same session, seed and weights as its last turn; no prompt."""
        spec.update(proto=turn["proto"], seed=turn["seed"], method="me", weights=turn["weights"],
                    session=turn["session"], continues=turn["i"], prompt=None, stream=turn["proto"] == "grpc")
        return spec

    def finished(self, out: Outcome) -> None:
        if out.spec["session"] and out.status == 200 and out.finish == ["length"]:
            self.open_sessions.append(out.spec)


def http_body(spec: dict, model_name: str) -> dict:
    body = {"model": spec["member"] if spec["method"] == "single" else model_name,
            "max_tokens": spec["max_tokens"], "seed": spec["seed"], "n": spec["n"],
            "temperature": spec["temperature"], "top_p": spec["top_p"], "stream": spec["stream"]}
    if spec["method"] != "single" and spec["method"]:
        body["method"] = spec["method"]
    for key in ("weights", "session", "logprobs"):
        if spec[key] is not None:
            body[key] = spec[key]
    if spec["stop"]:
        body["stop"] = spec["stop"]
    if spec["echo"]:
        body["echo"] = True
    if spec["stream"]:
        body["stream_options"] = {"include_usage": True}
    if spec["prompt"] is not None:
        if spec["chat"]:
            body["messages"] = [{"role": "user", "content": spec["prompt"]}]
        else:
            body["prompt"] = spec["prompt"]
    return body


class Client:
    """Sends specs over HTTP (aiohttp) or gRPC (grpc.aio) and records the outcome."""

    def __init__(self, http: str, grpc_target: str | None, model_name: str, clock, timeout_s: float,
                 members: list[str] = ()):
        self.http = http
        self.model_name = model_name
        self.members = list(members)  # names, for hostile bodies that name them
        self.clock = clock  # seconds since the soak started
        self.timeout_s = timeout_s
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
        # A client reconnects within a second of the server coming back (gRPC's default backoff grows
        # to two minutes: after a router restart it would fail calls long after the server is up).
        options = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]
        self.channel = grpc.aio.insecure_channel(grpc_target, options=options) if grpc_target else None

    async def close(self) -> None:
        await self.session.close()
        if self.channel is not None:
            await self.channel.close()

    async def send(self, spec: dict) -> Outcome:
        out = Outcome(spec, self.clock())
        try:
            await asyncio.wait_for(self._grpc(spec, out) if spec["proto"] == "grpc" else self._http(spec, out),
                                   self.timeout_s)
        except asyncio.TimeoutError:
            out.status, out.message = TIMEOUT, f"no answer within {self.timeout_s:g} s"
        except (aiohttp.ClientError, ConnectionError) as e:
            out.status, out.message = TRANSPORT, f"{type(e).__name__}: {e}"
        out.t1 = self.clock()
        return out

    async def _http(self, spec: dict, out: Outcome) -> None:
        path = "/v1/chat/completions" if spec["chat"] else "/v1/completions"
        if kind := hostile.BY_NAME.get(spec.get("hostile")):
            data = hostile.body(kind.name, self.model_name, self.members)
            request = self.session.post(self.http + kind.path, data=data, headers={"Content-Type": "application/json"})
        else:
            request = self.session.post(self.http + path, json=http_body(spec, self.model_name))
        async with request as resp:
            if resp.status != 200 or not spec["stream"]:
                body = await _json(resp)
                out.status = resp.status
                if resp.status == 200:
                    _full(out, body, spec["chat"])
                else:
                    _error(out, body)
                return
            texts: dict[int, list[str]] = {}
            finish: dict[int, str | None] = {}
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:  # a failure after the first chunk: the stream carries it
                    _error(out, event)
                    out.status = CODE_STATUS.get(out.code, 500)
                    return
                for c in event.get("choices", []):
                    text = c["delta"].get("content", "") if spec["chat"] else c["text"]
                    texts.setdefault(c["index"], []).append(text)
                    out.pieces.append((self.clock(), c["index"], text))
                    finish[c["index"]] = c.get("finish_reason") or finish.get(c["index"])
                if event.get("usage"):
                    out.member_tokens = event["usage"]["member_tokens"]
                if spec["disconnect_after"] is not None and len(out.pieces) >= spec["disconnect_after"]:
                    out.status = DISCONNECTED
                    _set_texts(out, texts, finish)
                    return  # leaving the block closes the connection: the server sees the client go
            out.status = 200 if out.member_tokens else TRANSPORT
            _set_texts(out, texts, finish)

    async def _grpc(self, spec: dict, out: Outcome) -> None:
        from mixserve.proto import pb2, pb2_grpc

        sampling = pb2.SamplingParams(temperature=spec["temperature"], top_p=spec["top_p"],
                                      max_tokens=spec["max_tokens"], stop=spec["stop"], seed=spec["seed"])
        req = pb2.GenerateRequest(method=spec["method"] or "", weights=spec["weights"] or {}, sampling=sampling,
                                  n=spec["n"], session=spec["session"] or "",
                                  model=spec["member"] if spec["method"] == "single" else "")
        if spec["prompt"] is not None:
            if spec["chat"]:
                req.messages.append(pb2.ChatMessage(role="user", content=spec["prompt"]))
            else:
                req.prompt = spec["prompt"]
        call = pb2_grpc.EnsembleStub(self.channel).Generate(req)
        texts: dict[int, list[str]] = {}
        finish: dict[int, str | None] = {}
        try:
            async for chunk in call:
                if chunk.HasField("usage"):
                    out.member_tokens = dict(chunk.usage.member_tokens)
                    continue
                texts.setdefault(chunk.index, []).append(chunk.text)
                out.pieces.append((self.clock(), chunk.index, chunk.text))
                finish[chunk.index] = chunk.finish_reason or finish.get(chunk.index)
                if spec["disconnect_after"] is not None and len(out.pieces) >= spec["disconnect_after"]:
                    call.cancel()
                    out.status = DISCONNECTED
                    _set_texts(out, texts, finish)
                    return
            out.status = 200
        except grpc.aio.AioRpcError as e:
            out.code, out.message = e.code().name, e.details() or ""
            out.status = GRPC_STATUS.get(e.code().name, TRANSPORT)
        _set_texts(out, texts, finish)


async def _json(resp) -> dict:
    try:
        return await resp.json(content_type=None)
    except ValueError:
        return {"error": {"message": (await resp.text())[:200], "code": None}}


def _full(out: Outcome, body: dict, chat: bool) -> None:
    choices = sorted(body["choices"], key=lambda c: c["index"])
    out.texts = [c["message"]["content"] if chat else c["text"] for c in choices]
    out.finish = [c["finish_reason"] for c in choices]
    out.member_tokens = body["usage"]["member_tokens"]
    lp = choices[0].get("logprobs")
    out.logprob_tokens = None if lp is None else len(lp["tokens"])


def _error(out: Outcome, body: dict) -> None:
    error = body.get("error") or {}
    out.code, out.message = error.get("code"), str(error.get("message", ""))


def _set_texts(out: Outcome, texts: dict[int, list[str]], finish: dict[int, str | None]) -> None:
    n = max([out.spec["n"] - 1, *texts]) + 1
    out.texts = ["".join(texts.get(j, [])) for j in range(n)]
    out.finish = [finish.get(j) for j in range(n)]


async def drive(client: Client, mix: Mix, until: float, workers: int, outcomes: list[Outcome],
                max_requests: int) -> None:
    """`workers` clients send back to back until `until` (soak seconds) or `max_requests` in all.
    A refused request (429) backs off a while, as a client should: the offered load stays about
    `workers` requests at a time without the refusals drowning the answers."""
    async def worker(k: int) -> None:
        backoff = random.Random(k)
        while client.clock() < until and mix.count < max_requests:
            out = await client.send(mix.next())
            outcomes.append(out)
            mix.finished(out)
            if out.status == 429:
                await asyncio.sleep(backoff.uniform(0.2, 1.0))

    await asyncio.gather(*(worker(k) for k in range(workers)))


def clock_from(start: float):
    return lambda: time.monotonic() - start
