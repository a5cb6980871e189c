"""Members with different tokenizers: ME shares text; CE mixes over the union of their vocabularies
by token bytes (router/vocab.py)."""
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixserve.actors.codec import TokenCodec
from mixserve.router.request import RequestError


def test_me_across_tokenizers_generates_and_both_members_write(hetero):
    result = hetero.generate(prompt="the dog", max_tokens=60, seed=2)
    choice = result.choices[0]
    assert set(choice.members) == {"a", "c"} and len(choice.token_ids) > 0
    runs = [m for i, m in enumerate(choice.members) if i == 0 or choice.members[i - 1] != m]
    assert [m for m, _ in choice.stretches] == runs  # who wrote what, stretch by stretch
    assert set(result.prompt_token_ids) == {"a", "c"}
    assert result.prompt_token_ids["a"] != result.prompt_token_ids["c"]  # each in its own vocabulary
    again = hetero.generate(prompt="the dog", max_tokens=60, seed=2)
    assert again.choices[0].text == choice.text
    assert hetero.live_sessions() == {"a": 0, "c": 0}


@torch.inference_mode()
def union_mixture(tiny_dir, prompt: str, weights: dict[str, float]) -> dict[bytes, float]:
    """The next token's distribution over byte strings, from the models directly."""
    mixture: dict[bytes, float] = {}
    for name, w in weights.items():
        tok = AutoTokenizer.from_pretrained(tiny_dir / name)
        model = AutoModelForCausalLM.from_pretrained(tiny_dir / name, dtype=torch.float32)
        probs = torch.softmax(model(torch.tensor([tok.encode(prompt)])).logits[0, -1, : len(tok)].double(), -1)
        for token, piece in enumerate(TokenCodec(tok).pieces):
            key = b"<eos>" if token == tok.eos_token_id else piece
            mixture[key] = mixture.get(key, 0.0) + w * float(probs[token])
    return mixture


@pytest.mark.parametrize("prompt", ["the dog", "a river ran", "if the"])
def test_greedy_ce_across_tokenizers_takes_the_argmax_over_token_bytes(hetero, tiny_dir, prompt):
    mixture = union_mixture(tiny_dir, prompt, {"a": 0.5, "c": 0.5})
    best = max(mixture, key=mixture.get)
    result = hetero.generate(prompt=prompt, method="ce", temperature=0, max_tokens=1)
    assert result.choices[0].text == ("" if best == b"<eos>" else best.decode("utf-8", errors="replace"))


def test_ce_across_tokenizers_samples_text_every_member_follows(hetero):
    result = hetero.generate(prompt="the dog", method="ce", max_tokens=30, seed=5)
    choice = result.choices[0]
    assert len(choice.token_ids) > 0 and set(choice.members) == {"mixture"}
    assert result.usage.member_forward_calls == 2 * len(choice.token_ids)
    assert hetero.generate(prompt="the dog", method="ce", max_tokens=30, seed=5).choices[0].text == choice.text
    assert hetero.live_sessions() == {"a": 0, "c": 0}


def test_token_healing_across_tokenizers_is_deterministic_and_frees_everything(hetero):
    healed = [hetero.generate(prompt="the dog", max_tokens=40, seed=s, token_healing=True) for s in (2, 2, 3)]
    assert healed[0].choices[0].text == healed[1].choices[0].text
    assert all(len(r.choices[0].token_ids) > 0 for r in healed)
    assert hetero.live_sessions() == {"a": 0, "c": 0}
    with pytest.raises(RequestError, match="token_healing must be true or false"):
        hetero.generate(prompt="the dog", token_healing="yes")
