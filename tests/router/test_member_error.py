"""A real member that raises on a request, through the served app: HTTP 500 and gRPC INTERNAL with
code member_error and a message naming the member; its sessions are freed and it keeps serving.

The fault is a common one in model folders: a token added to the tokenizer without resizing the
model's embeddings. The member loads; a prompt that holds the token makes its forward index past the
embedding rows (IndexError), a fault in the member, not in the input.
"""
import shutil

import grpc
import pytest
import requests
from ray import serve
from transformers import AutoTokenizer

from mixserve.proto import pb2, pb2_grpc
from tests.conftest import _deploy
from tests.serving.test_app_http import wait_no_live_sessions

ADDED = "<|tool|>"  # in the faulty member's tokenizer, past its model's embedding rows
PROMPT = ADDED + " the cat"


@pytest.fixture(scope="module")
def faulty_server(tiny_dir, serve_instance):
    if not (tiny_dir / "faulty").exists():
        shutil.copytree(tiny_dir / "a", tiny_dir / "faulty")
        tokenizer = AutoTokenizer.from_pretrained(tiny_dir / "faulty")
        tokenizer.add_tokens([ADDED], special_tokens=True)  # no resize_token_embeddings: the fault
        tokenizer.save_pretrained(tiny_dir / "faulty")
    members = [{"name": m, "model": m, "weight": 1, "resources": {"num_cpus": 0.5}} for m in ("a", "faulty")]
    yield _deploy(tiny_dir, serve_instance, "faulty", "/faulty", {"members": members})
    serve.delete("faulty")  # its members go with its replica


def test_a_member_that_raises_fails_its_request_with_a_named_500_then_serves_on(faulty_server):
    body = {"prompt": PROMPT, "max_tokens": 32, "seed": 4, "n": 2}
    answer = requests.post(faulty_server.http + "/v1/completions", json=body, timeout=60)
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "member_error"
    assert error["message"] == "member 'faulty' failed on this request: IndexError: index out of range in self"
    assert wait_no_live_sessions(faulty_server, 3.0) == {"a": 0, "faulty": 0}

    # The member is still up: a prompt without the added token is served by both members.
    fine = requests.post(faulty_server.http + "/v1/completions", timeout=60,
                         json={"prompt": "the cat", "max_tokens": 32, "seed": 4})
    assert fine.status_code == 200, fine.text
    assert set(fine.json()["choices"][0]["members"]) == {"a", "faulty"}

    with grpc.insecure_channel(faulty_server.grpc) as channel:
        stub = pb2_grpc.EnsembleStub(channel)
        request = pb2.GenerateRequest(prompt=PROMPT, n=2, sampling=pb2.SamplingParams(max_tokens=32, seed=4))
        with pytest.raises(grpc.RpcError) as failed:
            list(stub.Generate(request, timeout=60))
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    assert failed.value.details() == error["message"]
    assert wait_no_live_sessions(faulty_server, 3.0) == {"a": 0, "faulty": 0}
