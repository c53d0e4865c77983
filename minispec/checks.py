"""Checking losslessness: exact target distributions, a chi-square test, and the classic bug.

A sampling verifier is lossless when its outputs follow the target's distribution exactly.
`exact_distribution` enumerates that distribution for a small model, `chi_square_ok` tests
sample counts against it, and `verify_without_residual` is the mistake the test must catch.
The tests and chapter 1's notebook both use these.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from .sampling import SamplingParams, sample, warp


@torch.no_grad()
def exact_distribution(model, prompt: list[int], params: SamplingParams, n_tokens: int = 2) -> torch.Tensor:
    """P(x_1..x_n | prompt) for every continuation, shape (V,) * n, by scoring all V^(n-1)
    prefixes (small vocabularies only)."""
    V = model.vocab_size
    joint = torch.ones(())
    for j in range(n_tokens):
        seqs = torch.tensor([prompt + list(c) for c in product(range(V), repeat=j)])  # (V^j, P+j)
        p = warp(model(seqs.to(model.device)).logits[:, -1], params).cpu()             # (V^j, V)
        joint = joint.unsqueeze(-1) * p.reshape((V,) * j + (V,))
    return joint


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor, alpha_z: float = 3.719) -> bool:
    """Pearson's chi-square test of counts against exact probs; True = consistent.

    False-alarm rate 1e-4 (alpha_z is the one-sided normal quantile; 3.719 for 1e-4), with the
    Wilson-Hilferty approximation of the critical value. Cells expected fewer than 5 times are
    pooled into one. Raises if fewer than 4 cells remain: such a test has no power.
    """
    counts, probs = counts.double().flatten(), probs.double().flatten()
    expected = probs * counts.sum()
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    if dof < 3:
        raise ValueError(f"the test has no power: only {dof + 1} cells after pooling; draw more samples")
    crit = dof * (1 - 2 / (9 * dof) + alpha_z * math.sqrt(2 / (9 * dof))) ** 3
    return stat < crit


def verify_without_residual(draft: list[int], q: torch.Tensor, p: torch.Tensor, generator=None):
    """DELIBERATELY BROKEN (the classic mistake): at a rejection it resamples from p instead
    of norm(max(0, p - q)), so tokens the draft over-proposes come out too often."""
    for i, x in enumerate(draft):
        if torch.rand(1, generator=generator) * q[i, x] >= p[i, x]:
            return i, int(sample(p[i], generator))
    return len(draft), int(sample(p[len(draft)], generator))
