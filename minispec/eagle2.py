"""Chapter 4: EAGLE-2, a draft tree shaped by the head's own confidence.

The EAGLE-1 head is well calibrated: its probability for a draft approximates the chance that
the target accepts it, and that chance depends on the context. So rather than a fixed shape,
grow the tree where acceptance is likely. A node's score is the log of the product of the head's
probabilities along its path, log q(x_1) + log q(x_2 | x_1) + ..., an estimate of the chance
that the whole path is accepted.

    expand   the root's top_k children form the first frontier; each of depth - 1 steps runs
             the frontier through the head in ONE pass (tree mask), gives every frontier node
             its top_k children (top_k^2 candidates, score = parent score + log q(child)), and
             keeps the top_k best as the next frontier
    rerank   of all candidates, the total_tokens best by score form the tree; a child never
             outscores its parent (log q <= 0), so the set is closed under parents

Siblings are the head's top_k picks, deterministic given the context, so each carries a one-hot
q: the tree verifier then accepts x with probability p(x) and, on a rejection, removes x from p,
which is exactly lossless.

Names. Here total_tokens counts the drafted nodes and depth the tree's levels. The reference code
counts the root in its total_token and runs one top-k step before its depth loop (its trees have
depth + 1 levels): its (total_token, depth, top_k) are minispec's (total_tokens + 1, depth - 1,
top_k), so its default (60, 5, 10) is minispec's (59, 6, 10). SGLang's speculative-num-draft-tokens
counts the root too (its chains use num-steps 3, eagle-topk 1, num-draft-tokens 4), and its
speculative-num-steps counts levels: SGLang's (num-draft-tokens, num-steps, eagle-topk) are
minispec's (total_tokens + 1, depth, top_k). As a method option top_k is called eagle_topk,
because generate's top_k is the sampling parameter.
"""
from __future__ import annotations

import math

import torch

from .eagle import Eagle1Drafter
from .sampling import SamplingParams, warp
from .speculative import one_hot
from .tree import DraftTree
from .validate import tree_sizes


# The defaults depend on the hardware (chapter 4 measures why). On a CPU a target pass costs more
# with every token it scores and every level is one more head pass, so small, shallow trees win.
# On a GPU a pass over ~60 tokens costs about as much as one, so the reference's sizes apply
# (its total_token 60, depth 5, top_k 10, in minispec's counting: see the module's docstring).
DEFAULTS = {"cpu": {"total_tokens": 8, "depth": 3, "top_k": 4},   # the fastest in chapter 4's sweep
            "gpu": {"total_tokens": 59, "depth": 6, "top_k": 10}}


def defaults_for(device) -> dict:
    """EAGLE-2's default settings for a device: DEFAULTS["cpu"] on a CPU, else DEFAULTS["gpu"]."""
    return DEFAULTS["cpu" if torch.device(device).type == "cpu" else "gpu"]


class Eagle2Drafter(Eagle1Drafter):
    """Dynamic draft trees with an EAGLE-1 head (method "eagle2"). Settings left at None take
    the target's device's defaults (`defaults_for`)."""

    def __init__(self, head, target, max_len: int, total_tokens: int | None = None, depth: int | None = None,
                 top_k: int | None = None):
        d = defaults_for(target.device)
        total_tokens, depth, top_k = tree_sizes(                 # checked, and capped where larger
            d["total_tokens"] if total_tokens is None else total_tokens,   # values draft the same tree
            d["depth"] if depth is None else depth, d["top_k"] if top_k is None else top_k,
            head.config.vocab_size, target.max_seq_len, max_len)
        if not head.token_shift:
            raise ValueError("a head trained without the token shift cannot tell siblings apart: "
                             "it drafts chains only")
        super().__init__(head, target, max_len, [[0] * d for d in range(1, depth + 1)])
        self.total_tokens, self.depth, self.top_k = total_tokens, depth, top_k
        self.gamma = depth                                   # the deepest a round drafts
        self.extra_nodes = max(0, total_tokens - 1)
        self.budget = total_tokens
        self.cache = head.new_cache(max_len + depth * top_k)

    def expand(self, tokens: list[int], depth: int, params: SamplingParams):
        """The candidates: (tokens, parents, scores), parents first, and the head's distribution
        at every expanded node (for the chapter's plots)."""
        root = self.catch_up(tokens)
        cand_tok, cand_par, cand_score = [], [], []
        node_feat, slot = {-1: root}, {}
        frontier, frontier_score = [-1], [0.0]
        dists = {}
        for level in range(depth):
            feats = torch.stack([node_feat[n] for n in frontier])                     # (k, D)
            logits = self.node_logits(feats)                                           # (k, V)
            q = torch.softmax(logits, -1) if params.greedy else warp(logits, params)   # what the head drafts from
            top_q, top = q.topk(self.top_k, dim=-1)                                    # (k, top_k)
            dists.update(zip(frontier, q))
            new = []
            for n, s, qs, xs in zip(frontier, frontier_score, top_q.tolist(), top.tolist()):
                for qx, x in zip(qs, xs):
                    if qx <= 0:               # outside q's support (top_k / top_p): never drafted
                        break
                    new.append(len(cand_tok))
                    cand_tok.append(x)
                    cand_par.append(n)
                    cand_score.append(s + math.log(qx))                                # parent score + log q
            if level == depth - 1 or not new:
                break
            frontier = sorted(new, key=lambda i: -cand_score[i])[:self.top_k]          # the next frontier
            frontier_score = [cand_score[i] for i in frontier]
            h = self.head_level(tokens, frontier, cand_tok, cand_par, node_feat, slot)  # one head pass
            node_feat.update(zip(frontier, h))
        self.cache.rollback(len(tokens) - 1)                                           # forget the tree
        return cand_tok, cand_par, cand_score, dists

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        depth = min(self.depth, k)
        if depth < 1 or self.pending is None:
            return DraftTree([], [])
        cand_tok, cand_par, cand_score, _ = self.expand(tokens, depth, params)
        keep = rerank(cand_par, cand_score, self.total_tokens)
        index = {c: i for i, c in enumerate(keep)}
        tree_tokens = [cand_tok[c] for c in keep]
        parents = [index[cand_par[c]] if cand_par[c] >= 0 else -1 for c in keep]
        q = None if params.greedy else one_hot(tree_tokens, self.target.vocab_size, self.head.device)  # deterministic picks
        return DraftTree(tree_tokens, parents, q, [cand_score[c] for c in keep])


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


@torch.inference_mode()
def calibration(target, head, prompts: list[list[int]], max_new_tokens: int = 64,
                total_tokens: int | None = None, depth: int | None = None,
                top_k: int | None = None) -> dict[str, list]:
    """Does the head's confidence predict acceptance? Greedy EAGLE-2 generations of the prompts
    (settings left at None: the device's defaults); for every drafted node of every round, one
    record:

        round       the round's number, counted over all prompts
        depth       the node's depth in the tree (1 = a child of the root)
        rank        its sibling rank (0 = its parent's top pick)
        q           the head's probability of its token given its parent, exp(score - parent's)
        confidence  exp(score): the head's probability of the whole path down to it
        reached     the target accepted every ancestor (so the node was really checked)
        accepted    reached, and the target's greedy choice at its parent is its token

    EAGLE-2's claim is that q predicts `accepted` among reached nodes, and confidence predicts it
    among all nodes. Returns {field: list} over all nodes."""
    from .generation import check_prompt
    from .methods import make_drafter
    from .sampling import SamplingParams
    from .speculative import speculative_generate
    rec = {k: [] for k in ("round", "depth", "rank", "q", "confidence", "reached", "accepted")}
    rounds = [0]

    def record(r):                      # one verified round: its tree and the target's logits
        tree, best = r.tree, r.logits.argmax(-1).tolist()                # best[1 + i]: after node i
        depths, ok, n_round = tree.depth, [], rounds[0]
        rounds[0] += 1
        for i, (a, x) in enumerate(zip(tree.parents, tree.tokens)):
            reached = a < 0 or ok[a]
            ok.append(reached and x == best[a + 1])
            parent_score = tree.scores[a] if a >= 0 else 0.0
            rec["round"].append(n_round)
            rec["depth"].append(depths[i])
            rec["rank"].append(sum(1 for j in tree.children(a) if j < i))
            rec["q"].append(math.exp(tree.scores[i] - parent_score))
            rec["confidence"].append(math.exp(tree.scores[i]))
            rec["reached"].append(reached)
            rec["accepted"].append(ok[-1])

    for prompt in prompts:
        tokens = check_prompt(prompt, max_new_tokens, target.max_seq_len)
        drafter = make_drafter("eagle2", target, head, len(tokens) + max_new_tokens,   # checks the head
                               total_tokens=total_tokens, depth=depth, eagle_topk=top_k)
        speculative_generate(target, tokens, max_new_tokens, SamplingParams(0.0), None, None, drafter,
                             on_round=record)
    return rec
