"""Shared fixtures: tiny configs (every shrunk setting says why) and fixed seeds."""
import math

import pytest
import torch

from minispec.model import ModelConfig, Transformer

# Tiny models gain nothing from intra-op threads, and OpenMP's spinning threads make every
# small op slow when the machine is busy: one thread keeps the suite fast and steady.
torch.set_num_threads(1)

TINY = ModelConfig(
    vocab_size=64,    # small enough to enumerate distributions exactly
    dim=32,           # 4 heads of 8
    n_layers=3,       # more than one, so layer-to-layer caching is exercised
    n_heads=4,
    ffn_dim=48,
    max_seq_len=64,   # short context, so the overflow errors are cheap to reach
)


# For exact distribution checks: 16 tokens keep every 3-token continuation enumerable.
SMALL = ModelConfig(**{**TINY.to_dict(), "vocab_size": 16})


def tiny_model(seed: int = 0, cfg: ModelConfig = TINY, scale: float = 4.0) -> Transformer:
    """A random tiny model; weights scaled by `scale` (4: distributions far from uniform,
    1: close to uniform, i.e. a poor draft)."""
    torch.manual_seed(seed)
    m = Transformer(cfg)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(scale)
    return m.eval()


@pytest.fixture
def model():
    return tiny_model()


@torch.no_grad()
def exact_distribution(model, prompt, params, n_tokens: int = 2):
    """P(x_1..x_n | prompt) for every continuation, shape (V,) * n, computed exactly by
    scoring all V^(n-1) prefixes."""
    from itertools import product
    from minispec.sampling import warp
    V = model.vocab_size
    joint = torch.ones(())
    for j in range(n_tokens):
        seqs = torch.tensor([prompt + list(c) for c in product(range(V), repeat=j)])  # (V^j, P+j)
        p = warp(model(seqs).logits[:, -1], params).reshape((V,) * j + (V,))          # (V,)*j + (V,)
        joint = joint.unsqueeze(-1) * p
    return joint



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
    assert dof >= 3, f"the test has no power: only {dof + 1} cells after pooling; draw more samples"
    crit = dof * (1 - 2 / (9 * dof) + alpha_z * math.sqrt(2 / (9 * dof))) ** 3
    return stat < crit
