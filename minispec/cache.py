"""The KV cache every model here decodes with (the target, the draft LM and the EAGLE heads),
and the two operations speculative decoding adds to it: roll back to a length (a rejected
chain) and compact to chosen positions (an accepted tree path)."""
from __future__ import annotations

import torch


class KVCache:
    """Preallocated keys and values of every layer: (n_layers, B, H, max_len, hd).

    `length` tokens are valid. A forward pass writes its T new tokens at [length, length+T)
    and then advances length. Speculative decoding undoes or reshapes that with
    `rollback` (drop rejected tokens) and `compact` (keep an accepted tree path).
    """

    def __init__(self, n_layers, n_heads, head_dim, max_len, batch=1, device="cpu", dtype=torch.float32):
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.k = torch.empty(shape, device=device, dtype=dtype)  # only [:length] is ever read
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store (B, H, T, hd) new keys/values of one layer; return all valid ones for it."""
        start, T = self.length, k.shape[2]
        if start + T > self.max_len:
            raise ValueError(f"KV cache overflow: {start + T} tokens > max_len {self.max_len}")
        keys, values = self.k[layer], self.v[layer]  # (B, H, max_len, hd) views
        keys.narrow(2, start, T).copy_(k)
        values.narrow(2, start, T).copy_(v)
        return keys.narrow(2, 0, start + T), values.narrow(2, 0, start + T)

    def rollback(self, length: int) -> None:
        """Forget everything from position `length` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot roll back a cache of length {self.length} to {length}")
        self.length = length

    def compact(self, keep, start: int = 0) -> None:
        """Move positions keep[0], keep[1], ... (all >= start) to start, start+1, ...

        Positions below `start` stay; the cache ends up start + len(keep) long. After tree
        verification: cache.compact(prefix_len + accepted_nodes, start=prefix_len).
        """
        if not 0 <= start <= self.length:
            raise ValueError(f"compact: start {start} outside [0, {self.length}]")
        keep = torch.as_tensor(keep, dtype=torch.long, device=self.k.device)
        if keep.numel() and (int(keep.min()) < start or int(keep.max()) >= self.length):
            raise ValueError(f"compact: positions must lie in [{start}, {self.length})")
        n = keep.numel()
        self.k[:, :, :, start:start + n] = self.k[:, :, :, keep]  # gather copies first
        self.v[:, :, :, start:start + n] = self.v[:, :, :, keep]
        self.length = start + n
