"""The byte-level BPE tokenizer: exact round trips, training, special tokens, bad files."""
import json
import random
import re

import pytest
from hypothesis import given, settings, strategies as st

from minispec import load_tokenizer
from minispec.tokenizer import EOT, SPLIT_PATTERN, Tokenizer, TokenizerError

TOK = load_tokenizer()


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_is_exact_on_any_text(text):
    assert TOK.decode(TOK.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text())
def test_split_pattern_covers_every_character(text):
    assert "".join(re.findall(SPLIT_PATTERN, text)) == text


def test_shipped_tokenizer_shape():
    assert TOK.vocab_size == 4096
    assert TOK.eot_id == 4095
    assert all(0 <= i < TOK.vocab_size for i in TOK.encode("def f(x):\n    return x  # ünïcödé ✓ 中文"))


def test_merges_compress_domain_text():
    text = "Question: Ava has 12 apples. How many apples does Ava have now?\n"
    assert len(TOK.encode(text)) < len(text.encode()) / 2


def test_special_token_is_text_unless_allowed():
    assert TOK.eot_id not in TOK.encode(EOT)
    assert TOK.encode(f"a{EOT}b", allow_special=True) == TOK.encode("a") + [TOK.eot_id] + TOK.encode("b")
    assert TOK.decode([TOK.eot_id]) == EOT


def test_training_is_deterministic_and_learns_frequent_pairs():
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8))) for _ in range(300)]
    text = "the cat sat on the mat. " * 50 + " ".join(words)
    a, b = Tokenizer.train(text, 300), Tokenizer.train(text, 300)
    assert a.merges == b.merges
    assert len(a.merges) == 300 - 257 and a.vocab_size == 300
    assert len(a.encode(" the cat")) < len(" the cat".encode())
    assert a.decode(a.encode(text)) == text


def test_save_load_round_trip(tmp_path):
    t = Tokenizer.train("hello world " * 20, 270)
    t.save(tmp_path / "t.json")
    u = Tokenizer.load(tmp_path / "t.json")
    assert u.merges == t.merges and u.encode("hello") == t.encode("hello")


def test_decode_rejects_unknown_ids():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        TOK.decode([TOK.vocab_size])


@pytest.mark.parametrize("content, message", [
    ("not json", "cannot read"),
    (json.dumps({"format": "something-else"}), "not a minispec BPE"),
    (json.dumps({"format": "minispec-bpe", "version": 99}), "version"),
    (json.dumps({"format": "minispec-bpe", "version": 1, "pattern": SPLIT_PATTERN,
                 "merges": [[1, 5000]], "special_tokens": {EOT: 257}}), "unknown token"),
])
def test_bad_tokenizer_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "tok.json"
    path.write_text(content)
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.load(path)
