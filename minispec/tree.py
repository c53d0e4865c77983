"""Token trees: many candidate continuations, verified in ONE target forward pass.

A draft tree hangs below the root, the last token of the sequence (already generated, not yet
in the target's cache). Node i holds a drafted token, its parent (-1 = the root) and, when
sampling, the distribution q[i] the token was drawn from, given its parent's context and its
earlier siblings. Nodes are stored parents first. A chain of k drafts is the tree whose node i
has parent i - 1.

Scoring: the target reads [root, node 0, ..., node N-1] in one pass, each at position
(prefix length - 1) + depth, and each sees the cached prefix, the root, its ancestors and itself
(`DraftTree.mask`). Row 0 of the output is the target's distribution after the root, row 1 + i
the one after node i.

Verification walks down from the root (`verify_tree_greedy`, `verify_tree_sampling`); the
accepted nodes form a root-to-node path, and the target adds one token after it. The round that
does all this for every method is minispec.speculative.speculative_round.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .sampling import sample
from .verify import residual


@dataclass
class DraftTree:
    tokens: list[int]                 # (N,) drafted token of each node
    parents: list[int]                # (N,) parent node, -1 = the root; parents[i] < i
    q: torch.Tensor | None = None     # (N, V) what each token was drawn from (None: greedy)
    scores: list[float] | None = None  # (N,) the drafter's log-confidence in each node's path
                                       # (EAGLE-2's score; None: not recorded)

    def __post_init__(self):
        if len(self.tokens) != len(self.parents):
            raise ValueError(f"{len(self.tokens)} tokens but {len(self.parents)} parents")
        for i, a in enumerate(self.parents):
            if not -1 <= a < i:
                raise ValueError(f"node {i} has parent {a}: parents must come first (-1 = the root)")
        if self.q is not None and self.q.shape[0] != len(self.tokens):
            raise ValueError(f"q has {self.q.shape[0]} rows for {len(self.tokens)} nodes")
        if self.scores is not None and len(self.scores) != len(self.tokens):
            raise ValueError(f"{len(self.scores)} scores for {len(self.tokens)} nodes")

    @classmethod
    def chain(cls, tokens: list[int], q: torch.Tensor | None = None) -> "DraftTree":
        return cls(list(tokens), list(range(-1, len(tokens) - 1)), q)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        """Each node is the child of the one before (an empty tree is a chain too)."""
        return self.parents == list(range(-1, len(self.tokens) - 1))

    @property
    def depth(self) -> list[int]:
        """Depth of each node: 1 for the root's children."""
        d = []
        for a in self.parents:
            d.append(1 if a < 0 else d[a] + 1)
        return d

    def children(self, node: int) -> list[int]:
        """The children of `node` (-1 = the root), in the order they were drafted."""
        return [i for i, a in enumerate(self.parents) if a == node]

    def path(self, node: int) -> list[int]:
        """Nodes from the root's child down to `node`."""
        out = []
        while node >= 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def paths(self) -> list[list[int]]:
        """Every root-to-leaf path, as node indices."""
        leaves = set(range(len(self))) - set(self.parents)
        return [self.path(i) for i in sorted(leaves)]

    def position_ids(self, prefix_len: int) -> torch.Tensor:
        """(N+1,) positions of [root, nodes]: the root is token prefix_len - 1 of the sequence."""
        return torch.tensor([prefix_len - 1] + [prefix_len - 1 + d for d in self.depth])

    def mask(self) -> torch.Tensor:
        """(N+1, N+1) additive mask over [root, nodes]: 0 where row may see column (the root,
        its ancestors, itself), -inf elsewhere. The cached prefix is visible to all rows."""
        n = len(self) + 1
        m = torch.full((n, n), float("-inf"))
        m[:, 0] = 0.0
        for i in range(len(self)):
            for j in self.path(i):
                m[1 + i, 1 + j] = 0.0
        return m


def verify_tree_greedy(tree: DraftTree, logits: torch.Tensor):
    """logits (N+1, V) of [root, nodes]. Follow the child equal to the target's argmax, as deep
    as it goes. Returns (accepted nodes, next token)."""
    best = logits.argmax(-1).tolist()                        # (N+1,) the target's choices
    accepted, node = [], -1
    while True:
        nxt = best[node + 1]
        child = next((c for c in tree.children(node) if tree.tokens[c] == nxt), None)
        if child is None:
            return accepted, nxt
        accepted.append(child)
        node = child


def verify_tree_sampling(tree: DraftTree, p: torch.Tensor, generator=None):
    """Recursive rejection sampling (SpecInfer). p (N+1, V) the target's warped distributions
    of [root, nodes]; tree.q[i] the distribution node i was drawn from. At the current node try
    the children in order: accept child x with probability min(1, p(x)/q(x)); on a rejection
    p <- norm(max(0, p - q)) and try the next child. If every child is rejected, sample the next
    token from what is left of p; after a leaf, sample it from the leaf's row (the bonus token).

    Lossless whatever q[i] is, provided it is the distribution child i was really drawn from
    given its earlier siblings: the parent's q for independent draws, q renormalised over the
    untried tokens for draws without replacement, one-hot for a deterministic pick (then the
    rule is: accept x with probability p(x), else zero p(x) and renormalise).
    Returns (accepted nodes, next token).
    """
    accepted, node = [], -1
    while True:
        r = p[node + 1]                                                   # (V,)
        for child in tree.children(node):
            x, q = tree.tokens[child], tree.q[child]
            u = torch.rand((), generator=generator, device=p.device)
            if u * q[x] < r[x]:                                           # u < r(x) / q(x)
                accepted.append(child)
                node = child
                break
            r = residual(r, q)
        else:                                                             # no child kept
            return accepted, int(sample(r, generator))
