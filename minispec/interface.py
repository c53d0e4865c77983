"""The two small interfaces the decoding loop (minispec.speculative) is written against.

TargetModel: what drafting and verification need from a target model. minispec's own
Transformer satisfies it; a wrapper over a Hugging Face causal LM can too, without any change
to the algorithms. Everything works on batch size 1, as in most speculative decoding systems.

Drafter: what every method's drafter does for one request (minispec.methods.make_drafter
builds them): chapter 1's draft model, prompt lookup and the oracle, and the EAGLE drafters
(minispec.drafting).
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch

from .tree import DraftTree


@runtime_checkable
class Cache(Protocol):
    length: int  # number of valid positions

    def rollback(self, length: int) -> None:
        """Forget positions >= length (rejected draft tokens)."""

    def compact(self, keep: Sequence[int] | torch.Tensor, start: int = 0) -> None:
        """Move positions keep[j] (>= start) to start + j; length becomes start + len(keep)."""


@runtime_checkable
class TargetModel(Protocol):
    vocab_size: int
    max_seq_len: int   # context length
    num_layers: int
    device: torch.device

    def new_cache(self, max_len: int | None = None) -> Cache:
        """An empty cache for up to max_len positions (default: the context length)."""

    def __call__(self, input_ids: torch.Tensor, cache: Cache | None = None,
                 position_ids: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None,
                 hidden_layers: Sequence[int] = (), logits_to_keep: int = 0):
        """Score input_ids (1, T) after the cached prefix; append them to the cache.

        Returns an object with .logits (1, T or logits_to_keep, V) and .hidden_states, a dict
        layer index -> (1, T, D) in Hugging Face's numbering (i < num_layers: the input of
        layer i; num_layers: the output after the final norm). attn_mask is a (T, T)
        additive mask among the new tokens (the prefix is always visible); position_ids (T,)
        are the rotary positions (default: cache.length + arange(T)).
        """


@runtime_checkable
class Drafter(Protocol):
    depth: int                       # the deepest a round drafts (gamma, for a chain)
    budget: int                      # the most nodes a round drafts (the benchmark's oracle drafts
                                     # chains of this length)
    extra_nodes: int                 # the most nodes a round drafts beyond `depth` (0 for a chain)
    feature_layers: Sequence[int]    # the target's hidden layers it reads (none for chapter 1's)

    def propose(self, tokens: list[int], k: int, params, generator=None) -> DraftTree:
        """A draft tree of depth <= k below tokens[-1] (params: the SamplingParams the target's
        tokens are drawn with; q, when sampling, must be warped the same way)."""

    def observe(self, tokens: list[int], hidden: dict[int, torch.Tensor]) -> None:
        """The target has now read all of tokens but the last; hidden[layer] (m, D) are its
        states on the m tokens it read last (the prompt, or the root and the accepted path)."""
