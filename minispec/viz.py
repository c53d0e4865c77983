"""Notebook helpers: show the package's own code, time forward passes, step through rounds.

The notebooks import these instead of keeping copies of the package's code: one concept,
one place.
"""
from __future__ import annotations

import inspect
import time

import torch

from .device import synchronize
from .sampling import SamplingParams
from .verify import residual


def show(obj) -> "IPython.display.Code":
    """Render the source of a function or class from the package, with highlighting."""
    from IPython.display import Code
    return Code(inspect.getsource(obj), language="python")


@torch.inference_mode()
def forward_cost(model, n_tokens: int, context: int = 128, repeats: int = 10, warmup: int = 3) -> float:
    """Median seconds of one cached forward pass scoring n_tokens after `context` tokens."""
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
    return sorted(times)[len(times) // 2]


class RoundStepper:
    """One speculative-sampling round at a time, with everything the verifier looked at.

    Runs the package's own round (speculative.draft_and_verify); `step()` returns a record:
    the drafts, p(x) and q(x) for each, the acceptance probability min(1, p/q), how many the
    verifier kept, the token it added, and the residual distribution at a rejection.
    """

    def __init__(self, target, draft, prompt_ids, gamma=4, params=SamplingParams(1.0), seed=0):
        from .generation import check_prompt
        from .speculative import make_drafter
        if params.greedy:
            raise ValueError("the stepper shows sampling verification: use a temperature > 0")
        self.target, self.gamma, self.params = target, gamma, params
        self.tokens = check_prompt(prompt_ids, 1, target.max_seq_len)
        self.drafter = make_drafter("sps", draft, target, target.max_seq_len)
        self.cache = target.new_cache()
        self.generator = torch.Generator(device=target.device).manual_seed(seed)
        if len(self.tokens) > 1:
            with torch.inference_mode():
                target(torch.tensor([self.tokens[:-1]], device=target.device), cache=self.cache)

    @torch.inference_mode()
    def step(self, top: int = 8) -> dict:
        from .speculative import draft_and_verify
        k = min(self.gamma, self.target.max_seq_len - len(self.tokens) - 1)
        if k < 1:
            raise ValueError("the context is full")
        r = draft_and_verify(self.target, self.cache, self.drafter, self.tokens, k, self.params,
                             self.generator)
        p, n = r.p, r.n_accepted                                               # (k+1, V)
        rows = [{"token": d, "p": float(p[i, d]), "q": float(r.q[i, d]),
                 "accept_prob": min(1.0, float(p[i, d] / r.q[i, d])), "accepted": i < n,
                 "checked": i <= n}  # drafts after the first rejection are never looked at
                for i, d in enumerate(r.drafts)]
        res = None
        if n < len(r.drafts):
            vals, ids = residual(p[n], r.q[n]).topk(top)
            res = {"tokens": ids.tolist(), "probs": vals.tolist()}
        return {"drafts": rows, "n_accepted": n, "next_token": r.next_token, "residual": res,
                "bonus": n == len(r.drafts)}
