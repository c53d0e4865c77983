"""SuffixDecoding (Oliaro et al., NeurIPS 2025): drafting from everything already said, no model.

A suffix trie counts, for every stretch of up to `max_depth` tokens of a text, how often each
token followed it. Two tries serve a request: one over the request itself (its prompt and what it
has generated so far, updated every round) and, optionally, a global store over the outputs of
earlier requests (`SuffixStore`, filled by whoever finishes a request: `store.add(output)`).
Each round, in each trie:

    match   the longest suffix of the context that the trie holds, with a continuation
    grow    best-first from the matched node: a continuation's score is the product of the
            empirical frequencies along it, count(child) / (the counts of its siblings and it);
            a node scoring below min_token_prob is not drafted
    cap     at most max_spec_factor x (the match's length) nodes, and total_tokens

and the tree with the larger sum of scores is proposed: chapter 4's expected number of accepted
drafts, with the frequencies standing in for the chances. Longer matches draft more; a context
seen nowhere drafts nothing (the round is a plain step). The picks are deterministic, so each
node's q is one-hot and chapter 3's tree rule keeps sampling exact.

Names: the reference (ArcticInference's SuffixDecodingCache, as vLLM configures it) calls these
max_tree_depth (default 24), max_spec_factor (1.0), min_token_prob (0.1), and the most drafted
tokens num_speculative_tokens; minispec's total_tokens is EAGLE-2's name for the tree's size.
The reference keeps true suffix trees (linear size); this trie is cut at max_depth tokens (size
up to max_depth entries per token of text), which keeps the code short and the costs the same
for the depths it drafts.
"""
from __future__ import annotations

import heapq

from .sampling import SamplingParams
from .speculative import one_hot
from .tree import DraftTree


class SuffixTrie:
    """Counts of every stretch of up to max_depth tokens, as a trie. A node is [count, children]:
    count = how many times the stretch from the root to it occurs; children: token -> node."""

    def __init__(self, max_depth: int = 24):
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 2:
            raise ValueError(f"max_depth must be an integer >= 2, got {max_depth!r}")
        self.max_depth = max_depth
        self.root = [0, {}]
        self.active = []            # the nodes of the stretches ending at the last token added, shortest first

    def append(self, token: int) -> None:
        """One more token of the same text: every stretch ending at it is counted once more."""
        new = []
        for node in [self.root] + self.active[:self.max_depth - 1]:
            child = node[1].get(token)
            if child is None:
                child = node[1][token] = [0, {}]
            child[0] += 1
            new.append(child)
        self.active = new

    def add(self, tokens: list[int]) -> None:
        """A whole text of its own (an earlier request's output): its stretches, not across texts."""
        self.active = []
        for t in tokens:
            self.append(t)
        self.active = []

    def match(self, context: list[int]) -> tuple[list | None, int]:
        """The node of the longest suffix of context (at most max_depth - 1 tokens, so that one
        more can follow) that the trie holds with a continuation, and its length; (None, 0) if
        none does."""
        for m in range(min(len(context), self.max_depth - 1), 0, -1):
            node = self.root
            for t in context[len(context) - m:]:
                node = node[1].get(t)
                if node is None:
                    break
            if node is not None and node[1]:
                return node, m
        return None, 0

    def match_last(self) -> tuple[list | None, int]:
        """`match` of the text appended token by token, from the nodes `append` already holds for
        its suffixes (no walk from the root)."""
        for m in range(min(len(self.active), self.max_depth - 1), 0, -1):
            if self.active[m - 1][1]:
                return self.active[m - 1], m
        return None, 0


def grow(node, match_len: int, total_tokens: int, max_spec_factor: float, min_token_prob: float,
         max_depth: int) -> tuple[list[int], list[int], list[float]]:
    """The draft tree below a matched node, best-first by score (the product of the empirical
    frequencies along the path): (tokens, parents, scores), parents first. At most
    min(total_tokens, max_spec_factor * match_len) nodes, none deeper than max_depth, none scoring
    below min_token_prob."""
    budget = min(total_tokens, int(max_spec_factor * match_len))
    tokens, parents, scores = [], [], []
    heap, order = [], 0                      # (-score, order, node, parent index, token, depth)

    def push(n, parent, depth, score):
        nonlocal order
        total = sum(child[0] for child in n[1].values())
        for token, child in n[1].items():
            s = score * child[0] / total
            if s >= min_token_prob and depth <= max_depth:
                heapq.heappush(heap, (-s, order, child, parent, token, depth))
                order += 1
    push(node, -1, 1, 1.0)
    while heap and len(tokens) < budget:
        neg, _, child, parent, token, depth = heapq.heappop(heap)
        tokens.append(token); parents.append(parent); scores.append(-neg)
        push(child, len(tokens) - 1, depth + 1, -neg)
    return tokens, parents, scores


class SuffixStore:
    """The global trie: the outputs of earlier requests, shared by every request's drafter."""

    def __init__(self, max_depth: int = 24):
        self.trie = SuffixTrie(max_depth)
        self.texts = 0

    def add(self, output: list[int]) -> None:
        self.trie.add(list(output))
        self.texts += 1


class SuffixDrafter:
    """SuffixDecoding's drafter for one request (the Drafter interface of minispec.interface)."""
    feature_layers = ()

    def __init__(self, vocab_size: int, total_tokens: int = 16, max_depth: int = 24, max_spec_factor: float = 1.0,
                 min_token_prob: float = 0.1, store: SuffixStore | None = None, device="cpu"):
        if isinstance(total_tokens, bool) or not isinstance(total_tokens, int) or total_tokens < 1:
            raise ValueError(f"total_tokens (the most drafted tokens per round) must be an integer >= 1, got {total_tokens!r}")
        self.total_tokens = self.budget = total_tokens
        self.depth, self.extra_nodes = self.total_tokens, self.total_tokens - 1
        if not (isinstance(max_spec_factor, (int, float)) and max_spec_factor > 0):
            raise ValueError(f"max_spec_factor must be a number > 0, got {max_spec_factor!r}")
        if not (isinstance(min_token_prob, (int, float)) and 0 <= min_token_prob <= 1):
            raise ValueError(f"min_token_prob must be a number in [0, 1], got {min_token_prob!r}")
        self.max_spec_factor, self.min_token_prob = float(max_spec_factor), float(min_token_prob)
        self.local, self.store, self.seen = SuffixTrie(max_depth), store, 0
        self.vocab_size, self.device = vocab_size, device

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        for t in tokens[self.seen:]:                 # the request so far, into its own trie
            self.local.append(t)
        self.seen = len(tokens)
        best = ([], [], [])
        matches = [self.local.match_last()] + ([self.store.trie.match(tokens)] if self.store is not None else [])
        for node, m in matches:
            if node is not None:
                tree = grow(node, m, min(k, self.total_tokens), self.max_spec_factor, self.min_token_prob, k)
                if sum(tree[2]) > sum(best[2]):
                    best = tree
        drafts, parents, scores = best
        if not drafts:
            return DraftTree([], [])
        q = None if params.greedy else one_hot(drafts, self.vocab_size, self.device)
        return DraftTree(drafts, parents, q, scores)

    def observe(self, tokens: list[int], hidden) -> None:
        pass                                         # propose reads the verified tokens itself


class HybridDrafter:
    """SuffixDecoding's tree when its frequency model expects at least `threshold` accepted drafts
    (the sum of its nodes' scores), else the EAGLE head's tree: the combination the paper's authors
    ship. The head reads every round's verified features either way (its catch-up covers the
    rounds it did not draft), so switching costs nothing. `used` counts the rounds of each."""

    def __init__(self, suffix: SuffixDrafter, head_drafter, threshold: float = 2.0):
        if not (isinstance(threshold, (int, float)) and threshold >= 0):
            raise ValueError(f"threshold must be a number >= 0, got {threshold!r}")
        self.suffix, self.head, self.threshold = suffix, head_drafter, float(threshold)
        self.feature_layers = head_drafter.feature_layers
        self.depth = max(suffix.depth, head_drafter.depth)
        self.budget = max(suffix.budget, head_drafter.budget)
        self.extra_nodes = max(suffix.extra_nodes, head_drafter.extra_nodes)
        self.used = {"suffix": 0, "head": 0}

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        tree = self.suffix.propose(tokens, k, params, generator)
        if len(tree) and sum(tree.scores) >= self.threshold:
            self.used["suffix"] += 1
            return tree
        self.used["head"] += 1
        return self.head.propose(tokens, k, params, generator)

    def observe(self, tokens: list[int], hidden) -> None:
        self.head.observe(tokens, hidden)
