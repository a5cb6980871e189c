"""API keys (mixserve/serving/keys.py): a key variable named but unset or empty stops the server with
a clear error; with several keys, a named session belongs to the key that started it, and any other
key continuing it gets exactly the 404 of a name never used."""
import asyncio
import os
import subprocess
import sys
import time
import uuid

import grpc
import pytest
import requests
import yaml

from mixserve.config import ConfigError
from mixserve.proto import pb2, pb2_grpc
from mixserve.router.clients import LocalMember
from mixserve.router.request import GenerateRequest, NotFoundError
from mixserve.router.snapshot import SessionStore
from mixserve.serving.keys import ApiKeys
from mixserve.serving.openai_http import error_body
from mixserve.serving.service import EnsembleService, UnauthorizedError
from tests.fakes import FakeCore, fake_router


def service(monkeypatch, keys: str | None) -> EnsembleService:
    if keys is None:
        monkeypatch.delenv("KEYS_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("KEYS_TEST_KEY", keys)
    router = fake_router({"a": FakeCore("a")}, {"a": 1}, store=LocalMember(SessionStore()), api_key_env="KEYS_TEST_KEY")
    return EnsembleService(router)


@pytest.mark.parametrize("value, said", [(None, "is not set"), ("", "is empty"), (" , ", "is empty")])
def test_a_key_variable_named_but_unset_or_empty_stops_the_service(monkeypatch, value, said):
    with pytest.raises(ConfigError, match=f"api_key_env names KEYS_TEST_KEY, which {said} in the server's "
                                          f"environment: set it to the key clients must send"):
        service(monkeypatch, value)


def test_each_of_several_keys_is_let_in_as_its_own_owner(monkeypatch):
    svc = service(monkeypatch, "k1, k2")
    one, two = svc.authorize("Bearer k1"), svc.authorize("Bearer k2")
    assert one != two and "k1" not in one and "/" not in one + two
    for bad in (None, "", "Bearer k3", "Bearer k1,k2", "k1x"):
        with pytest.raises(UnauthorizedError, match="Authorization: Bearer"):
            svc.authorize(bad)
    assert ApiKeys([]).owner(None) == ""  # no keys configured: one anonymous owner


def test_another_keys_continue_is_the_404_of_a_name_never_used(monkeypatch):
    svc = service(monkeypatch, "k1,k2")
    mine, theirs = svc.authorize("Bearer k1"), svc.authorize("Bearer k2")

    def run(owner, **fields):
        request = GenerateRequest(**{"max_tokens": 4, "seed": 2, **fields})
        return asyncio.run(svc.generate(svc.validate(request, owner))).choices[0]

    def refusal(owner, **fields):
        with pytest.raises(NotFoundError) as e:
            run(owner, **fields)
        return e.value.status, error_body(e.value)

    never = refusal(theirs, session="chat")
    first = run(mine, prompt="hi", session="chat")
    assert refusal(theirs, session="chat") == never
    assert never[0] == 404 and "unknown session 'chat'" in never[1]["error"]["message"]
    own = run(theirs, prompt="yo", session="chat")  # the name is free for them too: no 400 "exists"
    # Each key's session goes on from its own start, untouched by the other's.
    assert first.token_ids + run(mine, session="chat").token_ids == run(mine, prompt="hi", max_tokens=8).token_ids
    assert own.token_ids + run(theirs, session="chat").token_ids == run(theirs, prompt="yo", max_tokens=8).token_ids


def test_mixserve_serve_refuses_to_start_on_an_empty_key_variable(tiny_dir):
    config = yaml.safe_load((tiny_dir / "ensemble.yaml").read_text())
    path = tiny_dir / "keyed.yaml"  # beside the members it names
    path.write_text(yaml.safe_dump({**config, "api_key_env": "KEYS_TEST_EMPTY"}))
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "mixserve", "serve", "--config", str(path)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "KEYS_TEST_EMPTY": "", "RAY_AUTH_MODE": "disabled"})
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "api_key_env names KEYS_TEST_EMPTY, which is empty" in out.stderr
    assert "loading" not in out.stdout  # refused before Ray and the members started
    assert time.monotonic() - started < 60


def test_over_http_and_grpc_a_foreign_keys_continue_is_a_never_used_names_404(secure_server):
    url = secure_server.http + "/v1/completions"
    mine, theirs = ({"Authorization": f"Bearer {key}"} for key in ("sesame", "open-sesame"))
    name = f"chat-{uuid.uuid4().hex}"

    def post(headers, **body):
        return requests.post(url, json={"max_tokens": 4, "seed": 1, **body}, headers=headers, timeout=60)

    never = post(theirs, session=name)
    assert post(mine, prompt="the sun", session=name).status_code == 200
    foreign = post(theirs, session=name)
    assert foreign.status_code == never.status_code == 404 and foreign.json() == never.json()
    assert post(mine, session=name).status_code == 200
    with grpc.insecure_channel(secure_server.grpc) as channel:
        stub = pb2_grpc.EnsembleStub(channel)
        details = []
        for session in (name, f"never-{name}"):
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Generate(pb2.GenerateRequest(session=session, sampling=pb2.SamplingParams(max_tokens=4)),
                                   metadata=[("authorization", "Bearer open-sesame")], timeout=60))
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
            details.append(e.value.details().replace(session, "NAME"))
        assert details[0] == details[1]
