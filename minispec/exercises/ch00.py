"""Chapter 0's exercises: greedy decoding with the KV cache, and rolling the cache back.

From notebooks/00_target_and_decoding.ipynb: the graders, then the reference solutions (for instructors).

    from minispec import exercises
    from minispec.exercises import ch00
    exercises.grade_cached_greedy(ch00.cached_greedy)    # PASS
"""
from __future__ import annotations

import torch

from ..checks import random_model
from .common import TINY, Fail, Verdict, as_ids, call_student, judge


# ----------------------------------------------------------------------- the graders
def grade_cached_greedy(fn) -> Verdict:
    """fn(model, prompt: list[int], n: int) -> the n greedy tokens after the prompt, computed
    with the KV cache: one forward over the prompt, then one forward per new token."""
    from ..generation import autoregressive, generate

    def body():
        for seed, prompt, n in [(0, [3, 1, 4, 1, 5], 12), (1, [7], 6), (2, [2, 7, 1, 8, 2, 8, 1, 8], 1),
                                (3, [9, 9, 9], 20)]:
            model = random_model(TINY, seed)
            calls = []   # (tokens scored, cache length before) per forward pass

            def spy(module, args, kwargs):
                ids = args[0] if args else kwargs["input_ids"]
                cache = args[1] if len(args) > 1 else kwargs.get("cache")
                calls.append((ids.shape[-1], None if cache is None else cache.length))
            handle = model.register_forward_pre_hook(spy, with_kwargs=True)
            try:
                with torch.no_grad():
                    got = as_ids(call_student("your function", fn, model, list(prompt), n), "your function")
            finally:
                handle.remove()
            want = generate(model, prompt, n).tokens
            case = f"prompt {prompt}, n={n}"
            if len(got) != n:
                raise Fail(f"{case}: returned {len(got)} tokens, expected {n} (return only the new ones)")
            if got != want:
                i = next(i for i in range(n) if got[i] != want[i])
                hint = ("off by one: your tokens are the right ones shifted by a position (which logits "
                        "predict the token after the prompt? the last row's)" if n > 1 and (
                            got[1:] == want[:-1] or got[:-1] == want[1:]) else
                        "the first token is right, later ones are not: after the first step feed only the "
                        "NEW token, and keep the cache" if i > 0 else
                        "the very first token is wrong: take the argmax of the logits at the prompt's last position")
                raise Fail(f"{case}: token {i} is {got[i]}, greedy decoding gives {want[i]}; {hint}")
            if not calls:
                raise Fail(f"{case}: right tokens, but the model was never called as model(ids, cache=...): "
                           "call the model itself (not model.forward), so the check can see the cache at work")
            if any(c is None for _, c in calls):
                raise Fail(f"{case}: right tokens, but the model was called without a cache "
                           "(pass cache=model.new_cache() and reuse it)")
            scored = sum(t for t, _ in calls)
            if scored > len(prompt) + n:
                raise Fail(f"{case}: right tokens, but {scored} token positions were scored where "
                           f"{len(prompt) + n - 1} suffice (one more is harmless): each step should score only the new token "
                           "(recomputing the sequence makes decoding quadratic)")
        return "cached greedy decoding matches minispec.generate and scores each token once"
    return judge("cached greedy decoding", body, switch_off=(generate, autoregressive))


def grade_rollback(fn) -> Verdict:
    """fn(cache, n_tokens: int, n_accepted: int): after a verification round, leave the cache
    holding what the next round needs.

    Before the round the sequence had n_tokens tokens and the cache held all but the last
    (n_tokens - 1 entries). The target then scored [last token, x_1..x_k], so the cache grew by
    k + 1. The verifier kept x_1..x_n and added one token of its own, which becomes the new last
    token and is not in the cache.
    """
    def body():
        model = random_model(TINY, 4)
        for L, k, n in [(5, 4, 2), (5, 4, 0), (9, 3, 3), (2, 1, 0), (7, 5, 4)]:
            g = torch.Generator().manual_seed(L * 10 + k + n)
            seq = torch.randint(0, TINY.vocab_size, (L,), generator=g).tolist()
            drafts = torch.randint(0, TINY.vocab_size, (k,), generator=g).tolist()
            nxt = int(torch.randint(0, TINY.vocab_size, (1,), generator=g))
            cache = model.new_cache()
            with torch.no_grad():
                if L > 1:
                    model(torch.tensor([seq[:-1]]), cache=cache)
                model(torch.tensor([[seq[-1], *drafts]]), cache=cache)
            call_student("your function", fn, cache, L, n)
            case = f"{L} tokens, {k} drafts, {n} accepted"
            want = L + n
            if cache.length != want:
                hint = {want + 1: "you kept the entry of x_{n+1}, the draft that was rejected",
                        want - 1: "you dropped one entry too many: the last token and the accepted drafts "
                                  "all stay, only the new last token is missing",
                        L + k: "the cache was not rolled back: the rejected drafts are still in it"}.get(
                            cache.length, "count: n_tokens - 1 entries before, + the last token, + n accepted drafts")
                raise Fail(f"{case}: the cache holds {cache.length} entries, the next round needs {want}; {hint}")
            with torch.no_grad():
                cached = model(torch.tensor([[nxt]]), cache=cache).logits[0, -1]
                fresh = model(torch.tensor([seq + drafts[:n] + [nxt]])).logits[0, -1]
            if not torch.allclose(cached, fresh, atol=1e-4):
                raise Fail(f"{case}: the length is right but the cache's contents are not those of "
                           "the accepted tokens (roll back; do not move or overwrite entries)")
        return "the cache holds exactly the accepted prefix after every round"
    return judge("KV-cache rollback", body)


# ----------------------------------------------------------------------- the reference solutions
def cached_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Chapter 0: greedy decoding with the KV cache."""
    cache = model.new_cache()
    out = []
    ### BEGIN SOLUTION
    logits = model(torch.tensor([prompt]), cache=cache).logits[0, -1]   # the whole prompt once
    for _ in range(n):
        token = int(logits.argmax())
        out.append(token)
        logits = model(torch.tensor([[token]]), cache=cache).logits[0, -1]  # then one token a step
    ### END SOLUTION
    return out


def rollback(cache, n_tokens: int, n_accepted: int) -> None:
    """Chapter 0: keep the n_tokens - 1 old entries, the last token's and the accepted drafts'."""
    cache.rollback(n_tokens - 1 + 1 + n_accepted)
