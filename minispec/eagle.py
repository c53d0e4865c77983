"""Chapters 2 and 3: EAGLE-1, drafting at the feature level, as a chain or a static tree.

The target's feature f_t (its last hidden state, the LM head's input) predicts token x_{t+1}.
Continuing the sequence of features is easier than continuing the tokens, provided the head is
told which token was actually sampled from each feature (the token shift):

    head input at position t:  fc(concat(embed(x_{t+1}), f_t))       2D -> D
    one decoder layer (no input norm)                                 -> f^_{t+1}
    the target's frozen LM head on f^_{t+1}                           -> q(x_{t+2})

The head reuses the target's embedding and LM head, so it owns only fc and one layer. It drafts
autoregressively: a drafted token and the feature predicted with it are the next input
(minispec.drafting runs that loop for every EAGLE head). Its training is minispec.eagle_train.

Trees: `choices` lists the nodes as paths of sibling ranks ([0] = the root's best child, [0, 1]
= that child's second-best child, ...), as in the EAGLE reference's static trees; a chain of
depth d is [[0], [0, 0], ...]. Greedy decoding takes ranks from the head's top-k; sampling
draws siblings without replacement and records the renormalised q each one was drawn from, which
the tree verifier needs to stay lossless.
"""
from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from .cache import KVCache
from .checkpoint import CheckpointError, load_into, read_head_checkpoint, weights_fingerprint
from .drafting import Candidates, DraftHead
from .model import DecoderLayer, ModelConfig, lean_linear, rope_and_mask
from .sampling import SamplingParams, sample, warp
from .speculative import check_max_entropy, too_unsure
from .tree import DraftTree
from .validate import check_finite


class Eagle1Head(DraftHead):
    """fc(concat(embedding, feature)) -> one decoder layer -> predicted next feature.
    Parameter names are those of EAGLE-1 checkpoints (fc, layers.0.*)."""
    kind = "eagle1"

    def __init__(self, cfg: ModelConfig, token_shift: bool = True):
        super().__init__()
        if cfg.n_layers != 1:
            raise ValueError(f"an EAGLE-1 head has one decoder layer, got n_layers={cfg.n_layers}")
        self.config, self.token_shift = cfg, token_shift
        self.fc = nn.Linear(2 * cfg.dim, cfg.dim, bias=True)
        self.layers = nn.ModuleList([DecoderLayer(cfg, 0, input_norm=False)])
        self.init_weights()

    @classmethod
    def for_target(cls, target, token_shift: bool = True) -> "Eagle1Head":
        """A fresh head shaped like `target`'s layers, which drafts for that target alone."""
        head = cls(replace(target.config, n_layers=1), token_shift)
        head.target_sha256 = weights_fingerprint(target)
        return head

    def target_layers(self, target) -> tuple[int, ...]:
        return (target.num_layers,)                      # the final feature, the LM head's input

    def input_features(self, hidden: dict, target) -> torch.Tensor:
        return hidden[target.num_layers]

    def node_logits(self, feats: torch.Tensor, target) -> torch.Tensor:
        """The target's own LM head ranks the children: EAGLE-1 drafts in the target's
        vocabulary. NaN or infinity (a broken head) is refused by name."""
        return check_finite(lean_linear(feats, target.lm_head).float(), "the EAGLE-1 head")

    def forward(self, emb, feature, cache: KVCache | None = None, position_ids=None, attn_mask=None):
        """emb, feature (B, T, D) -> predicted next features (B, T, D). cache, position_ids and
        attn_mask as in Transformer.forward ((T, P+T) masks let tree levels see their ancestors)."""
        past = cache.length if cache is not None else 0
        T = emb.shape[1]
        cos, sin, mask = rope_and_mask(self.rope_cos, self.rope_sin, past, T, position_ids, attn_mask)
        x = self.fc(torch.cat([emb, feature], dim=-1))                   # (B, T, D)
        x = self.layers[0](x, cos, sin, cache, mask)
        if cache is not None:
            cache.length = past + T
        return x


def load_eagle1(directory, target, verify: bool = True) -> Eagle1Head:
    """Load a trained head (default folder: data/eagle1) for `target`. The manifest names the
    target it was trained on by the sha256 of its tensors; another target is refused."""
    info, cfg, state, have = read_head_checkpoint(directory, Eagle1Head.kind, target, verify)
    if (cfg.dim, cfg.vocab_size, cfg.n_heads) != (target.config.dim, target.vocab_size, target.config.n_heads):
        raise CheckpointError(f"the head's shape (dim {cfg.dim}, vocabulary {cfg.vocab_size}) does not "
                              f"match the target's (dim {target.config.dim}, vocabulary {target.vocab_size})")
    head = Eagle1Head(cfg, bool(info.get("token_shift", True)))
    load_into(head, state, source=str(directory))
    head.target_sha256 = have
    return head.to(target.device).eval()


def chain_choices(depth: int) -> list[list[int]]:
    """A chain of `depth` drafts as a choice list: [[0], [0, 0], ...]."""
    return [[0] * d for d in range(1, depth + 1)]


# Static trees, named by their number of nodes, in the spirit of the reference's choice lists:
# wide near the root, where the head is least sure of its ranking, and a deep spine along its
# best guesses. t26 has the reference's size (25-26 nodes, depth 5), which a GPU verifies about
# as fast as one token. On a 2-core CPU every node costs (a verification pass over 27 tokens
# takes about 1.9 plain steps, each tree level one head pass), so tau rises with the tree's size while
# speed falls: t4 is the fastest tree there (chapter 3 measures all of them).
TREES = {
    "t4": [[0], [1], [0, 0], [0, 0, 0]],
    "t8": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 0, 0]],
    "t12": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0],
            [0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
    "t16": [[0], [1], [2], [3], [0, 0], [0, 1], [1, 0], [2, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0],
            [1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
    "t26": [[0], [1], [2], [3], [4], [0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [2, 0], [2, 1],
            [3, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 2, 0], [2, 0, 0], [0, 0, 0, 0],
            [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]],
}
TREE_CHOICES = TREES["t4"]    # method eagle1-tree's default, the fastest tree on a CPU (chapter 3)


def check_choices(choices, vocab: int | None = None, max_nodes: int | None = None) -> list[tuple[int, ...]]:
    """Validate a choice list (the rules of minispec.validate): a non-empty list of distinct paths
    of sibling ranks, each with its parent and elder sibling; ranks below `vocab` (the tokens the
    head ranks) and at most `max_nodes` paths, where given. Return it sorted by depth, parents
    before children."""
    example = "e.g. [[0], [1], [0, 0]]"
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
        raise ValueError(f"choices must be a list of paths of sibling ranks, {example}; got {choices!r}")
    if not choices:
        raise ValueError(f"choices is empty: give at least one path, {example} (or None for the default tree)")
    if max_nodes is not None and len(choices) > max_nodes:
        raise ValueError(f"choices has {len(choices)} nodes; a tree is scored beside the request in one "
                         f"pass and may have at most {max_nodes} (the model's context)")
    for c in choices:
        if isinstance(c, (str, bytes)) or not isinstance(c, (list, tuple)) or not c \
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in c):
            raise ValueError(f"choice {c!r}: a path is a non-empty list of sibling ranks >= 0, {example}")
    paths = sorted({tuple(c) for c in choices}, key=lambda c: (len(c), c))
    if len(paths) != len(choices):
        raise ValueError("choices must be a list of distinct paths")
    have = set(paths)
    for c in paths:
        if vocab is not None and c[-1] >= vocab:
            raise ValueError(f"choice {list(c)} asks for the child of rank {c[-1]}, but the head ranks only "
                             f"{vocab} tokens (ranks 0 to {vocab - 1})")
        if len(c) > 1 and c[:-1] not in have:
            raise ValueError(f"choice {list(c)} has no parent {list(c[:-1])} in the list")
        if c[-1] and c[:-1] + (c[-1] - 1,) not in have:
            raise ValueError(f"choice {list(c)} needs its elder sibling {list(c[:-1]) + [c[-1] - 1]}")
    return paths


class StaticTree:
    """EAGLE-1's static tree (a policy of minispec.drafting.HeadDrafter): every round drafts the
    nodes of `choices` (default TREE_CHOICES), node c + (r,) being its parent's r-th best child
    (greedy) or r-th draw without replacement (sampling). max_entropy: SVIP's adaptive length
    (chapter 4), nothing drafted below a token whose distribution is too flat; None: off."""

    def __init__(self, choices=None, max_entropy=None):
        self.choices = TREE_CHOICES if choices is None else choices
        self.max_entropy = check_max_entropy(max_entropy)

    def fit(self, head, target, max_len: int) -> None:
        self.paths = check_choices(self.choices, head.config.vocab_size, target.max_seq_len)
        if not head.token_shift and any(c[-1] for c in self.paths):
            raise ValueError("a head trained without the token shift cannot tell siblings apart: "
                             "it drafts chains only")
        self.n_children = {}                                          # choice path -> its children
        for c in self.paths:
            self.n_children[c[:-1]] = max(self.n_children.get(c[:-1], 0), c[-1] + 1)
        self.depth = max(len(c) for c in self.paths)
        self.budget = self.cache_nodes = len(self.paths)
        self.extra_nodes = self.budget - self.depth                   # nodes beyond one chain

    def grow(self, cand: Candidates, frontier: list[int], logits, params: SamplingParams, generator) -> list[int]:
        new = []
        for n, row in zip(frontier, logits):
            picks, q_rows = self.pick_children(row, self.n_children[cand.path(n)], params, generator)
            unsure = too_unsure(row, params, self.max_entropy)    # SVIP: these picks are guesses,
            for r, x in enumerate(picks):                          # so nothing is drafted below them
                i = cand.add(x, n, q=None if q_rows is None else q_rows[r])
                if not unsure:
                    new.append(i)
        return new

    def frontier(self, cand: Candidates, new: list[int]) -> list[int]:
        return [i for i in new if cand.paths[i] in self.n_children]

    def tree(self, cand: Candidates, params: SamplingParams) -> DraftTree:
        return DraftTree(cand.tokens, cand.parents, None if params.greedy or not cand.q else torch.stack(cand.q))

    @staticmethod
    def pick_children(logits, n: int, params: SamplingParams, generator):
        """Up to n distinct children: the top n when greedy; else drawn without replacement
        from q, each with the renormalised q it was drawn from (fewer when q's support, cut by
        top_k or top_p, has fewer tokens)."""
        if params.greedy:
            return logits.topk(n).indices.tolist(), None
        q = warp(logits, params)
        picks, rows = [], []
        for _ in range(n):
            x = int(sample(q, generator))
            picks.append(x)
            rows.append(q)
            rest = q.clone()
            rest[x] = 0.0
            total = rest.sum()
            if total <= 0:
                break
            q = rest / total
        return picks, rows
