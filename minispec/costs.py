"""What a forward pass costs, and the speedup that speculative decoding should get from it.

    T(n)   seconds of one cached target forward that scores n new tokens (`cost_curve`)
    c      one draft step / one target step, each scoring one token (`cost_ratio`)
    alpha  the chance that a draft token is accepted;  tau  tokens per round (bonus included)

The papers' model assumes that verifying gamma + 1 tokens costs one target step:
    speedup = (1 - alpha^(gamma+1)) / ((1 - alpha)(gamma c + 1))          (`predicted_speedup`)
The refined model uses the measured tau and the measured cost of the verification pass:
    speedup = tau T(1) / (T(gamma+1) + gamma c T(1))                      (`refined_speedup`)
For any drafter (trees, EAGLE heads), with n tokens verified per round and the measured
drafting time per round:
    speedup = tau T(1) / (T(n) + t_draft)                                 (`round_speedup`)
and on a memory-bound GPU, where a pass over up to ~60 tokens costs about one token and a draft
pass costs c target passes (the ratio of the weights each reads):
    speedup = tau / (1 + passes c)                                        (`memory_bound_speedup`)
All leave out the per-round bookkeeping (Python, building tensors, rolling caches back).
"""
from __future__ import annotations

import statistics
import time

import torch

from .device import cpu_threads, inference_threads, synchronize


@torch.inference_mode()
def forward_times(model, n_tokens: int, context: int = 128, repeats: int = 10, warmup: int = 3) -> list[float]:
    """Seconds of `repeats` cached forward passes, each scoring n_tokens after `context` tokens
    (with the threads decoding uses: minispec.device.inference_threads)."""
    with cpu_threads(inference_threads(model.device)):
        return _forward_times(model, n_tokens, context, repeats, warmup)


def _forward_times(model, n_tokens, context, repeats, warmup):
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, model.vocab_size, (1, context), generator=g).to(model.device)
    new = torch.randint(0, model.vocab_size, (1, n_tokens), generator=g).to(model.device)
    cache = model.new_cache(context + n_tokens)
    model(prefix, cache=cache, logits_to_keep=1)
    times = []
    for i in range(warmup + repeats):
        cache.rollback(context)
        synchronize(model.device)
        t0 = time.perf_counter()
        model(new, cache=cache)
        synchronize(model.device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def forward_cost(model, n_tokens: int, context: int = 128, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of one cached forward pass scoring n_tokens after `context` tokens."""
    return statistics.median(forward_times(model, n_tokens, context, repeats, warmup))


def cost_curve(model, ns, context: int = 128, repeats: int = 10) -> dict:
    """T(n) for each n in ns: {"n": [...], "median": [...], "min": [...], "max": [...]} seconds.

    The sizes take turns, repeat by repeat, so that drift of the machine hits all of them alike.
    """
    ns = list(ns)
    times = {n: [] for n in ns}
    for n in ns:  # warm-up
        forward_times(model, n, context, repeats=1, warmup=2)
    for _ in range(repeats):
        for n in ns:
            times[n] += forward_times(model, n, context, repeats=1, warmup=0)
    return {"n": ns, "context": context, "repeats": repeats,
            "median": [statistics.median(times[n]) for n in ns],
            "min": [min(times[n]) for n in ns], "max": [max(times[n]) for n in ns]}


def cost_ratio(draft, target, repeats: int = 30) -> float:
    """c: median one-token step of the draft / of the target, both with a 128-token cache."""
    return forward_cost(draft, 1, repeats=repeats) / forward_cost(target, 1, repeats=repeats)


def expected_tokens(alpha: float, gamma: int) -> float:
    """E[tokens per round] = 1 + alpha + ... + alpha^gamma, if each draft is accepted with
    probability alpha independently."""
    return float(gamma + 1) if alpha == 1 else (1 - alpha ** (gamma + 1)) / (1 - alpha)


def predicted_speedup(alpha: float, gamma: int, c: float) -> float:
    """The papers' model: verification costs one target step."""
    return expected_tokens(alpha, gamma) / (gamma * c + 1)


def refined_speedup(tau: float, gamma: int, c: float, T: dict[int, float]) -> float:
    """tau T(1) / (T(gamma+1) + gamma c T(1)): tau tokens for one verification pass of gamma+1
    tokens and gamma draft steps. T maps a number of tokens to the measured seconds."""
    return tau * T[1] / (T[gamma + 1] + gamma * c * T[1])


def round_speedup(tau: float, n_verified: float, t_draft: float, T: dict[int, float]) -> float:
    """tau T(1) / (T(n) + t_draft): tau tokens per round, for one target pass over n_verified
    tokens (drafted tokens + the root; interpolated between measured sizes) and t_draft seconds
    of drafting. T maps a number of tokens to the measured seconds of a pass."""
    lo = max(k for k in T if k <= n_verified)
    hi = min((k for k in T if k >= n_verified), default=lo)
    t_n = T[lo] if hi == lo else T[lo] + (T[hi] - T[lo]) * (n_verified - lo) / (hi - lo)
    return tau * T[1] / (t_n + t_draft)


def memory_bound_speedup(tau: float, draft_passes: float, c: float) -> float:
    """tau / (1 + draft_passes c): a verification pass costs one target step whatever its size,
    and each of the round's draft passes costs c target steps."""
    return tau / (1 + draft_passes * c)


def weight_ratio(draft_params: int, target) -> float:
    """c for a memory-bound device: the weights a draft pass reads over those a target pass reads
    (the target's embedding table is only indexed, so it does not count)."""
    read = sum(p.numel() for p in target.parameters()) - target.embed_tokens.weight.numel()
    return draft_params / read
