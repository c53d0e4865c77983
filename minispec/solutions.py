"""Reference solutions of the exercises that have checkers (minispec.exercises).

Written the way a student would write them, from the chapter's text, one step at a time; the
package's own versions (minispec.generation, minispec.speculative, minispec.verify) are the
same rules written for speed. Each passes its checker:

    from minispec import exercises, solutions
    exercises.check_verifier(solutions.verify)
"""
from __future__ import annotations

import torch


def cached_greedy(model, prompt: list[int], n: int) -> list[int]:
    """Chapter 0: greedy decoding with the KV cache."""
    cache = model.new_cache()
    logits = model(torch.tensor([prompt]), cache=cache).logits[0, -1]   # the whole prompt once
    out = []
    for _ in range(n):
        token = int(logits.argmax())
        out.append(token)
        logits = model(torch.tensor([[token]]), cache=cache).logits[0, -1]  # then one token a step
    return out


def rollback(cache, n_tokens: int, n_accepted: int) -> None:
    """Chapter 0: keep the n_tokens - 1 old entries, the last token's and the accepted drafts'."""
    cache.rollback(n_tokens - 1 + 1 + n_accepted)


def prompt_lookup(tokens: list[int], k: int, max_ngram: int = 3, min_ngram: int = 1) -> list[int]:
    """Chapter 1: the continuation of the latest earlier occurrence of the last n tokens."""
    for n in range(max_ngram, min_ngram - 1, -1):
        if n >= len(tokens):
            continue  # an earlier occurrence needs at least one token before the suffix
        suffix = tokens[-n:]
        for start in reversed(range(len(tokens) - n)):
            if tokens[start:start + n] == suffix:
                return tokens[start + n:start + n + k]
    return []


def verify(drafts: list[int], q: torch.Tensor, p: torch.Tensor, generator=None):
    """Chapter 1: speculative sampling. q (k, V), p (k+1, V). Returns (n_accepted, next_token)."""
    for i, x in enumerate(drafts):
        u = float(torch.rand(1, generator=generator, device=p.device))
        if u < min(1.0, float(p[i, x] / q[i, x])):
            continue                                        # accepted: look at the next draft
        r = torch.clamp(p[i] - q[i], min=0)                 # rejected: the residual
        r = r / r.sum() if r.sum() > 0 else p[i]
        return i, int(torch.multinomial(r, 1, generator=generator))
    return len(drafts), int(torch.multinomial(p[len(drafts)], 1, generator=generator))  # bonus


def eagle_pairs(tokens: torch.Tensor, features: torch.Tensor):
    """Chapter 2: EAGLE-1's training pairs with the token shift: (x_{t+1}, f_t) -> f_{t+1}."""
    return tokens[1:], features[:-1], features[1:]


def tree_mask(parents: list[int]) -> torch.Tensor:
    """Chapter 3: the additive attention mask over [root, nodes] of a draft tree."""
    n = len(parents) + 1
    mask = torch.full((n, n), float("-inf"))
    for row in range(n):
        mask[row, 0] = 0.0                      # the root
        node = row - 1
        while node >= 0:                        # the node itself, then its ancestors
            mask[row, node + 1] = 0.0
            node = parents[node]
    return mask


def tree_greedy(tokens: list[int], parents: list[int], logits: torch.Tensor):
    """Chapter 3: greedy tree verification. Returns (accepted nodes, next token)."""
    accepted, node = [], -1
    while True:
        choice = int(logits[node + 1].argmax())            # the target's token after `node`
        child = None
        for i, parent in enumerate(parents):
            if parent == node and tokens[i] == choice:
                child = i
                break
        if child is None:
            return accepted, choice
        accepted.append(child)
        node = child


def rerank(parents: list[int], logq: list[float], total_tokens: int) -> list[int]:
    """Chapter 4: EAGLE-2's rerank. Path score = sum of log q along the path; keep the best
    total_tokens, in candidate order (parents first). Unlike minispec.eagle2.rerank it takes each
    candidate's own log q, and needs no closing under parents: with log q <= 0 a child never
    outscores its parent, and on a tie the parent, made first, sorts first."""
    score = []
    for parent, lq in zip(parents, logq):
        score.append(lq + (score[parent] if parent >= 0 else 0.0))
    best = sorted(range(len(score)), key=lambda i: (-score[i], i))[:total_tokens]
    return sorted(best)


def ttt_mask(T: int, step: int) -> torch.Tensor:
    """Chapter 5: the training-time-test mask at unrolled step `step`: block 0 causal (the real
    prefix), then one block per earlier step where a chain sees only its own position."""
    blocks = [torch.full((T, T), float("-inf")).triu(1)]
    for _ in range(step):
        diag = torch.full((T, T), float("-inf"))
        for t in range(T):
            diag[t, t] = 0.0
        blocks.append(diag)
    return torch.cat(blocks, dim=1)


def draft_vocab(counts: list[int], size: int):
    """Chapter 5: EAGLE-3's draft vocabulary maps. The `size` most frequent target ids (ties: the
    smaller id), numbered in increasing target-id order; d2t[i] = target id - i, t2d marks them."""
    ranked = sorted(range(len(counts)), key=lambda i: (-counts[i], i))[:size]
    ids = sorted(ranked)
    d2t = torch.tensor([t - i for i, t in enumerate(ids)], dtype=torch.long)
    t2d = torch.zeros(len(counts), dtype=torch.bool)
    t2d[ids] = True
    return d2t, t2d
