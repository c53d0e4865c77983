"""What a method's sizes and a draft head must satisfy, checked before anything is allocated.

Every drafter is built through these checks (whether `generate`, the benchmark, the command line
or a notebook builds it), so a bad value gets the same message wherever it comes from: a message
that names the option, the file or the field, never a hang, an allocation failure or a raw error
from deep inside. The rules, also listed in docs/design.md:

    gamma, depth      integers >= 1. A round never drafts deeper than the request has tokens, so
                      a larger value acts as the request's length (max_len): nothing beyond it
                      is ever allocated or drafted. (sps and pld only ever draft what is asked.)
    total_tokens      an integer in [1, context]: the tree is scored beside the request in one
                      target pass, and a tree larger than the model's context is refused.
    eagle_topk        an integer in [1, the head's vocabulary] (a head cannot rank more tokens
                      than it has). A tree of total_tokens nodes is never deeper nor wider than
                      total_tokens, so depth and eagle_topk act as at most total_tokens (the same
                      tree, up to exact ties of scores).
    the head's cache  a dynamic tree caches every level's frontier, (depth - 1) * eagle_topk
                      entries after the caps above; they must fit in the model's context.
    choices           a non-empty list of distinct paths of sibling ranks (lists of integers
                      >= 0), each with its parent and elder sibling; ranks below the head's
                      vocabulary; at most `context` nodes.

Heads: a head drafts for one target. Its feature size, attention heads, vocabulary and (EAGLE-3)
feature layers must fit the target, its context the request, its d2t / t2d maps must form a
one-to-one map into the target's vocabulary, and a head that carries the sha256 of the target it
was trained for (`head.target_sha256`: set by the loaders, by training and by `for_target`) is
refused for any other target, as the loaders refuse it.
"""
from __future__ import annotations

import numbers

import torch


def check_int(name: str, value, lo: int = 1, hi: int | None = None, why: str = "") -> int:
    """value as an int in [lo, hi] (hi None: no upper bound), else a ValueError that names it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {bound}{why}, got {value}")
    return value


def tree_sizes(total_tokens, depth, eagle_topk, vocab: int, context: int, max_len: int):
    """A dynamic tree's (total_tokens, depth, eagle_topk) after the checks and caps of the module's
    docstring. vocab: how many tokens the head ranks; context: the model's context; max_len: the
    request's length."""
    total_tokens = check_int("total_tokens", total_tokens, 1, context,
                             f" (drafted tokens per round; at most the model's context of {context})")
    depth = check_int("depth", depth, 1, why=" (the tree's levels)")
    eagle_topk = check_int("eagle_topk", eagle_topk, 1, vocab,
                           f" (children per node; the head ranks {vocab} tokens)")
    depth, eagle_topk = min(depth, total_tokens, max_len), min(eagle_topk, total_tokens)
    if (depth - 1) * eagle_topk > context:
        raise ValueError(f"a tree of depth {depth} and eagle_topk {eagle_topk} caches {(depth - 1) * eagle_topk} "
                         f"frontier nodes in the head, more than the model's context of {context}: "
                         "lower depth, eagle_topk or total_tokens")
    return total_tokens, depth, eagle_topk


def check_vocab_map(d2t: torch.Tensor, t2d: torch.Tensor, target_vocab: int, where: str) -> None:
    """An EAGLE-3 draft vocabulary: d2t (N,) integer offsets with draft id i -> target id i + d2t[i],
    one-to-one into [0, target_vocab); t2d (target_vocab,) marks exactly those target ids."""
    if d2t.dim() != 1 or t2d.dim() != 1 or t2d.numel() != target_vocab:
        raise ValueError(f"{where}: d2t must be one-dimensional and t2d hold one flag per target token "
                         f"({target_vocab}); got shapes {tuple(d2t.shape)} and {tuple(t2d.shape)}")
    if d2t.dtype.is_floating_point and not bool((d2t == d2t.round()).all()):
        raise ValueError(f"{where}: d2t holds non-integer offsets")
    ids = torch.arange(d2t.numel(), device=d2t.device) + d2t.long()
    if d2t.numel() and (int(ids.min()) < 0 or int(ids.max()) >= target_vocab):
        bad = int(torch.nonzero((ids < 0) | (ids >= target_vocab))[0])
        raise ValueError(f"{where}: d2t maps draft id {bad} to target id {int(ids[bad])}, outside the "
                         f"target's vocabulary [0, {target_vocab})")
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError(f"{where}: d2t maps two draft ids to one target id (it must be one-to-one)")
    marked = torch.zeros(target_vocab, dtype=torch.bool, device=t2d.device)
    marked[ids.to(t2d.device)] = True
    if not torch.equal(t2d.bool(), marked):
        raise ValueError(f"{where}: t2d does not mark exactly the target ids that d2t maps to")


def check_head_fits(head, target, max_len: int, target_vocab: int, layers=()) -> None:
    """A draft head against the target it drafts for and a request of max_len tokens: device,
    feature size and attention heads, the vocabulary it drafts in, the feature layers it reads
    (EAGLE-3), its context, and the target's sha256 when the head carries one."""
    from .checkpoint import weights_fingerprint
    name = f"the {getattr(head, 'kind', 'draft')} head"
    c, t = head.config, target.config
    if head.device != target.device:
        raise ValueError(f"{name} is on {head.device}, the target on {target.device}")
    if (c.dim, c.n_heads) != (t.dim, t.n_heads) or target_vocab != target.vocab_size:
        raise ValueError(f"{name} does not match the target: feature size {c.dim}, {c.n_heads} attention heads, "
                         f"vocabulary {target_vocab}; the target has {t.dim}, {t.n_heads}, {target.vocab_size}")
    bad = [i for i in layers if not 0 <= i < target.num_layers]
    if bad:
        raise ValueError(f"{name} does not match the target: it reads feature layers {list(layers)}, the "
                         f"target has layers 0 to {target.num_layers - 1}")
    if c.max_seq_len < max_len:
        raise ValueError(f"{name}'s context ({c.max_seq_len} positions) is shorter than this request "
                         f"({max_len} tokens)")
    want = getattr(head, "target_sha256", None)
    if want and want != weights_fingerprint(target):
        raise ValueError(f"{name} was made for the target whose weights have sha256 {want[:12]}..., not this "
                         "one: train or load a head for this target")


def check_finite(logits: torch.Tensor, who: str) -> torch.Tensor:
    """logits of a head at draft nodes, refused when NaN or infinite (broken or overflowing
    weights), before they reach a softmax or a sampler."""
    if not bool(torch.isfinite(logits).all()):
        raise ValueError(f"{who} gave NaN or infinite logits at a draft node: its weights are broken "
                         "or overflow float32")
    return logits
