"""Chapter 1, and the loop every later chapter reuses: draft, verify in one pass, repeat.

A round: a drafter proposes a draft tree below the last token (chapter 1's drafters propose a
chain, a one-branch tree), the target scores every node in ONE forward pass, a verification
rule keeps a root-to-node path and adds one token of its own, the target's cache keeps only
that path, and the drafter is told what was kept, with the target's hidden states there (the
features EAGLE drafts from). Chains are verified with chapter 1's rules (minispec.verify), to
which the tree rules (minispec.tree) reduce on a chain.

A drafter is what minispec.interface.Drafter describes: its depth (how deep a round drafts),
budget and extra_nodes (how many nodes), the target's hidden layers it reads, propose() and
observe(). prefill() and speculative_round() are all the decoding loop asks of it.

Chapter 1's two drafters:
  DraftModelDrafter   a small language model with its own KV cache (method "sps")
  PromptLookupDrafter the continuation of the latest n-gram match in the context ("pld")
"""
from __future__ import annotations

import time
from typing import NamedTuple

import torch

from .interface import Cache, Drafter, TargetModel
from .sampling import SamplingParams, entropy, sample, warp
from .stats import GenerationStats
from .tree import DraftTree, verify_tree_greedy, verify_tree_sampling
from .verify import verify_greedy, verify_sampling


def check_max_entropy(max_entropy) -> float | None:
    if max_entropy is None:
        return None
    if isinstance(max_entropy, bool) or not isinstance(max_entropy, (int, float)) or not max_entropy >= 0 \
            or max_entropy == float("inf"):
        raise ValueError(f"max_entropy (nats) must be a finite number >= 0 or None, got {max_entropy!r}")
    return float(max_entropy)


def too_unsure(logits: torch.Tensor, params: SamplingParams, max_entropy: float | None) -> bool:
    """SVIP's stopping rule (chapter 4): the entropy (nats) of the distribution a draft token came
    from exceeds max_entropy, so the token is a guess that will likely be rejected: propose it
    (its check is free in the pass that happens anyway) but draft nothing after it. When greedy
    that distribution is the draft's softmax; when sampling, the warped q. (When on, it reads one
    number back from the device per drafted token.)"""
    if max_entropy is None:
        return False
    q = torch.softmax(logits.float(), -1) if params.greedy else warp(logits, params)
    return float(entropy(q)) > max_entropy


def check_gamma(gamma) -> int:
    if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
        raise ValueError(f"gamma (draft tokens per round) must be an integer >= 1, got {gamma!r}")
    return gamma


def one_hot(tokens: list[int], vocab_size: int, device="cpu") -> torch.Tensor | None:
    """(N, V) the q of tokens picked deterministically (prompt lookup, the oracle, EAGLE-2's
    top-k picks): all mass on the token. None for no tokens."""
    if not tokens:
        return None
    q = torch.zeros(len(tokens), vocab_size, device=device)
    q[torch.arange(len(tokens)), torch.tensor(tokens)] = 1.0
    return q


class DraftModelDrafter:
    """Chain drafting with a small LM: feed what it has not seen, then sample gamma tokens
    (fewer when one comes from a distribution whose entropy exceeds max_entropy: SVIP's
    adaptive draft length)."""
    extra_nodes, feature_layers = 0, ()

    def __init__(self, draft, max_len: int, gamma: int, max_entropy: float | None = None):
        self.draft, self.gamma = draft, check_gamma(gamma)
        self.budget = self.gamma
        self.max_entropy = check_max_entropy(max_entropy)
        self.cache = draft.new_cache(max_len)

    @property
    def depth(self) -> int:
        return self.gamma                            # a chain of gamma drafts

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        k = min(k, self.gamma)
        if k == 0:
            return DraftTree([], [])
        new = tokens[self.cache.length:]  # at least the last token, which the draft has not seen
        logits = self.draft(torch.tensor([new], device=self.draft.device), cache=self.cache,
                            logits_to_keep=1).logits[0, -1]                    # (V,)
        xs, qs = [], []
        for i in range(k):
            if params.greedy:
                x = logits.argmax()
            else:
                q = warp(logits, params)  # the SAME warping the target's p will get
                x = sample(q, generator)
                qs.append(q)
            xs.append(x)
            if i == k - 1 or too_unsure(logits, params, self.max_entropy):   # SVIP: x was a guess
                break
            logits = self.draft(x.view(1, 1), cache=self.cache, logits_to_keep=1).logits[0, -1]
        return DraftTree.chain(torch.stack(xs).tolist(), torch.stack(qs) if qs else None)  # one sync

    def observe(self, tokens: list[int], hidden) -> None:
        """Forget the rejected drafts: keep what the draft has read of tokens[:-1]."""
        self.cache.rollback(min(self.cache.length, len(tokens) - 1))


class PromptLookupDrafter:
    """Prompt lookup decoding: find the latest earlier occurrence of the last n tokens
    (n = max_ngram down to min_ngram) and propose what followed it. Training-free; its q is
    one-hot (it proposes deterministically), which the sampling verifier handles exactly."""
    extra_nodes, feature_layers = 0, ()

    def __init__(self, vocab_size: int, gamma: int = 6, max_ngram: int = 3, min_ngram: int = 1, device="cpu"):
        for name, v in (("max_ngram", max_ngram), ("min_ngram", min_ngram)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got {min_ngram}, {max_ngram}")
        self.vocab_size, self.max_ngram, self.min_ngram = vocab_size, max_ngram, min_ngram
        self.gamma = self.budget = check_gamma(gamma)
        self.device = device

    @property
    def depth(self) -> int:
        return self.gamma                            # a chain of at most gamma drafts

    def lookup(self, tokens: list[int], k: int) -> list[int]:
        L = len(tokens)
        for n in range(min(self.max_ngram, L - 1), self.min_ngram - 1, -1):
            pattern = tokens[L - n:]
            for start in range(L - n - 1, -1, -1):  # latest match first
                if tokens[start:start + n] == pattern:
                    return tokens[start + n:start + n + k]
        return []

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        k = min(k, self.gamma)
        drafts = self.lookup(tokens, k) if k else []
        return DraftTree.chain(drafts, None if params.greedy else one_hot(drafts, self.vocab_size, self.device))

    def observe(self, tokens: list[int], hidden) -> None:
        pass


class OracleDrafter:
    """The ceiling: drafts the target's own greedy continuation, known in advance from a plain
    run (`sequence` = prompt + plain greedy output), at no cost, through the same round and
    verifier as every method. Greedy, it is always right: tau = gamma + 1 (less only where the
    text ends), so its speed is the most that verifying gamma drafts per round allows on this
    machine. Its q is one-hot, like prompt lookup's."""
    extra_nodes, feature_layers = 0, ()

    def __init__(self, sequence: list[int], vocab_size: int, gamma: int = 4, device="cpu"):
        self.sequence, self.vocab_size, self.device = list(sequence), vocab_size, device
        self.gamma = self.budget = check_gamma(gamma)

    @property
    def depth(self) -> int:
        return self.gamma

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        L = len(tokens)
        drafts = self.sequence[L:L + min(k, self.gamma)] if self.sequence[:L] == tokens else []
        return DraftTree.chain(drafts, None if params.greedy else one_hot(drafts, self.vocab_size, self.device))

    def observe(self, tokens: list[int], hidden) -> None:
        pass


def check_draft_model(draft, target, max_len: int) -> None:
    """A draft model must share the target's tokenizer, device and fit the request."""
    if draft is None:
        raise ValueError("method 'sps' needs a draft model: generate(..., draft=minispec.load_draft())")
    if getattr(draft, "kind", None) in ("eagle1", "eagle3") or not hasattr(draft, "vocab_size"):
        raise ValueError(f"method 'sps' needs a draft language model (minispec.load_draft()), got a "
                         f"{type(draft).__name__}" + (f": an EAGLE head drafts with method {draft.kind}"
                                                      if getattr(draft, "kind", None) in ("eagle1", "eagle3") else ""))
    if draft.vocab_size != target.vocab_size:
        raise ValueError(f"the draft's vocabulary ({draft.vocab_size} tokens) differs from the "
                         f"target's ({target.vocab_size}): they must share one tokenizer")
    a, b = getattr(draft, "tokenizer_sha256", None), getattr(target, "tokenizer_sha256", None)
    if a and b and a != b:
        raise ValueError("the draft was trained with a different tokenizer than the target "
                         f"(tokenizer sha256 {a[:12]}... vs {b[:12]}...)")
    if draft.max_seq_len < max_len - 1:   # a draft model never needs the last position
        raise ValueError(f"the draft's context ({draft.max_seq_len} tokens) is too short for "
                         f"this request ({max_len - 1} tokens)")
    if draft.device != target.device:
        raise ValueError(f"the draft is on {draft.device}, the target on {target.device}")


class Round(NamedTuple):
    tree: DraftTree            # what was drafted (a chain: tree.tokens are x_1..x_k)
    accepted: list[int]        # the accepted nodes, from the root down
    next_token: int            # the correction (at a rejection) or the bonus token
    logits: torch.Tensor       # (N+1, V) the target's logits at the root and at each node
    p: torch.Tensor | None     # (N+1, V) the same, warped to distributions (None when greedy)
    times: tuple[float, float, float]  # seconds drafting, in the target's pass, verifying


def prefill(target: TargetModel, cache: Cache, drafter: Drafter, tokens: list[int]) -> None:
    """The target reads the prompt but its last token into `cache`, and the drafter is shown its
    hidden states there (the invariant every round starts from)."""
    if len(tokens) > 1:
        o = target(torch.tensor([tokens[:-1]], device=target.device), cache=cache,
                   hidden_layers=drafter.feature_layers, logits_to_keep=1)
        drafter.observe(tokens, {i: h[0] for i, h in o.hidden_states.items()})


def speculative_round(target: TargetModel, cache: Cache, drafter: Drafter, tokens: list[int], k: int, params: SamplingParams,
                      generator=None, verifier=verify_sampling) -> Round:
    """One round: draft a tree of depth <= k, score it in ONE target pass, verify, keep the
    accepted path in the target's cache, and show it to the drafter.

    On entry the target's cache holds tokens[:-1]; on return `tokens` has the accepted tokens
    and the next token appended, and the cache holds all but the new last token.
    verifier: the chain sampling rule (a hook for chapter 1's round stepper).
    """
    t0 = time.perf_counter()
    tree = drafter.propose(tokens, k, params, generator)
    t1 = time.perf_counter()
    L, chain = len(tokens), tree.is_chain
    x = torch.tensor([[tokens[-1], *tree.tokens]], device=target.device)          # (1, N+1)
    layout = {} if chain else {"position_ids": tree.position_ids(L).to(target.device),
                               "attn_mask": tree.mask()}                         # a chain: causal
    out = target(x, cache=cache, hidden_layers=drafter.feature_layers, **layout)
    logits = out.logits[0]                                                       # (N+1, V)
    t2 = time.perf_counter()
    p = None if params.greedy else warp(logits, params)
    if chain:
        n, nxt = (verify_greedy(tree.tokens, logits) if params.greedy
                  else verifier(tree.tokens, tree.q, p, generator))
        accepted = list(range(n))
    else:
        accepted, nxt = (verify_tree_greedy(tree, logits) if params.greedy
                         else verify_tree_sampling(tree, p, generator))
    t3 = time.perf_counter()
    if chain:
        cache.rollback(L + len(accepted))     # keep the root and the accepted drafts
    else:
        cache.compact([L + i for i in accepted], start=L)  # the root stays at L - 1, then the path
    tokens += [tree.tokens[i] for i in accepted] + [nxt]
    rows = [0] + [1 + i for i in accepted]                  # the root and the path, in order
    drafter.observe(tokens, {i: h[0, rows] for i, h in out.hidden_states.items()})
    return Round(tree, accepted, nxt, logits, p, (t1 - t0, t2 - t1, t3 - t2))


def speculative_generate(target: TargetModel, prompt: list[int], max_new_tokens: int, params: SamplingParams,
                         generator, eos_id, drafter: Drafter, verifier=verify_sampling, on_round=None):
    """Rounds until max_new_tokens or eos_id. Returns (tokens, stats).

    Invariant: the target's cache holds every token but the last one (which is fed, with the
    draft tree, at the start of the next round). verifier: see speculative_round. on_round: called
    with every Round (chapter 4 records the head's calibration with it).
    """
    stats = GenerationStats()
    # Rounds never draft deeper than max_new_tokens; a tree adds its extra width.
    cache = target.new_cache(len(prompt) + max_new_tokens + drafter.extra_nodes)
    tokens, out = list(prompt), []
    if len(prompt) > 1:
        t0 = time.perf_counter()
        prefill(target, cache, drafter, tokens)
        stats.prefill_time = time.perf_counter() - t0
        stats.target_calls += 1
    while len(out) < max_new_tokens:
        k = max_new_tokens - len(out) - 1  # never draft past max_new_tokens
        r = speculative_round(target, cache, drafter, tokens, k, params, generator, verifier)
        if on_round is not None:
            on_round(r)
        stats.target_calls += 1
        stats.draft_time += r.times[0]
        stats.target_time += r.times[1]
        stats.verify_time += r.times[2]
        if len(r.tree):
            stats.record_round(len(r.tree), len(r.accepted), max(r.tree.depth))
        else:  # nothing proposed (no lookup match, or one token left): a plain decoding step
            stats.accept_lengths.append(1)
        new = [r.tree.tokens[i] for i in r.accepted] + [r.next_token]
        out += new
        if eos_id is not None and eos_id in new:
            out = out[:out.index(eos_id) + 1]
            break
    return out, stats
