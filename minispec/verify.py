"""Verification rules: which drafted tokens the target keeps, and what it says next.

A drafter proposes x_1..x_k. One target forward over [last token, x_1..x_k] gives the
target's distributions p_1..p_{k+1}: p_i is what the target would sample at x_i's place,
and p_{k+1} the token after all of them (the bonus token).

Greedy:   keep x_i while x_i == argmax p_i; then emit argmax p_{n+1}.
Sampling (Leviathan et al. 2023; Chen et al. 2023): keep x_i with probability
          min(1, p_i(x_i) / q_i(x_i)); at the first rejection emit a sample of
          norm(max(0, p_i - q_i)); if all k are kept, emit a sample of p_{k+1}.
Either way a round emits n accepted tokens plus one more, and the output is distributed
exactly as the target's own decoding.
"""
from __future__ import annotations

import torch

from .sampling import sample


def verify_greedy(draft: list[int], target_logits: torch.Tensor):
    """draft (k,) token ids; target_logits (k+1, V). Returns (n_accepted, next_token)."""
    best = target_logits.argmax(-1).tolist()  # (k+1,) the target's own greedy choices
    n = 0
    while n < len(draft) and draft[n] == best[n]:
        n += 1
    return n, best[n]


def residual(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)): what p has that q over-proposed; p itself if nothing is left."""
    r = (p - q).clamp_(min=0.0)
    s = r.sum()
    return r / s if s > 0 else p


def verify_sampling(draft: list[int], q: torch.Tensor, p: torch.Tensor, generator=None):
    """Speculative sampling. draft (k,); q (k, V) the drafter's distributions the drafts were
    sampled from; p (k+1, V) the target's, warped the same way. Returns (n_accepted, next_token).
    """
    k = len(draft)
    if k:
        idx = torch.tensor(draft, device=p.device)
        rows = torch.arange(k, device=p.device)
        p_x, q_x = p[rows, idx], q[rows, idx]                          # (k,) p_i(x_i), q_i(x_i)
        u = torch.rand(k, generator=generator, device=p.device)
        accepted = (u * q_x < p_x).tolist()                             # u < p/q, without dividing by 0
        for n in range(k):
            if not accepted[n]:
                return n, int(sample(residual(p[n], q[n]), generator))
    return k, int(sample(p[k], generator))
