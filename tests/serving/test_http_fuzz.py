"""The HTTP app fuzzed from its own OpenAPI schema with schemathesis, as vLLM's CI fuzzes its OpenAI
server: bodies that fit the schema and bodies that break it, on every route. No answer may be a 5xx
or break the response schema, a body the schema refuses must be refused (4xx), and the app must serve
a normal request afterwards. The app runs in this process over fake members (tests/fakes.py), so a
run is seeded and takes seconds; and over the tiny members (real models on the transformers engine,
as Ray actors), fewer examples."""
import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (content_type_conformance, negative_data_rejection, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)
from starlette.testclient import TestClient

from mixserve.serving.http_app import http_app
from mixserve.serving.service import EnsembleService
from tests.fakes import FakeCore, fake_router

CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance,
          negative_data_rejection]
MODELS = [None, "mixserve", "a", "b"]


@pytest.fixture(scope="module")
def fake_app():
    cores = {m: FakeCore(m, eos_weight=0.05) for m in "ab"}
    return http_app(EnsembleService(fake_router(cores, {"a": 1, "b": 1}, max_concurrent_sessions=4,
                                                max_body_bytes=1 << 16)))


@st.composite
def steered(draw, cases):
    """A schemathesis case, steered toward what generates: random names rarely name a model or a
    member, so half the bodies name one, and ask for 1 to 8 tokens. Counts of tokens and samples
    past a few are cut, to keep a run short (their full ranges are tests/router/test_request.py's)."""
    case = draw(cases)
    body = case.body
    if isinstance(body, dict) and draw(st.booleans()):
        body["model"] = draw(st.sampled_from(MODELS))
        body.setdefault("max_tokens", draw(st.integers(1, 8)))
        if isinstance(body.get("weights"), dict):
            body["weights"] = {draw(st.sampled_from("ab")): w for w in body["weights"].values()}
    for name, most in (("max_tokens", 8), ("max_completion_tokens", 8), ("n", 3)):
        value = body.get(name) if isinstance(body, dict) else None
        if type(value) is int and value > most:
            body[name] = draw(st.integers(1, most))
    return case


@pytest.mark.parametrize("members, examples", [("fake", 300), ("tiny", 60)])
def test_no_body_the_schema_allows_or_refuses_gets_a_server_error(members, examples, request):
    app = request.getfixturevalue("fake_app") if members == "fake" else \
        http_app(EnsembleService(request.getfixturevalue("ensemble").router))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=steered(cases))
    def fuzz(case):
        case.call_and_validate(checks=CHECKS)

    fuzz()
    with TestClient(app) as client:
        served = client.post("/v1/completions", json={"prompt": "after", "max_tokens": 4, "seed": 1})
    assert served.status_code == 200, served.text
    assert served.json()["usage"]["completion_tokens"] >= 1


def test_the_schema_describes_every_body(fake_app):
    schema = fake_app.openapi()
    for path in ("/v1/completions", "/v1/chat/completions"):
        post = schema["paths"][path]["post"]
        assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert set(post["responses"]) == {"200", "4XX", "5XX"}  # no 422: FastAPI's is answered as 400
    bodies = schema["components"]["schemas"]
    assert bodies["CompletionRequest"]["additionalProperties"] is False
    assert bodies["CompletionRequest"]["properties"]["max_tokens"]["maximum"] == 4096
    assert bodies["ChatCompletionRequest"]["properties"]["messages"]["maxItems"] == 1024
    assert json.dumps(schema["paths"]["/v1/models"]["get"]["responses"]["200"]).count("ModelList") == 1
