"""The small interface that drafting and verification code needs from a target model.

minispec's own Transformer satisfies it; a wrapper over a Hugging Face causal LM can too,
without any change to the algorithms. Everything works on batch size 1, as in most
speculative decoding systems.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


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
