"""Checking losslessness: exact target distributions, a chi-square test, and the classic bug.

A sampling verifier is lossless when its outputs follow the target's distribution exactly.
`exact_distribution` enumerates that distribution for a small model, `sequence_frequencies`
counts what speculative decoding actually emits, `chi_square_ok` tests the counts against the
exact probabilities, and `verify_without_residual` is the mistake the test must catch. The
tests, the exercise graders and chapter 1's notebook all use these.
"""
from __future__ import annotations

import math
from itertools import product

import torch

from .sampling import SamplingParams, sample, warp


def random_model(cfg, seed: int = 0, scale: float = 4.0):
    """A randomly initialised model for checks and tests; weight matrices scaled by `scale`
    (4: distributions far from uniform, like a trained model's; 1: near uniform, a poor draft)."""
    from .model import Transformer
    torch.manual_seed(seed)
    m = Transformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    return m.eval()


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


def sequence_frequencies(target, prompt: list[int], params: SamplingParams, n_samples: int,
                         n_tokens: int = 3, seed: int = 0, method: str = "sps", draft=None,
                         verifier=None, **options) -> torch.Tensor:
    """Counts of every n_tokens-long continuation over n_samples speculative generations of
    `method` (draft model `draft`, method options), shape (V ** n_tokens,), matching
    exact_distribution(...).flatten(). `verifier` replaces the chain sampling rule (to check
    one under test)."""
    from .methods import make_drafter
    from .speculative import speculative_generate
    from .verify import verify_sampling
    V = target.vocab_size
    counts = torch.zeros((V,) * n_tokens)
    g = torch.Generator(device=target.device)
    with torch.inference_mode():   # as `generate` decodes: no autograd bookkeeping, ~10% less time per step
        for i in range(n_samples):
            g.manual_seed(seed + i)
            drafter = make_drafter(method, target, draft, len(prompt) + n_tokens, **options)
            tokens, _ = speculative_generate(target, list(prompt), n_tokens, params, g, None, drafter,
                                             verifier or verify_sampling)
            counts[tuple(tokens)] += 1
    return counts.flatten()


def chi_square(counts: torch.Tensor, probs: torch.Tensor, alpha_z: float = 3.719) -> tuple[float, float]:
    """Pearson's chi-square statistic of counts against exact probs, and the critical value it
    must stay below: (statistic, critical). `chi_square_ok` is the test; the pair says by how much
    a check passed or failed (the margin a planted bug is caught by).

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
    return stat, dof * (1 - 2 / (9 * dof) + alpha_z * math.sqrt(2 / (9 * dof))) ** 3


def chi_square_ok(counts: torch.Tensor, probs: torch.Tensor, alpha_z: float = 3.719) -> bool:
    """Pearson's chi-square test of counts against exact probs (see `chi_square`); True =
    consistent, at a false-alarm rate of 1e-4."""
    stat, critical = chi_square(counts, probs, alpha_z)
    return stat < critical


def verify_without_residual(draft: list[int], q: torch.Tensor, p: torch.Tensor, generator=None):
    """DELIBERATELY BROKEN (the classic mistake): at a rejection it resamples from p instead
    of norm(max(0, p - q)), so tokens the draft over-proposes come out too often."""
    for i, x in enumerate(draft):
        if torch.rand(1, generator=generator) * q[i, x] >= p[i, x]:
            return i, int(sample(p[i], generator))
    return len(draft), int(sample(p[len(draft)], generator))
