"""Chapters 2 to 5: what every EAGLE drafter does, whatever its head and its tree.

An EAGLE head keeps a KV cache of its own over the real sequence: position t holds
(x_{t+1}, f_t) once the target has produced the feature f_t. Every round:

    catch up   feed the head the verified pairs (x_{t+1}, f_t) it has not read yet; its output
               at the last one is the feature predicted at the root
    grow       level by level: the head's logits at the frontier rank each node's children, the
               tree's policy picks the children and the next frontier, and ONE head pass over
               that frontier (a tree mask: each node sees the real prefix, its ancestors and
               itself) predicts the features at its nodes
    forget     roll the head's cache back to the real sequence

Two things vary, and each is one object:
    the head     where its input features come from and how a node's logits are computed
                 (EAGLE-1: the target's last feature and LM head, minispec.eagle; EAGLE-3: fused
                 low/middle/high features and its own LM head over a draft vocabulary,
                 minispec.eagle3)
    the policy   the tree's shape: a static tree of `choices` (minispec.eagle.StaticTree) or
                 EAGLE-2's dynamic tree (minispec.eagle2.DynamicTree)
so method eagle3 is HeadDrafter(EAGLE-3 head, DynamicTree): EAGLE-2's policy with EAGLE-3's head.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn as nn

from .cache import KVCache
from .model import rotary_tables
from .sampling import SamplingParams
from .tree import DraftTree


class DraftHead(nn.Module):
    """What every EAGLE head has: an input projection `fc`, one decoder layer with a KV cache of
    its own (a draft tree's levels are cached in it), and a config shaped like the target's.
    A head drafter asks three things of it: target_layers, input_features and node_logits."""
    token_shift = True     # reads x_{t+1} beside f_t (EAGLE-1's ablation turns it off)

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def new_cache(self, max_len: int) -> KVCache:
        c = self.config
        return KVCache(1, c.n_heads, c.head_dim, max_len, 1, self.device, self.fc.weight.dtype)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_weights(self) -> None:
        """Once every layer exists: the rotary tables (not saved), and N(0, 0.02) weights with
        zero biases, as the reference initialises its heads."""
        cos, sin = rotary_tables(self.config)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def target_layers(self, target) -> tuple[int, ...]:
        """The target's hidden layers the head reads (Hugging Face numbering)."""
        raise NotImplementedError

    def input_features(self, hidden: dict, target) -> torch.Tensor:
        """hidden[layer] (m, D) the target's states at target_layers -> (m, D) the head's input."""
        raise NotImplementedError

    def node_logits(self, feats: torch.Tensor, target) -> torch.Tensor:
        """(n, D) features predicted at n nodes -> (n, V) float logits of their children, in the
        target's vocabulary."""
        raise NotImplementedError


@dataclass
class Candidates:
    """A draft tree as it grows. Node i: its token, its parent (-1 = the root, parents first),
    its path of sibling ranks from the root ((0,) = the root's first child), its score (EAGLE-2's
    log-confidence, or None) and the q it was drawn from (sampled static trees, else None)."""
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    paths: list[tuple[int, ...]] = field(default_factory=list)
    scores: list = field(default_factory=list)
    q: list = field(default_factory=list)
    _n_children: dict = field(default_factory=dict)

    def path(self, node: int) -> tuple[int, ...]:
        return self.paths[node] if node >= 0 else ()

    def add(self, token: int, parent: int, score: float | None = None, q: torch.Tensor | None = None) -> int:
        """Append a child of `parent` (after its earlier children); return its index."""
        rank = self._n_children.get(parent, 0)
        self._n_children[parent] = rank + 1
        self.tokens.append(token)
        self.parents.append(parent)
        self.paths.append(self.path(parent) + (rank,))
        self.scores.append(score)
        self.q.append(q)
        return len(self.tokens) - 1


class TreePolicy(Protocol):
    """The shape of a head drafter's trees. A policy holds the settings it was made with; fit()
    checks them against a head, a target and a request and sets the sizes below (HeadDrafter
    fits a copy of its own, so one policy can serve many drafters); then each round grow() adds
    a level, frontier() picks what the next level expands, and tree() makes the round's tree."""
    depth: int           # the deepest a round drafts
    budget: int          # the most nodes a round drafts
    extra_nodes: int     # the most nodes beyond one chain of `depth`
    cache_nodes: int     # the most tree nodes the head's cache holds at once

    def fit(self, head: DraftHead, target, max_len: int) -> None: ...

    def grow(self, cand: Candidates, frontier: list[int], logits: torch.Tensor, params: SamplingParams,
             generator) -> list[int]:
        """Add the children of the frontier's nodes (logits (n, V): row i ranks frontier[i]'s
        children); return the new nodes."""

    def frontier(self, cand: Candidates, new: list[int]) -> list[int]:
        """Which of the new nodes the next level expands (one head pass over them)."""

    def tree(self, cand: Candidates, params: SamplingParams) -> DraftTree:
        """The round's draft tree from the candidates."""


class HeadDrafter:
    """Drafts trees of `policy`'s shape with an EAGLE `head` for `target`, for one request of up
    to max_len tokens (minispec.speculative's drafter protocol)."""

    def __init__(self, head: DraftHead, target, max_len: int, policy: TreePolicy):
        self.policy = copy.copy(policy)                      # its own copy, fitted to this request
        self.policy.fit(head, target, max_len)               # checks its settings, sets its sizes
        self.head, self.target = head, target
        self.feature_layers = head.target_layers(target)
        self.depth, self.budget, self.extra_nodes = self.policy.depth, self.policy.budget, self.policy.extra_nodes
        self.cache = head.new_cache(max_len + self.policy.cache_nodes)
        self.pending = None   # (m, D) input features the head has not read yet

    def observe(self, tokens: list[int], hidden: dict[int, torch.Tensor]) -> None:
        """The target has read the tokens before the last one; hidden[layer] (m, D) are its
        states on the m it read last."""
        f = self.head.input_features(hidden, self.target)
        self.pending = f if self.pending is None else torch.cat([self.pending, f])

    def catch_up(self, tokens: list[int]) -> torch.Tensor:
        """Feed the head the real pairs (x_{t+1}, f_t) it has not seen, t = fed .. L-2, whose
        features came out of the target's last pass. Returns (D,) the feature it predicts at
        the root, whose logits rank the root's children."""
        s, L, fed = int(self.head.token_shift), len(tokens), self.cache.length   # fed = L - 1 - m
        toks = torch.tensor(tokens[fed + s:L - 1 + s], device=self.head.device)
        out = self.head(self.target.embed_tokens(toks)[None], self.pending[None], self.cache)[0]  # (m, D)
        self.pending = None
        return out[-1]

    def head_level(self, tokens: list[int], nodes: list[int], cand: Candidates, node_feat: dict,
                   slot: dict) -> torch.Tensor:
        """One head forward over `nodes`, all at the same depth: node i reads its token (its
        parent's without the token shift) with the feature predicted at its parent, and sees
        the real prefix, its ancestors (cached in the head at slot[a]) and itself. Returns
        (n, D) the features predicted at the nodes; records their cache slots."""
        L, dev, par = len(tokens), self.head.device, cand.parents
        fed_tok = [cand.tokens[i] if self.head.token_shift else (cand.tokens[par[i]] if par[i] >= 0 else tokens[-1])
                   for i in nodes]
        feat_in = torch.stack([node_feat[par[i]] for i in nodes])                  # (n, D)
        emb = self.target.embed_tokens(torch.tensor(fed_tok, device=dev))           # (n, D)
        past, depth = self.cache.length, len(cand.paths[nodes[0]])
        for row, i in enumerate(nodes):
            slot[i] = past + row
        if len(nodes) == 1 and past - (L - 1) == depth - 1:
            # a chain so far: the head's cache holds the prefix and exactly this node's
            # ancestors, so the plain causal step computes the same, without a mask
            return self.head(emb[None], feat_in[None], self.cache)[0]
        mask = torch.full((len(nodes), past + len(nodes)), float("-inf"), device=dev)
        mask[:, :L - 1] = 0.0                                                       # the real prefix
        for row, i in enumerate(nodes):
            ancestors, a = [], par[i]
            while a >= 0:
                ancestors.append(slot[a])
                a = par[a]
            mask[row, ancestors + [past + row]] = 0.0                               # ancestors, itself
        pos = torch.full((len(nodes),), L - 2 + depth, device=dev)
        return self.head(emb[None], feat_in[None], self.cache, position_ids=pos, attn_mask=mask)[0]

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        """A tree of at most depth k below tokens[-1], grown one level per head pass."""
        depth = min(self.policy.depth, k)
        if depth < 1 or self.pending is None:
            return DraftTree([], [])
        cand, slot = Candidates(), {}
        node_feat = {-1: self.catch_up(tokens)}    # node -> the feature predicted AT it (-1: the root)
        frontier = [-1]
        for level in range(depth):
            feats = torch.stack([node_feat[n] for n in frontier])                     # (n, D)
            logits = self.head.node_logits(feats, self.target)                         # (n, V)
            new = self.policy.grow(cand, frontier, logits, params, generator)
            frontier = self.policy.frontier(cand, new) if level < depth - 1 else []
            if not frontier:
                break
            node_feat.update(zip(frontier, self.head_level(tokens, frontier, cand, node_feat, slot)))
        self.cache.rollback(len(tokens) - 1)                                           # forget the tree
        return self.policy.tree(cand, params)
