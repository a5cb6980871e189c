"""The simulated member's tokenizer (engine sim: actors/sim_engine.py): byte-level BPE with a vocabulary
of a real model's size, built from rules in a fraction of a second, no training and no files.

Ids 0-2 are the end token and the chat markers; then the 256 bytes; then every pair, triple and
quadruple of lowercase letters and the space, in that order, up to `vocab_size`. Text in any bytes
tokenizes (the bytes are all there), so prompts, chats and other members' text work as on a real
member, and members with the same vocab_size share token ids (one fingerprint).
"""
from __future__ import annotations

import functools
import itertools

from mixserve.sim import MAX_VOCAB, MIN_VOCAB

SPECIAL = ("<|endoftext|>", "<|user|>", "<|assistant|>")  # the end token, then the chat's role markers
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _merges(byte_char: dict[int, str]):
    """(left, right) pairs in merge order: words of 2, then 3, then 4 of the letters and the space."""
    letters = [byte_char[b] for b in b" abcdefghijklmnopqrstuvwxyz"]
    pairs = [a + b for a, b in itertools.product(letters, repeat=2)]
    yield from itertools.product(letters, repeat=2)
    yield from itertools.product(pairs, letters)
    yield from itertools.product(pairs, repeat=2)


@functools.lru_cache(maxsize=4)
def sim_tokenizer(vocab_size: int):
    """A transformers tokenizer of exactly `vocab_size` ids (cached: replicas in one process share it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if not MIN_VOCAB <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be between {MIN_VOCAB} and {MAX_VOCAB} (got {vocab_size})")
    byte_char = _byte_chars()
    vocab = {token: i for i, token in enumerate(SPECIAL)}
    vocab.update({byte_char[b]: len(SPECIAL) + b for b in range(256)})
    merges = list(itertools.islice(_merges(byte_char), vocab_size - len(vocab)))
    for left, right in merges:
        vocab[left + right] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIAL[0], additional_special_tokens=list(SPECIAL[1:]))
    hf.chat_template = CHAT_TEMPLATE
    return hf


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte -> printable character table, as ByteLevel writes tokens."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return {b: chr(b if b in printable else next(extra)) for b in range(256)}
