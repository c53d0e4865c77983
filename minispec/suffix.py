"""SuffixDecoding (Oliaro et al., NeurIPS 2025): drafting from everything already said, no model.

A suffix trie counts, for every stretch of up to `max_depth` tokens of a text, how often each
token followed it. Two tries serve a request: one over the request itself (its prompt and what it
has generated so far, updated every round) and, optionally, a global store over the outputs of
earlier requests (`SuffixStore`, filled by whoever finishes a request: `store.add(output)`).
Each round, in each trie:

    match   every suffix of the context (1 to max_depth - 1 tokens) that the trie holds with a
            continuation
    grow    below each matched node, best-first: a continuation's score is the product of the
            empirical frequencies along it, count(child) / (the counts of its siblings and it);
            a node scoring below min_token_prob is not drafted
    cap     at most max_spec_factor x (the match's length) nodes, and total_tokens

and the tree with the largest sum of scores is proposed (within a trie a longer match wins a tie;
between the two tries, the request's own): chapter 4's expected number of accepted drafts, with the frequencies standing
in for the chances. A long match is specific but leaves little depth below it (the trie stops at
max_depth tokens) and a short one drafts few tokens (the cap): the score picks between them. A
context seen nowhere drafts nothing (the round is a plain step). The picks are deterministic, so
each node's q is one-hot and chapter 3's tree rule keeps sampling exact.

Names: the reference (ArcticInference's SuffixDecodingCache, as vLLM configures it) calls these
max_tree_depth (default 24), max_spec_factor (1.0), min_token_prob (0.1), and the most drafted
tokens num_speculative_tokens; minispec's total_tokens is EAGLE-2's name for the tree's size.
The reference keeps true suffix trees (linear size); this trie is cut at max_depth tokens (size
up to max_depth entries per token of text), which keeps the code short and the costs the same
for the depths it drafts. The reference divides a child's count by its parent's (which also
counts the occurrences with nothing after them yet), this trie by the siblings' counts. Replayed
on the bench's greedy outputs at the same settings (`replay_greedy`, chapter 6), the two are
within 0.05 of each other's tau from the request alone; with a store of earlier outputs they
differ by up to 0.5 (this one ahead on Python, the reference on math at max_spec_factor 4), and
on the same task asked again the reference is ahead by 2 to 7%.
"""
from __future__ import annotations

import heapq
import math
from typing import NamedTuple

from .sampling import SamplingParams
from .speculative import one_hot
from .stats import GenerationStats
from .tree import DraftTree

GREEDY = SamplingParams(0.0)


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

    def suffix_nodes(self, context: list[int]) -> list[list]:
        """The nodes of context's suffixes of 1, 2, ... tokens that the trie holds, at most
        max_depth - 1 tokens long (so that one more can follow); a missing suffix ends the list,
        since every longer one contains it."""
        nodes = []
        for m in range(1, min(len(context), self.max_depth - 1) + 1):
            node = self.root
            for t in context[len(context) - m:]:
                node = node[1].get(t)
                if node is None:
                    return nodes
            nodes.append(node)
        return nodes

    def last_suffix_nodes(self) -> list[list]:
        """`suffix_nodes` of the text appended token by token, from the nodes `append` keeps (no
        walk from the root)."""
        return self.active[:self.max_depth - 1]


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


class SuffixDraft(NamedTuple):
    """A candidate draft: the trie it came from, the length of the match, and grow's tree."""
    source: str                 # "request" or "store"
    match_len: int
    tokens: list[int]
    parents: list[int]
    scores: list[float]

    @property
    def expected(self) -> float:
        """The sum of the scores: the expected number of accepted drafts."""
        return sum(self.scores)


NO_DRAFT = SuffixDraft("request", 0, [], [], [])


class SuffixDrafter:
    """SuffixDecoding's drafter for one request (the Drafter interface of minispec.interface)."""
    feature_layers = ()

    def __init__(self, vocab_size: int, total_tokens: int = 16, max_depth: int = 24, max_spec_factor: float = 2.0,
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
        self.last = NO_DRAFT
        self.vocab_size, self.device = vocab_size, device

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        for t in tokens[self.seen:]:                 # the request so far, into its own trie
            self.local.append(t)
        self.seen = len(tokens)
        budget = min(k, self.total_tokens)
        best = self.best_tree(self.local.last_suffix_nodes(), budget, k, NO_DRAFT, "request")
        if self.store is not None:                   # it must score more than the request's own to win
            best = self.best_tree(self.store.trie.suffix_nodes(tokens), budget, k, best, "store")
        self.last = best                             # what this round matched and drafted: chapter 6
        if not best.tokens:
            return DraftTree([], [])
        q = None if params.greedy else one_hot(best.tokens, self.vocab_size, self.device)
        return DraftTree(best.tokens, best.parents, q, [math.log(s) for s in best.scores])   # log-scores

    def best_tree(self, nodes: list, budget: int, k: int, best: SuffixDraft, source: str) -> SuffixDraft:
        """The highest-scoring tree below nodes[m - 1] (the matched suffix of m tokens) over every
        m, longest first, if it scores more than `best`."""
        for m in range(len(nodes), 0, -1):
            if min(budget, int(self.max_spec_factor * m)) <= best.expected:
                break                                # n nodes score at most n: no shorter match can win
            if nodes[m - 1][1]:
                tree = SuffixDraft(source, m, *grow(nodes[m - 1], m, budget, self.max_spec_factor,
                                                   self.min_token_prob, k))
                if tree.expected > best.expected:
                    best = tree
        return best

    def observe(self, tokens: list[int], hidden) -> None:
        pass                                         # propose reads the verified tokens itself


def replay_greedy(drafter, prompt: list[int], output: list[int], max_new_tokens: int | None = None) -> GenerationStats:
    """Greedy speculative decoding with a drafter that needs no model (suffix, pld), replayed on
    the target's known plain greedy `output` after `prompt`, without running the target: each round
    the drafter proposes from the tokens so far (at most max_new_tokens - generated - 1 deep, as
    speculative_generate asks), the longest drafted path that `output` continues is accepted and
    output's next token follows, as greedy verification would do (the method is lossless, so the
    text is `output`). Returns the rounds' counters, those of a real generation of max_new_tokens
    (default len(output)). Exact only for an output that max_new_tokens ended: one ended by the
    end-of-text token is refused (a real round may draft and accept past it)."""
    max_new_tokens = len(output) if max_new_tokens is None else max_new_tokens
    if len(output) != max_new_tokens:
        raise ValueError(f"the output has {len(output)} tokens, not max_new_tokens = {max_new_tokens}: a "
                         "generation ended early (end of text) cannot be replayed exactly")
    stats, tokens, n = GenerationStats(new_tokens=len(output)), list(prompt), 0
    stats.target_calls = int(len(prompt) > 1)                  # the prefill
    while n < len(output):
        tree = drafter.propose(tokens, max_new_tokens - n - 1, GREEDY)
        on, depth = [], tree.depth                            # on[i]: output continues with node i's path
        for t, parent, d in zip(tree.tokens, tree.parents, depth):
            on.append((parent == -1 or on[parent]) and n + d <= len(output) and output[n + d - 1] == t)
        accepted = max([d for d, ok in zip(depth, on) if ok], default=0)
        if len(tree):
            stats.record_round(len(tree), accepted, max(depth))
        else:
            stats.accept_lengths.append(1)
        tokens += output[n:n + accepted + 1]
        n += accepted + 1
        stats.target_calls += 1
    return stats


class HybridDrafter:
    """SuffixDecoding's tree when its frequency model expects at least `threshold` accepted drafts
    (the sum of its nodes' scores), else the EAGLE head's tree: the combination the paper's authors
    ship. The head reads every round's verified features either way (its catch-up covers the
    rounds it did not draft), so switching costs nothing. `used` counts the rounds of each."""

    def __init__(self, suffix: SuffixDrafter, head_drafter, threshold: float = 0.5):
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
        if len(tree) and sum(math.exp(s) for s in tree.scores) >= self.threshold:
            self.used["suffix"] += 1
            return tree
        self.used["head"] += 1
        return self.head.propose(tokens, k, params, generator)

    def observe(self, tokens: list[int], hidden) -> None:
        self.head.observe(tokens, hidden)
