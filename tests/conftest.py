"""Shared fixtures: tiny configs (every shrunk setting says why), fixed seeds, and a headless Chromium."""
import os

import pytest
import torch

from minispec.checks import random_model
from minispec.model import ModelConfig, Transformer

# Tiny models gain nothing from intra-op threads, and OpenMP's spinning threads make every
# small op slow when the machine is busy: one thread keeps the suite fast and steady.
torch.set_num_threads(1)
# The same for the notebook kernels that nbval and the browser test start (they inherit the
# environment; a value already set wins): when another process wants a core, OpenMP's spinning
# threads burn CPU time while they wait (chapter 5's exact-distribution check: 56 s of CPU with two
# threads against 1.7 s with one, on a busy 2-core machine). `pytest tests notebooks` loads this
# file before any kernel starts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

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
    return random_model(cfg, seed, scale)


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright (tests/labdriver.py finds it); skipped, saying how to
    install one, where there is none."""
    from labdriver import INSTALL_HINT, find_chromium, launch_chromium
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed: pip install -e '.[test]'")
    executable = find_chromium()
    if executable is None:
        named = os.environ.get("MINISPEC_CHROMIUM")
        pytest.skip((f"MINISPEC_CHROMIUM={named} is not an executable: " if named else "no Chromium found: ")
                    + INSTALL_HINT)
    with sync_api.sync_playwright() as pw:
        chromium = launch_chromium(pw, executable)
        try:
            yield chromium
        finally:
            chromium.close()
