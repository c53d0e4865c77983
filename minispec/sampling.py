"""Sampling parameters and the one warping rule every method shares.

Speculative sampling is exact only if the draft's q and the target's p are the SAME warped
distributions, so both go through `warp`: temperature, then top-k, then top-p (the order
Hugging Face uses). temperature == 0 means greedy: argmax, no randomness.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch


# Below this, (logits - max) / temperature overflows float32 for ordinary logit gaps.
MIN_TEMPERATURE = 1e-30


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0   # 0 = greedy
    top_k: int = 0             # 0 = no top-k filter
    top_p: float = 1.0         # 1 = no nucleus filter

    def __post_init__(self):
        t, k, p = self.temperature, self.top_k, self.top_p
        number = lambda x: isinstance(x, numbers.Real) and not isinstance(x, bool)
        if not number(t) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
        if 0 < t < MIN_TEMPERATURE:  # logits / t would overflow (and t itself underflows float32)
            raise ValueError(f"temperature {t!r} is too small to compute with; use 0 for greedy decoding "
                             f"or at least {MIN_TEMPERATURE}")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {k!r}")
        if not number(p) or not (0 < p <= 1):
            raise ValueError(f"top_p must be in (0, 1] (1 = off), got {p!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def warp(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits (..., V) -> probabilities (..., V) after temperature, top-k and top-p.

    Greedy params give a one-hot distribution at the argmax, so that code written for
    distributions also covers greedy decoding.
    """
    logits = logits.float()
    if params.greedy:
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
    logits = (logits - logits.max(-1, keepdim=True).values) / params.temperature  # <= 0: no overflow
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, dim=-1, descending=True)
        # drop a token once the more likely ones already hold top_p of the mass
        drop_sorted = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token id per row of probs (..., V); returns (...,) int64."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])


def next_token(logits: torch.Tensor, params: SamplingParams, generator=None) -> torch.Tensor:
    """The next token from logits (..., V): argmax when greedy, else a warped sample."""
    if params.greedy:
        return logits.argmax(-1)
    return sample(warp(logits, params), generator)


def make_generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an integer in [0, 2**63) or None, got {seed!r}")
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def entropy(p: torch.Tensor) -> torch.Tensor:
    """The entropy in nats of distribution(s) p (..., V) -> (...): -sum_x p(x) log p(x)."""
    return -(p * p.clamp_min(1e-30).log()).sum(-1)
