"""Shared fixtures: tiny configs (every shrunk setting says why) and fixed seeds."""
import math

import pytest
import torch

from minispec.model import ModelConfig, Transformer

TINY = ModelConfig(
    vocab_size=64,    # small enough to enumerate distributions exactly
    dim=32,           # 4 heads of 8
    n_layers=3,       # more than one, so layer-to-layer caching is exercised
    n_heads=4,
    ffn_dim=48,
    max_seq_len=64,   # short context, so the overflow errors are cheap to reach
)


def tiny_model(seed: int = 0, cfg: ModelConfig = TINY) -> Transformer:
    """A random tiny model; its weights are scaled up so its distributions are far from uniform."""
    torch.manual_seed(seed)
    m = Transformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    return m.eval()


@pytest.fixture
def model():
    return tiny_model()


@torch.no_grad()
def exact_two_token_distribution(model, prompt, params):
    """P(x1, x2 | prompt) for every pair (V, V), computed exactly from the model."""
    from minispec.sampling import warp
    V = model.vocab_size
    p1 = warp(model(torch.tensor([prompt])).logits[0, -1], params)              # (V,)
    seqs = torch.tensor([prompt + [x] for x in range(V)])
    p2 = warp(model(seqs).logits[:, -1], params)                               # (V, V)
    return p1[:, None] * p2


def chi_square_ok(counts, probs, alpha_z=3.719):
    """Pearson's chi-square test of counts against exact probs at false-alarm rate 1e-4.

    Cells expected fewer than 5 times are pooled into one; the critical value uses the
    Wilson-Hilferty approximation (alpha_z = one-sided normal quantile, 3.719 for 1e-4).
    """
    counts, probs = counts.double(), probs.double()
    n = counts.sum()
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    obs, exp = obs[keep], exp[keep]
    stat = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    crit = dof * (1 - 2 / (9 * dof) + alpha_z * math.sqrt(2 / (9 * dof))) ** 3
    return stat < crit
