"""Every decoding method in one table: its name, what it drafts with, its options and their
defaults. `generate`, the benchmark and the command line read this table, so a new method is
one entry here.

A method's draft model is what the user loads and passes (`generate(..., draft=...)`): a small
language model for sps, an EAGLE head for eagle1. Its drafter is the object built from it for
one request, which holds that request's caches and proposes draft trees (minispec.speculative).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from .interface import Drafter


@dataclass(frozen=True)
class Option:
    default: object
    help: str
    parse: Callable[[str], object] = int     # from the command line's text


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    make_drafter: Callable | None = None     # (target, draft, max_len, **options) -> drafter
    options: dict[str, Option] = field(default_factory=dict)
    draft: str | None = None                 # the draft model it needs, in words (None: none)
    load_draft: Callable | None = None       # (target, folder=None) -> the shipped draft model, or
                                             # the one in another folder

    def defaults(self) -> dict:
        return {k: o.default for k, o in self.options.items()}


def _no_draft(name, draft):
    if draft is not None:
        raise ValueError(f"method {name!r} needs no draft model: it drafts from the context itself")


def _sps(target, draft, max_len, gamma, max_entropy):
    from .speculative import DraftModelDrafter, check_draft_model
    check_draft_model(draft, target, max_len)
    return DraftModelDrafter(draft, max_len - 1, gamma, max_entropy)


def _pld(target, draft, max_len, gamma, max_ngram, min_ngram):
    from .speculative import PromptLookupDrafter
    _no_draft("pld", draft)
    return PromptLookupDrafter(target.vocab_size, gamma, max_ngram, min_ngram, target.device)


def _check_store(method, store):
    from .suffix import SuffixStore
    if store is not None and not isinstance(store, SuffixStore):
        raise ValueError(f"method {method!r} drafts from the request itself and, optionally, earlier outputs: "
                         f"the store must be None or a minispec.suffix.SuffixStore, got a {type(store).__name__}")
    return store


def _suffix(target, store, max_len, total_tokens, max_depth, max_spec_factor, min_token_prob):
    from .suffix import SuffixDrafter
    return SuffixDrafter(target.vocab_size, total_tokens, max_depth, max_spec_factor, min_token_prob,
                         _check_store("suffix", store), target.device)


def _hybrid(target, draft, max_len, total_tokens, depth, eagle_topk, suffix_tokens, max_spec_factor, min_token_prob,
            threshold):
    from .suffix import HybridDrafter, SuffixDrafter
    head, store = draft if isinstance(draft, tuple) else (draft, None)     # a head, or (head, SuffixStore)
    eagle = _eagle3(target, head, max_len, total_tokens, depth, eagle_topk)
    return HybridDrafter(SuffixDrafter(target.vocab_size, suffix_tokens, 24, max_spec_factor, min_token_prob,
                                       _check_store("hybrid", store), target.device), eagle, threshold)


def _oracle(target, sequence, max_len, gamma):
    from .speculative import OracleDrafter
    if (not isinstance(sequence, (list, tuple)) or not sequence
            or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < target.vocab_size for t in sequence)):
        raise ValueError("method 'oracle' drafts a known text: draft=the prompt's ids + the target's plain greedy "
                         "output (a list of token ids)")
    return OracleDrafter(sequence, target.vocab_size, gamma, target.device)


def _check_eagle1_head(target, head, max_len):
    from .eagle import Eagle1Head
    from .validate import check_head_fits
    if not isinstance(head, Eagle1Head):
        raise ValueError("EAGLE-1 methods need an EAGLE-1 head: generate(..., draft=minispec.load_eagle1(target))"
                         + ("" if head is None else f", got a {type(head).__name__}"))
    check_head_fits(head, target, max_len, head.config.vocab_size)


def _eagle1(target, head, max_len, gamma=None, choices=None, max_entropy=None):
    from .drafting import HeadDrafter
    from .eagle import StaticTree, chain_choices
    from .speculative import check_gamma
    _check_eagle1_head(target, head, max_len)
    if choices is None:            # a chain never drafts deeper than the request (minispec.validate)
        choices = chain_choices(min(check_gamma(gamma), max_len))
    return HeadDrafter(head, target, max_len, StaticTree(choices, max_entropy))


def _eagle2(target, head, max_len, total_tokens, depth, eagle_topk):
    from .drafting import HeadDrafter
    from .eagle2 import DynamicTree
    _check_eagle1_head(target, head, max_len)        # the same head as eagle1's, checked alike
    return HeadDrafter(head, target, max_len, DynamicTree(total_tokens, depth, eagle_topk))


def _eagle3(target, head, max_len, total_tokens, depth, eagle_topk):
    """EAGLE-2's dynamic tree with the EAGLE-3 head."""
    from .drafting import HeadDrafter
    from .eagle2 import DynamicTree
    from .eagle3 import Eagle3Head
    from .validate import check_head_fits, check_vocab_map
    if not isinstance(head, Eagle3Head):
        raise ValueError("method eagle3 needs an EAGLE-3 head: generate(..., draft=minispec.load_eagle3(target))"
                         + ("" if head is None else f", got a {type(head).__name__}"))
    check_head_fits(head, target, max_len, head.target_vocab, head.layers)
    check_vocab_map(head.d2t, head.t2d, head.target_vocab, "the EAGLE-3 head's draft vocabulary")
    return HeadDrafter(head, target, max_len, DynamicTree(total_tokens, depth, eagle_topk))


def _load_eagle3(target, folder=None):
    from .eagle3 import load_eagle3
    from .data import DATA_DIR
    return load_eagle3(folder or DATA_DIR / "eagle3", target)


def _load_eagle1(target, folder=None):
    from .eagle import load_eagle1
    from .data import DATA_DIR
    return load_eagle1(folder or DATA_DIR / "eagle1", target)


def _load_draft(target, folder=None):
    from .checkpoint import load_pretrained
    from .data import DATA_DIR
    return load_pretrained(folder or DATA_DIR / "draft", target.device)


def _eagle1_tree(target, head, max_len, choices, max_entropy):
    return _eagle1(target, head, max_len, choices=choices, max_entropy=max_entropy)


def _tree_choices():
    from .eagle import TREE_CHOICES
    return TREE_CHOICES


def _parse_choices(text: str):
    """A tree named in minispec.eagle.TREES, or a JSON list of sibling-rank paths."""
    from .eagle import TREES
    if text in TREES:
        return TREES[text]
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"not a tree name ({', '.join(TREES)}) nor a JSON list of paths") from None


GAMMA_HELP = "draft tokens per round (the chain's depth)"
SVIP = Option(None, "SVIP's adaptive draft length: draft nothing below a token whose distribution's "
                    "entropy exceeds this many nats; gamma (or the tree) is then the most (default: off)", float)
EAGLE2_OPTIONS = {"total_tokens": Option(None, "drafted tokens per round (the tree's size); default "
                                                "by device, minispec.eagle2.DEFAULTS"),
                  "depth": Option(None, "the tree's levels, one head pass each; default by device"),
                  "eagle_topk": Option(None, "children per expanded node, and the frontier's width (the "
                                             "reference's top_k; named apart from sampling's top_k); "
                                             "default by device")}
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("ar", "plain autoregressive decoding with the KV cache (the baseline)"),
    Method("sps", "speculative sampling with a draft language model (chapter 1)", _sps,
           {"gamma": Option(2, GAMMA_HELP), "max_entropy": SVIP},
           "a draft language model (minispec.load_draft())", _load_draft),
    Method("pld", "prompt lookup decoding: drafts copied from the context (chapter 1)", _pld,
           {"gamma": Option(6, GAMMA_HELP),
            "max_ngram": Option(3, "longest n-gram to look up"),
            "min_ngram": Option(1, "shortest n-gram to look up")}),
    Method("suffix", "SuffixDecoding: a draft tree from what followed the context's suffixes earlier in the "
                     "request (and in earlier outputs, with a store), no model (chapter 6)", _suffix,
           {"total_tokens": Option(16, "the most drafted tokens per round (the reference's num_speculative_tokens)"),
            "max_depth": Option(24, "the longest stretch of tokens counted (the reference's max_tree_depth)"),
            "max_spec_factor": Option(2.0, "draft at most this many tokens per token of the match (the reference: 1.0)", float),
            "min_token_prob": Option(0.1, "draft no token whose path frequency is below this", float)},
           None),   # no model: draft=None, or a minispec.suffix.SuffixStore of earlier outputs
    Method("hybrid", "SuffixDecoding's tree where its frequencies expect at least `threshold` accepted drafts, "
                     "else EAGLE-3's (chapter 6)", _hybrid,
           {**EAGLE2_OPTIONS,
            "suffix_tokens": Option(16, "the most tokens the suffix tree drafts (suffix's total_tokens)"),
            "max_spec_factor": Option(2.0, "the suffix tree: at most this many tokens per token of the match", float),
            "min_token_prob": Option(0.1, "the suffix tree: no token whose path frequency is below this", float),
            "threshold": Option(0.5, "use the suffix tree when the sum of its scores (its expected accepted drafts) "
                                     "is at least this", float)},
           "an EAGLE-3 head (minispec.load_eagle3(target)), or (head, a minispec.suffix.SuffixStore of earlier outputs)",
           _load_eagle3),
    Method("oracle", "the ceiling: drafts the target's own greedy continuation, known in advance, at no cost "
                     "(the benchmark's yardstick, `bench --oracle`)", _oracle, {"gamma": Option(4, GAMMA_HELP)},
           "the prompt's ids followed by the target's plain greedy output"),
    Method("eagle1", "EAGLE-1: feature-level drafting with a trained head, as a chain (chapter 2)",
           _eagle1, {"gamma": Option(2, GAMMA_HELP), "max_entropy": SVIP},
           "an EAGLE-1 head (minispec.load_eagle1(target))", _load_eagle1),
    Method("eagle1-tree", "EAGLE-1 with a static draft tree (chapter 3)", _eagle1_tree,
           {"choices": Option(None, "the tree: a name from minispec.eagle.TREES or a JSON list of "
                                    "sibling-rank paths, e.g. [[0],[1],[0,0]] (default: TREE_CHOICES)",
                              _parse_choices),
            "max_entropy": SVIP},
           "an EAGLE-1 head (minispec.load_eagle1(target))", _load_eagle1),
    Method("eagle2", "EAGLE-2: a dynamic draft tree grown where the head is confident (chapter 4)",
           _eagle2, EAGLE2_OPTIONS,
           "an EAGLE-1 head (minispec.load_eagle1(target))", _load_eagle1),
    Method("eagle3", "EAGLE-3: a head trained with the training-time test on fused low, middle and high "
                     "features, drafting EAGLE-2's dynamic tree (chapter 5)",
           _eagle3, EAGLE2_OPTIONS,
           "an EAGLE-3 head (minispec.load_eagle3(target))", _load_eagle3),
]}


def get_method(name) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {list(METHODS)}")
    return METHODS[name]


def make_drafter(method: str, target, draft, max_len: int, **options) -> Drafter:
    """The drafter of `method` for one request of up to max_len tokens, options checked."""
    m = get_method(method)
    unknown = set(options) - set(m.options)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}; "
                         f"known: {sorted(m.options) or 'none'}")
    if m.make_drafter is None:
        raise ValueError(f"method {method!r} drafts nothing")
    opts = m.defaults()
    opts.update(options)
    if "gamma" in opts and opts["gamma"] is not None:
        from .speculative import check_gamma
        check_gamma(opts["gamma"])
    if "choices" in opts and opts["choices"] is None:
        opts["choices"] = _tree_choices()
    return m.make_drafter(target, draft, max_len, **opts)
