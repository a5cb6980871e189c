"""Exact token bytes for the tiny byte-level tokenizer, including characters split across tokens."""
import pytest
from transformers import AutoTokenizer

from mixserve.actors.codec import TokenCodec


@pytest.fixture(scope="module")
def codec(tiny_dir):
    return TokenCodec(AutoTokenizer.from_pretrained(tiny_dir / "a"))


def test_pieces_concatenate_to_the_text(codec):
    text = "the cat sings: héllo → 火!"
    ids = codec.tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(codec.piece(i) for i in ids) == text.encode()


@pytest.mark.parametrize("data", [b"the dog", "é".encode()[:1], b"ab" + "火".encode()[:2], b"\xff\xfe x"])
def test_encode_round_trips_any_bytes(codec, data):
    assert b"".join(codec.piece(i) for i in codec.encode(data)) == data


def test_fingerprint_tells_tokenizers_apart(tiny_dir, codec):
    assert TokenCodec(AutoTokenizer.from_pretrained(tiny_dir / "b")).fingerprint == codec.fingerprint
    assert TokenCodec(AutoTokenizer.from_pretrained(tiny_dir / "c")).fingerprint != codec.fingerprint
