"""Chapter 1: speculative decoding with a chain of drafts.

A drafter proposes up to gamma tokens; the target scores all of them in ONE forward pass;
a verification rule (minispec.verify) keeps a prefix of them and adds one token of its own.
Two drafters share the loop:
  DraftModelDrafter   a small language model with its own KV cache (method "sps")
  PromptLookupDrafter the continuation of the latest n-gram match in the context ("pld")

Any drafter has two methods:
  propose(tokens, k, params, generator) -> (drafts: list[int], q: (len(drafts), V) or None)
  commit(n_valid)  the first n_valid tokens are final: forget state beyond them
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch

from .sampling import SamplingParams, sample, warp
from .stats import GenerationStats
from .verify import verify_greedy, verify_sampling


# gamma per method, chosen by `python -m minispec sweep` on the shipped models (chapter 1)
DEFAULT_GAMMA = {"sps": 2, "pld": 6}


class DraftModelDrafter:
    """Chain drafting with a small LM: feed what it has not seen, then sample k tokens."""

    def __init__(self, draft, max_len: int):
        self.draft = draft
        self.cache = draft.new_cache(max_len)

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None):
        if k == 0:
            return [], None
        new = tokens[self.cache.length:]  # at least the last token, which the draft has not seen
        logits = self.draft(torch.tensor([new], device=self.draft.device), cache=self.cache,
                            logits_to_keep=1).logits[0, -1]                    # (V,)
        xs, qs = [], []
        for i in range(k):
            if params.greedy:
                x = logits.argmax()
            else:
                q = warp(logits, params)  # the SAME warping the target's p will get
                x = sample(q, generator)
                qs.append(q)
            xs.append(x)
            if i < k - 1:
                logits = self.draft(x.view(1, 1), cache=self.cache, logits_to_keep=1).logits[0, -1]
        return torch.stack(xs).tolist(), (torch.stack(qs) if qs else None)  # one device sync

    def commit(self, n_valid: int) -> None:
        self.cache.rollback(min(self.cache.length, n_valid))


class PromptLookupDrafter:
    """Prompt lookup decoding: find the latest earlier occurrence of the last n tokens
    (n = max_ngram down to min_ngram) and propose what followed it. Training-free; its q is
    one-hot (it proposes deterministically), which the sampling verifier handles exactly."""

    def __init__(self, vocab_size: int, max_ngram: int = 3, min_ngram: int = 1, device="cpu"):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.vocab_size, self.max_ngram, self.min_ngram = vocab_size, max_ngram, min_ngram
        self.device = device

    def lookup(self, tokens: list[int], k: int) -> list[int]:
        L = len(tokens)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            pattern = tokens[L - n:]
            for start in range(L - n - 1, -1, -1):  # latest match first
                if tokens[start:start + n] == pattern:
                    return tokens[start + n:start + n + k]
        return []

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None):
        drafts = self.lookup(tokens, k) if k else []
        if not drafts or params.greedy:
            return drafts, None
        q = torch.zeros(len(drafts), self.vocab_size, device=self.device)
        q[torch.arange(len(drafts)), torch.tensor(drafts)] = 1.0  # (k, V) one-hot
        return drafts, q

    def commit(self, n_valid: int) -> None:
        pass


def make_drafter(method: str, drafter, target, max_len: int, max_ngram: int = 3, min_ngram: int = 1):
    """The drafter for `method`, checked against the target. max_len: the longest the sequence
    gets (prompt + max_new_tokens); a draft model never needs its last position."""
    if method == "pld":
        if drafter is not None:
            raise ValueError("method 'pld' needs no drafter: it drafts from the context itself")
        return PromptLookupDrafter(target.vocab_size, max_ngram, min_ngram, target.device)
    if method == "sps":
        if drafter is None:
            raise ValueError("method 'sps' needs a draft model: generate(..., drafter=draft)")
        if drafter.vocab_size != target.vocab_size:
            raise ValueError(f"the draft's vocabulary ({drafter.vocab_size} tokens) differs from the "
                             f"target's ({target.vocab_size}): they must share one tokenizer")
        a, b = getattr(drafter, "tokenizer_sha256", None), getattr(target, "tokenizer_sha256", None)
        if a and b and a != b:
            raise ValueError("the draft was trained with a different tokenizer than the target "
                             f"(tokenizer sha256 {a[:12]}... vs {b[:12]}...)")
        if drafter.max_seq_len < max_len - 1:
            raise ValueError(f"the draft's context ({drafter.max_seq_len} tokens) is too short for "
                             f"this request ({max_len - 1} tokens)")
        if drafter.device != target.device:
            raise ValueError(f"the draft is on {drafter.device}, the target on {target.device}")
        return DraftModelDrafter(drafter, max_len - 1)
    raise ValueError(f"unknown speculative method {method!r}")


class Round(NamedTuple):
    drafts: list[int]          # proposed tokens x_1..x_k
    q: torch.Tensor | None     # (k, V) the drafter's distributions (None when greedy)
    p: torch.Tensor | None     # (k+1, V) the target's warped distributions (None when greedy)
    logits: torch.Tensor       # (k+1, V) the target's logits at the last token and each draft
    n_accepted: int
    next_token: int            # the correction (at a rejection) or the bonus token
    times: tuple[float, float, float]  # seconds drafting, in the target's pass, verifying


def draft_and_verify(target, cache, drafter, tokens: list[int], k: int, params: SamplingParams,
                     generator=None, verifier=verify_sampling) -> Round:
    """One round: propose k tokens, score them in ONE target pass, verify, roll back.

    On entry the target's cache holds tokens[:-1]; on return `tokens` has the accepted
    drafts and the next token appended, and both caches hold all but the new last token.
    """
    t0 = time.perf_counter()
    drafts, q = drafter.propose(tokens, k, params, generator)
    t1 = time.perf_counter()
    x = torch.tensor([[tokens[-1], *drafts]], device=target.device)              # (1, k+1)
    logits = target(x, cache=cache).logits[0]                                      # (k+1, V)
    t2 = time.perf_counter()
    p = None
    if params.greedy:
        n, nxt = verify_greedy(drafts, logits)
    else:
        p = warp(logits, params)
        n, nxt = verifier(drafts, q, p, generator)
    t3 = time.perf_counter()
    cache.rollback(len(tokens) + n)   # keep the last token and the n accepted drafts
    tokens += drafts[:n] + [nxt]
    drafter.commit(len(tokens) - 1)
    return Round(drafts, q, p, logits, n, nxt, (t1 - t0, t2 - t1, t3 - t2))


def speculative_generate(target, prompt: list[int], max_new_tokens: int, params: SamplingParams,
                         generator, eos_id, method: str, drafter=None, gamma: int | None = None,
                         max_ngram: int = 3, min_ngram: int = 1, verifier=verify_sampling):
    """Draft-then-verify rounds until max_new_tokens or eos_id. Returns (tokens, stats).

    Invariant: the target's cache holds every token but the last one (which is fed, with
    the drafts, at the start of the next round).
    """
    gamma = DEFAULT_GAMMA[method] if gamma is None and method in DEFAULT_GAMMA else gamma
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"gamma (draft tokens per round) must be an integer >= 1, got {gamma!r}")
    # Rounds never draft past max_new_tokens, so the caches need the final length, whatever gamma.
    max_len = len(prompt) + max_new_tokens
    drafter = make_drafter(method, drafter, target, max_len, max_ngram, min_ngram)
    stats = GenerationStats()
    cache = target.new_cache(max_len)
    if len(prompt) > 1:
        t0 = time.perf_counter()
        target(torch.tensor([prompt[:-1]], device=target.device), cache=cache, logits_to_keep=1)
        stats.prefill_time = time.perf_counter() - t0
        stats.target_calls += 1
    tokens, out = list(prompt), []
    while len(out) < max_new_tokens:
        k = min(gamma, max_new_tokens - len(out) - 1)  # never draft past max_new_tokens
        r = draft_and_verify(target, cache, drafter, tokens, k, params, generator, verifier)
        stats.target_calls += 1
        stats.draft_time += r.times[0]
        stats.target_time += r.times[1]
        stats.verify_time += r.times[2]
        if r.drafts:
            stats.record_round(len(r.drafts), r.n_accepted)
        else:  # nothing proposed (no lookup match, or one token left): a plain decoding step
            stats.accept_lengths.append(1)
        new = r.drafts[:r.n_accepted] + [r.next_token]
        out += new
        if eos_id is not None and eos_id in new:
            out = out[:out.index(eos_id) + 1]
            break
    return out, stats

