"""What the HTTP ingress checks before it parses a body (mixserve/serving/http_guard.py): a body over
max_body_bytes is refused with 413 without being read, declared or chunked; a body nested past
MAX_JSON_DEPTH with 400; the server serves on. Through Serve on loopback, and in this process where
the bytes the app pulls can be counted."""
import asyncio
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from mixserve.config import MAX_BODY_BYTES
from mixserve.router.request import RequestError
from mixserve.serving.http_app import http_app
from mixserve.serving.http_guard import MAX_JSON_DEPTH, check_depth
from mixserve.serving.service import EnsembleService
from tests.fakes import FakeCore, fake_router

NORMAL = {"prompt": "the sky", "max_tokens": 2, "seed": 0}


def serves(base: str) -> bool:
    return requests.post(base + "/v1/completions", json=NORMAL, timeout=60).status_code == 200


def reply_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        part = sock.recv(4096)
        if not part:
            break
        head += part
    return head


def test_a_body_declared_over_the_limit_is_refused_before_it_is_read(server):
    """200 MB declared, a few bytes sent: a server that read the body first would wait for the rest
    until the socket's timeout; this one answers at once."""
    url = urlsplit(server.http)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200000000\r\n\r\n{\"prompt\": \"")
        head = reply_head(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert serves(server.http)


def test_a_chunked_body_is_refused_once_its_count_passes_the_limit(server):
    def chunks():
        yield b'{"prompt": "'
        for _ in range(2 * MAX_BODY_BYTES // 65536):
            yield b"a" * 65536
        yield b'"}'

    r = requests.post(server.http + "/v1/completions", data=chunks(), timeout=60,
                      headers={"Content-Type": "application/json"})  # a generator: chunked transfer encoding
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert serves(server.http)


def test_the_app_pulls_no_more_of_an_endless_body_than_the_limit():
    app = http_app(EnsembleService(fake_router({"a": FakeCore("a")}, {"a": 1}, max_body_bytes=1 << 20)))
    pulled, sent = [], []

    async def receive():
        pulled.append(1)
        return {"type": "http.request", "body": b" " * 65536, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": [], "query_string": b"",
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1)}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413
    assert len(pulled) == (1 << 20) // 65536 + 1  # the limit's worth, and the chunk that passed it


@pytest.mark.parametrize("body, depth", [
    ('{"messages": [{"role": "user", "content": "[[[[[[[[[[[[[[[[[[[[["}]}', 3),  # brackets in a string
    ('{"prompt": [[1, 2]]}', 3),
    ('{"a": "\\"[[[[[[[[[[[[[[[[[[[[[[[[["}', 1),  # an escaped quote does not end the string
    ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), MAX_JSON_DEPTH + 1),
])
def test_depth_counts_brackets_outside_strings(body, depth):
    if depth <= MAX_JSON_DEPTH:
        check_depth(body.encode())
    else:
        with pytest.raises(RequestError, match=f"nests {depth} levels deep"):
            check_depth(body.encode())
    json.loads(body)  # each is valid JSON
