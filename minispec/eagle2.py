"""Chapter 4: EAGLE-2, a draft tree shaped by the head's own confidence.

The EAGLE-1 head is well calibrated: its probability for a draft approximates the chance that
the target accepts it, and that chance depends on the context. So rather than a fixed shape,
grow the tree where acceptance is likely. A node's score is the log of the product of the head's
probabilities along its path, log q(x_1) + log q(x_2 | x_1) + ..., an estimate of the chance
that the whole path is accepted.

    expand   the root's eagle_topk children form the first frontier; each of depth - 1 steps
             runs the frontier through the head in ONE pass (tree mask), gives every frontier
             node its eagle_topk children (eagle_topk^2 candidates, score = parent score +
             log q(child)), and keeps the eagle_topk best as the next frontier
    rerank   of all candidates, the total_tokens best by score form the tree; a child never
             outscores its parent (log q <= 0), so the set is closed under parents

Siblings are the head's eagle_topk picks, deterministic given the context, so each carries a one-hot
q: the tree verifier then accepts x with probability p(x) and, on a rejection, removes x from p,
which is exactly lossless.

Names. Here total_tokens counts the drafted nodes and depth the tree's levels. The reference code
counts the root in its total_token and runs one top-k step before its depth loop (its trees have
depth + 1 levels): its (total_token, depth, top_k) are minispec's (total_tokens + 1, depth - 1,
eagle_topk), so its default (60, 5, 10) is minispec's (59, 6, 10). SGLang's
speculative-num-draft-tokens counts the root too (its chains use num-steps 3, eagle-topk 1,
num-draft-tokens 4), and its speculative-num-steps counts levels: SGLang's (num-draft-tokens,
num-steps, eagle-topk) are minispec's (total_tokens + 1, depth, eagle_topk). The reference's
top_k is called eagle_topk here, as in SGLang, because generate's top_k is the sampling parameter.

The policy runs in minispec.drafting's loop with any head: method eagle2 gives it the EAGLE-1
head, method eagle3 the EAGLE-3 head.
"""

from __future__ import annotations

import math

import torch

from .drafting import Candidates
from .sampling import SamplingParams, warp
from .speculative import one_hot
from .tree import DraftTree
from .validate import tree_sizes


# The defaults depend on the hardware (chapter 4 measures why). On a CPU a target pass costs more
# with every token it scores and every level is one more head pass, so small, shallow trees win.
# On a GPU a pass over ~60 tokens costs about as much as one, so the reference's sizes apply
# (its total_token 60, depth 5, top_k 10, in minispec's counting: see the module's docstring).
DEFAULTS = {"cpu": {"total_tokens": 8, "depth": 3, "eagle_topk": 4},   # the fastest in chapter 4's sweep
            "gpu": {"total_tokens": 59, "depth": 6, "eagle_topk": 10}}


def defaults_for(device) -> dict:
    """EAGLE-2's default settings for a device: DEFAULTS["cpu"] on a CPU, else DEFAULTS["gpu"]."""
    return DEFAULTS["cpu" if torch.device(device).type == "cpu" else "gpu"]


class DynamicTree:
    """EAGLE-2's dynamic tree (a policy of minispec.drafting.HeadDrafter). Settings left at None
    take the target's device's defaults (`defaults_for`)."""

    def __init__(self, total_tokens: int | None = None, depth: int | None = None, eagle_topk: int | None = None):
        self.asked = {"total_tokens": total_tokens, "depth": depth, "eagle_topk": eagle_topk}

    def fit(self, head, target, max_len: int) -> None:
        d = {k: self.asked[k] if self.asked[k] is not None else v for k, v in defaults_for(target.device).items()}
        self.total_tokens, self.depth, self.eagle_topk = tree_sizes(   # checked, and capped where larger
            d["total_tokens"], d["depth"], d["eagle_topk"],             # values draft the same tree
            head.config.vocab_size, target.max_seq_len, max_len)
        if not head.token_shift:
            raise ValueError("a head trained without the token shift cannot tell siblings apart: "
                             "it drafts chains only")
        self.budget = self.total_tokens
        self.extra_nodes = max(0, self.total_tokens - 1)
        self.cache_nodes = self.depth * self.eagle_topk
        self.vocab_size, self.device = target.vocab_size, head.device     # for the one-hot q

    def grow(self, cand: Candidates, frontier: list[int], logits, params: SamplingParams, generator) -> list[int]:
        """expand: every frontier node's eagle_topk children by q, scored parent score + log q."""
        q = torch.softmax(logits, -1) if params.greedy else warp(logits, params)    # what the head drafts from
        top_q, top = q.topk(self.eagle_topk, dim=-1)                                # (n, eagle_topk)
        new = []
        for n, qs, xs in zip(frontier, top_q.tolist(), top.tolist()):
            s = cand.scores[n] if n >= 0 else 0.0
            for qx, x in zip(qs, xs):
                if qx <= 0:               # outside q's support (top_k / top_p): never drafted
                    break
                new.append(cand.add(x, n, score=s + math.log(qx)))
        return new

    def frontier(self, cand: Candidates, new: list[int]) -> list[int]:
        """The eagle_topk best of the new candidates by score: the next level to expand."""
        return sorted(new, key=lambda i: -cand.scores[i])[:self.eagle_topk]

    def tree(self, cand: Candidates, params: SamplingParams) -> DraftTree:
        """rerank: the total_tokens best candidates, as a tree; one-hot q for its deterministic picks."""
        keep = rerank(cand.parents, cand.scores, self.total_tokens)
        index = {c: i for i, c in enumerate(keep)}
        tokens = [cand.tokens[c] for c in keep]
        parents = [index[cand.parents[c]] if cand.parents[c] >= 0 else -1 for c in keep]
        q = None if params.greedy else one_hot(tokens, self.vocab_size, self.device)
        return DraftTree(tokens, parents, q, [cand.scores[c] for c in keep])


def rerank(parents: list[int], scores: list[float], total_tokens: int) -> list[int]:
    """The total_tokens best candidates by score, as a tree: parents first. parents[i] indexes
    the candidates (-1 = the root) and comes before i. A candidate is kept only with its parent
    (which, scoring at least as high, normally is among the best anyway; on a tie the parent
    wins, because it comes first)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:total_tokens]
    keep = set(order)
    for i in order:                              # close under parents (only ties can open it)
        a = parents[i]
        while a >= 0 and a not in keep:
            keep.add(a)
            a = parents[a]
    kept = sorted(keep)                          # candidate order: parents precede children
    return kept[:total_tokens] if len(kept) > total_tokens else kept
