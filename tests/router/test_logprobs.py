"""logprobs and echo on /v1/completions through the served app, as evaluation harnesses ask for them
(lm-eval's local-completions sends token ids, echo, logprobs=1, max_tokens=1)."""
import math

import openai
import pytest
import requests
from transformers import AutoTokenizer


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.http + "/v1", api_key="unused", max_retries=0, timeout=60)


def score(client, model, prompt, **extra):
    done = client.completions.create(model=model, prompt=prompt, max_tokens=1, echo=True, logprobs=2,
                                     temperature=0, seed=1, extra_body=extra)
    return done.model_dump()["choices"][0]


def test_echo_scores_the_prompt_and_the_reply(client):
    choice = score(client, "a", "the cat sat")
    lp = choice["logprobs"]
    assert choice["text"].startswith("the cat sat") and len(lp["tokens"]) >= 4
    assert "".join(lp["tokens"][:-1]) == "the cat sat"  # the prompt's tokens, then the reply's one
    assert lp["token_logprobs"][0] is None and all(v <= 0 for v in lp["token_logprobs"][1:])
    assert lp["text_offset"][0] == 0 and lp["text_offset"][1] == len(lp["tokens"][0])
    # Greedy: the reply's token is the most likely one, so it tops its own alternatives.
    assert lp["token_logprobs"][-1] == pytest.approx(max(lp["top_logprobs"][-1].values()), abs=1e-6)
    assert all(len(top) <= 2 for top in lp["top_logprobs"][1:])


def test_without_echo_only_the_reply_is_scored(client):
    done = client.completions.create(model="a", prompt="the cat sat", max_tokens=3, logprobs=1, temperature=0)
    lp = done.model_dump()["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 3 and None not in lp["token_logprobs"]
    assert lp["text_offset"][0] == len("the cat sat")  # offsets count from the prompt's start


def test_the_ensemble_scores_with_its_mixture(client):
    """Over the members that share a tokenizer: log(0.5 p_a + 0.5 p_b) at every position, from the
    same server's per-member scores."""
    a, b = score(client, "a", "a river ran"), score(client, "b", "a river ran")
    mixed = score(client, "mixserve", "a river ran", weights={"a": 1, "b": 1}, method="me")
    assert mixed["logprobs"]["tokens"][:-1] == a["logprobs"]["tokens"][:-1]
    prompt_len = len(a["logprobs"]["tokens"]) - 1
    for t in range(1, prompt_len):
        expected = math.log(0.5 * math.exp(a["logprobs"]["token_logprobs"][t]) +
                            0.5 * math.exp(b["logprobs"]["token_logprobs"][t]))
        assert mixed["logprobs"]["token_logprobs"][t] == pytest.approx(expected, abs=1e-4)


def test_a_prompt_of_token_ids_reads_as_its_text(client, tiny_dir):
    ids = AutoTokenizer.from_pretrained(tiny_dir / "a").encode("the dog ran")
    by_text, by_ids = score(client, "mixserve", "the dog ran", weights={"a": 1, "b": 1}), \
        score(client, "mixserve", [ids], weights={"a": 1, "b": 1})  # a batch of one, as lm-eval sends it
    assert by_ids == by_text


@pytest.mark.parametrize("body, param, message", [
    ({"prompt": "x", "logprobs": 1}, "logprobs", "log-probabilities of an ensemble needs members that share"),
    ({"prompt": [5, 6], "weights": {"a": 1, "c": 1}}, "prompt", "a prompt of token ids needs members that share"),
    ({"prompt": [5, 100000], "model": "a"}, "prompt", "the vocabulary has"),
    ({"prompt": [5, True], "model": "a"}, "prompt", "Input should be a valid integer"),
    ({"prompt": "x", "model": "a", "logprobs": 99}, "logprobs", "between 0 and 20"),
    ({"prompt": "x", "model": "a", "logprobs": 1, "stream": True}, "logprobs", "stream: false"),
])
def test_token_level_mistakes_get_400_naming_the_field(server, body, param, message):
    r = requests.post(server.http + "/v1/completions", json={"max_tokens": 2, **body}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and message in r.json()["error"]["message"]


def test_chat_says_where_logprobs_are(server):
    r = requests.post(server.http + "/v1/chat/completions", timeout=60,
                      json={"messages": [{"role": "user", "content": "hi"}], "logprobs": True})
    assert r.status_code == 400 and "/v1/completions" in r.json()["error"]["message"]
