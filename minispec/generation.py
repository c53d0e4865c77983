"""The public entry point: generate(target, prompt_ids, method=..., ...) -> Generation.

method "ar" is plain autoregressive decoding with the KV cache: the baseline every speedup
is measured against, so its loop does nothing per token beyond one forward pass and picking
a token. Every other method (minispec.methods.METHODS) builds a drafter and runs the rounds of
minispec.speculative.
"""
from __future__ import annotations

import numbers
import time
from dataclasses import dataclass

import torch

from .device import cpu_threads, inference_threads, synchronize
from .sampling import SamplingParams, make_generator, next_token
from .stats import GenerationStats


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
    if isinstance(prompt_ids, (str, bytes)):
        raise ValueError("prompt_ids must be token ids, not text: encode it first (tokenizer.encode(text))")
    try:
        prompt_ids = list(prompt_ids)
    except TypeError:
        raise ValueError(f"prompt_ids must be a list of token ids, got {prompt_ids!r}") from None
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
             eos_id: int | None = None, method: str = "ar", draft=None, **method_options) -> Generation:
    """Continue prompt_ids with `method`; greedy when temperature == 0.

    method: a name in minispec.methods.METHODS ("ar", plain decoding, is the default), e.g.
    "sps" (draft = a draft language model), "pld" (prompt lookup, no draft), "eagle1",
    "eagle1-tree", "eagle2" (draft = an EAGLE-1 head) or "eagle3" (draft = an EAGLE-3 head).
    method_options: the method's options, e.g. gamma (each has a default; `python -m minispec
    bench --help` lists them).
    On the CPU it decodes with minispec.device.inference_threads() threads (1 unless
    $MINISPEC_THREADS says otherwise), and restores torch's setting afterwards.
    """
    from .methods import get_method, make_drafter
    params = SamplingParams(temperature, top_k, top_p)
    prompt = check_prompt(prompt_ids, max_new_tokens, target.max_seq_len)
    if any(not 0 <= t < target.vocab_size for t in prompt):
        raise ValueError(f"prompt has token ids outside the vocabulary [0, {target.vocab_size})")
    get_method(method)
    generator = make_generator(seed, target.device)
    if eos_id is not None and (not isinstance(eos_id, numbers.Integral) or isinstance(eos_id, bool)
                               or not 0 <= eos_id < target.vocab_size):
        raise ValueError(f"eos_id must be a token id in [0, {target.vocab_size}), got {eos_id!r}")
    if method == "ar":
        if draft is not None or method_options:
            raise ValueError("method 'ar' takes no draft model or options"
                             + (f", got {sorted(method_options)}" if method_options else ", got a draft model"))
        loop, extra = autoregressive, {}
    else:
        from .speculative import speculative_generate
        drafter = make_drafter(method, target, draft, len(prompt) + max_new_tokens, **method_options)
        loop, extra = speculative_generate, {"drafter": drafter}
    with torch.inference_mode(), cpu_threads(inference_threads(target.device)):
        synchronize(target.device)
        t0 = time.perf_counter()
        tokens, stats = loop(target, prompt, max_new_tokens, params, generator, eos_id, **extra)
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
