"""A byte-level BPE tokenizer, trained by the project (GPT-2 style).

Text is split into chunks by a regular expression (words with their leading space, numbers
of up to three digits, runs of punctuation, whitespace), each chunk is turned into its UTF-8
bytes (ids 0..255), and learned merges join the most frequent adjacent pairs into new ids.
Because the base alphabet is all 256 bytes, any UTF-8 text round-trips exactly.

    tok = Tokenizer.train(text, vocab_size=4096)
    ids = tok.encode("To be, or not to be")
    tok.decode(ids) == "To be, or not to be"
"""
from __future__ import annotations

import json
import re
from collections import Counter

# Words (letters and underscores) with an optional leading space, 1-3 digit numbers,
# punctuation runs, then whitespace (a run of spaces leaves its last space to the next word,
# so code indentation becomes a few reusable tokens). Every character matches some branch.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d]+| ?\d{1,3}| ?[^\s\w]+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"
FORMAT_VERSION = 1


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used (corrupt, foreign, or from another version)."""


class Tokenizer:
    def __init__(self, merges: list[tuple[int, int]], special_tokens: dict[str, int] | None = None,
                 pattern: str = SPLIT_PATTERN):
        self.merges = [tuple(m) for m in merges]  # merge i creates id 256 + i
        self.ranks = {pair: i for i, pair in enumerate(self.merges)}
        self.vocab = [bytes([i]) for i in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        n = len(self.vocab)
        self.special_tokens = dict(special_tokens or {EOT: n})
        self.special_ids = {i: s for s, i in self.special_tokens.items()}
        self.pattern = pattern
        self._split = re.compile(pattern)
        self._special_split = re.compile("(" + "|".join(re.escape(s) for s in self.special_tokens) + ")")
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    @property
    def eot_id(self) -> int:
        return self.special_tokens[EOT]

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, text: str, vocab_size: int, verbose: bool = False) -> "Tokenizer":
        """Learn vocab_size - 257 merges (256 bytes + 1 end-of-text token are fixed)."""
        n_merges = vocab_size - 256 - 1
        if n_merges < 0:
            raise ValueError(f"vocab_size must be at least 257, got {vocab_size}")
        chunk_counts = Counter(re.findall(SPLIT_PATTERN, text))
        words = [list(c.encode("utf-8")) for c in chunk_counts]  # symbols of each unique chunk
        counts = list(chunk_counts.values())
        pair_counts: Counter = Counter()
        where: dict[tuple[int, int], set[int]] = {}  # pair -> words that (may) contain it
        for wi, w in enumerate(words):
            for pair in zip(w, w[1:]):
                pair_counts[pair] += counts[wi]
                where.setdefault(pair, set()).add(wi)
        merges = []
        for step in range(n_merges):
            if not pair_counts:
                break
            pair = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
            new_id = 256 + step
            merges.append(pair)
            for wi in where.pop(pair, ()):
                w, c = words[wi], counts[wi]
                if len(w) < 2:
                    continue
                for p in zip(w, w[1:]):  # remove this word's old pairs ...
                    pair_counts[p] -= c
                    if pair_counts[p] <= 0:
                        del pair_counts[p]
                w = _merge(w, pair, new_id)
                words[wi] = w
                for p in zip(w, w[1:]):  # ... and add its new ones
                    pair_counts[p] += c
                    where.setdefault(p, set()).add(wi)
            pair_counts.pop(pair, None)
            if verbose and step % 500 == 0:
                print(f"merge {step}/{n_merges}")
        return cls(merges)

    # ------------------------------------------------------------------ encode / decode
    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, 256 + self.ranks[pair])
        if len(self._cache) < 200_000:
            self._cache[chunk] = ids
        return ids

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Text -> token ids. Special-token strings are plain text unless allow_special."""
        parts = self._special_split.split(text) if allow_special else [text]
        ids: list[int] = []
        for part in parts:
            if part in self.special_tokens and allow_special:
                ids.append(self.special_tokens[part])
                continue
            for chunk in self._split.findall(part):
                ids.extend(self._encode_chunk(chunk))
        return ids

    def decode_bytes(self, ids) -> bytes:
        out = []
        for i in ids:
            i = int(i)
            if i in self.special_ids:
                out.append(self.special_ids[i].encode("utf-8"))
            elif 0 <= i < len(self.vocab):
                out.append(self.vocab[i])
            else:
                raise ValueError(f"token id {i} is outside the vocabulary (size {self.vocab_size})")
        return b"".join(out)

    def decode(self, ids) -> str:
        """Token ids -> text. A sequence cut inside a UTF-8 character shows U+FFFD there."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_str(self, i: int) -> str:
        """One token as readable text (for tables and plots)."""
        return self.decode([i])

    # ------------------------------------------------------------------ files
    def to_dict(self) -> dict:
        return {"format": "minispec-bpe", "version": FORMAT_VERSION, "pattern": self.pattern,
                "merges": [list(m) for m in self.merges], "special_tokens": self.special_tokens}

    def save(self, path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path) -> "Tokenizer":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise TokenizerError(f"cannot read tokenizer file {path}: {e}") from e
        if not isinstance(d, dict) or d.get("format") != "minispec-bpe":
            raise TokenizerError(f"{path} is not a minispec BPE tokenizer file")
        if d.get("version") != FORMAT_VERSION:
            raise TokenizerError(f"{path} has tokenizer format version {d.get('version')}, "
                                 f"this minispec reads version {FORMAT_VERSION}")
        merges = d["merges"]
        for i, m in enumerate(merges):
            if len(m) != 2 or not all(isinstance(x, int) and 0 <= x < 256 + i for x in m):
                raise TokenizerError(f"{path}: merge {i} ({m}) refers to an unknown token")
        return cls([tuple(m) for m in merges], d["special_tokens"], d["pattern"])


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every non-overlapping occurrence of pair in ids, left to right, by new_id."""
    out, i, n = [], 0, len(ids)
    a, b = pair
    while i < n:
        if i < n - 1 and ids[i] == a and ids[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out
