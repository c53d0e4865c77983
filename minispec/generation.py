"""The public entry point: generate(target, prompt_ids, method=..., ...) -> Generation.

method "ar" is plain autoregressive decoding with the KV cache: the baseline every speedup
is measured against, so its loop does nothing per token beyond one forward pass and picking
a token. Later chapters add methods that pair a drafter with a verifier.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import torch

from .device import synchronize
from .sampling import SamplingParams, make_generator, next_token
from .stats import GenerationStats

METHODS = ("ar", "sps", "pld")
SPECULATIVE_OPTIONS = {"gamma", "max_ngram", "min_ngram"}


@dataclass
class Generation:
    tokens: list[int]        # the new tokens (an end token, if met, is the last one)
    stats: GenerationStats


def check_prompt(prompt_ids, max_new_tokens: int, context: int) -> list[int]:
    """Validate the request; return the prompt as a list of ints."""
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() == 2 and prompt_ids.shape[0] == 1:
            prompt_ids = prompt_ids[0]
        if prompt_ids.dim() != 1:
            raise ValueError(f"prompt_ids must be one sequence (batch size 1), got shape "
                             f"{tuple(prompt_ids.shape)}")
        prompt_ids = prompt_ids.tolist()
    if not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt_ids):
        raise ValueError("prompt_ids must be integer token ids (a float or bool is not a token id)")
    prompt_ids = [int(t) for t in prompt_ids]
    if not prompt_ids:
        raise ValueError("the prompt is empty: give at least one token")
    if len(prompt_ids) >= context:
        raise ValueError(f"the prompt has {len(prompt_ids)} tokens; the model's context is "
                         f"{context}, so it must be shorter")
    if len(prompt_ids) + max_new_tokens > context:
        raise ValueError(f"prompt ({len(prompt_ids)} tokens) + max_new_tokens ({max_new_tokens}) "
                         f"exceeds the model's context of {context} tokens")
    return prompt_ids


def generate(target, prompt_ids, max_new_tokens: int = 128, temperature: float = 0.0,
             top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
             eos_id: int | None = None, method: str = "ar", drafter=None, **method_options) -> Generation:
    """Continue prompt_ids with `method`; greedy when temperature == 0.

    ar:  plain decoding.  sps: speculative sampling with `drafter` (a draft model).
    pld: prompt lookup decoding (no drafter).  Options such as gamma go in method_options.
    """
    params = SamplingParams(temperature, top_k, top_p)
    prompt = check_prompt(prompt_ids, max_new_tokens, target.max_seq_len)
    if any(not 0 <= t < target.vocab_size for t in prompt):
        raise ValueError(f"prompt has token ids outside the vocabulary [0, {target.vocab_size})")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    generator = make_generator(seed, target.device)
    if eos_id is not None and (not isinstance(eos_id, numbers.Integral) or isinstance(eos_id, bool)
                               or not 0 <= eos_id < target.vocab_size):
        raise ValueError(f"eos_id must be a token id in [0, {target.vocab_size}), got {eos_id!r}")
    if method == "ar":
        if drafter is not None or method_options:
            raise ValueError("method 'ar' takes no drafter or options"
                             + (f", got {sorted(method_options)}" if method_options else ", got a drafter"))
        loop = autoregressive
    else:
        unknown = set(method_options) - SPECULATIVE_OPTIONS
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; "
                             f"known: {sorted(SPECULATIVE_OPTIONS)}")
        from . import speculative
        loop = speculative.speculative_generate
        method_options = {"method": method, "drafter": drafter, **method_options}
    with torch.inference_mode():
        synchronize(target.device)
        t0 = time.perf_counter()
        tokens, stats = loop(target, prompt, max_new_tokens, params, generator, eos_id, **method_options)
        synchronize(target.device)
        stats.wall_time = time.perf_counter() - t0
    stats.new_tokens = len(tokens)
    return Generation(tokens, stats)


def autoregressive(target, prompt: list[int], max_new_tokens: int, params: SamplingParams,
                   generator, eos_id):
    """One target forward per token, reusing the KV cache."""
    stats = GenerationStats()
    cache = target.new_cache(len(prompt) + max_new_tokens)
    x = torch.tensor([prompt], device=target.device)                  # (1, P)
    out = []
    for i in range(max_new_tokens):
        t0 = time.perf_counter()
        logits = target(x, cache=cache, logits_to_keep=1).logits[0, -1]  # (V,)
        if i:
            stats.target_time += time.perf_counter() - t0
            stats.accept_lengths.append(1)   # one token per step after the prefill
        else:
            stats.prefill_time = time.perf_counter() - t0
        stats.target_calls += 1
        tok = next_token(logits, params, generator)                   # () int64
        out.append(tok)
        if eos_id is not None and int(tok) == eos_id:
            break
        x = tok.view(1, 1)
    return torch.stack(out).tolist(), stats
