"""Members with different tokenizers: ME shares text, CE is refused with a clear error."""
import pytest

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


def test_ce_across_tokenizers_is_refused_naming_the_members(hetero):
    with pytest.raises(RequestError, match="different tokenizers: a; c"):
        hetero.generate(prompt="the dog", method="ce")
    result = hetero.generate(prompt="the dog", method="single", member="c", max_tokens=5)
    assert set(result.choices[0].members) == {"c"}
