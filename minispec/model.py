"""The target: a LLaMA-style decoder (RMSNorm, rotary positions, SwiGLU).

Parameter names follow Hugging Face's LlamaForCausalLM (without the "model." prefix), so the
export to the Hugging Face format is a renaming, and EAGLE heads can share the same names.

One forward pass serves every stage of speculative decoding:
  * a KV cache (minispec.cache) that can be rolled back to a length and compacted to chosen positions;
  * several new tokens at once, an additive attention mask among them, explicit position ids (trees);
  * the hidden states of requested layers (EAGLE-1 and EAGLE-3 features).
Inference is lean without a second implementation (`lean_linear`): q/k/v and gate/up each run
as one matmul on weights transposed once and kept, q and k rotate together, the cache writes in
place; training runs the same code, the stacking inside the autograd graph.
Shapes: B batch, T new tokens, P cached (past) tokens, H heads, hd head dim, D model dim.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cache import KVCache


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    dim: int = 192           # D
    n_layers: int = 8
    n_heads: int = 6         # head dim = dim // n_heads
    ffn_dim: int = 512       # SwiGLU hidden size
    max_seq_len: int = 512   # context length (rotary table and cache size)
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_seq_len"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even size")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ForwardOutput:
    logits: torch.Tensor                      # (B, T_kept, V) float32
    hidden_states: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (B, T, D)


# When decoding on a CPU, RMSNorm calls the fused kernel F.rms_norm runs, without its wrapper: the same
# numbers bit for bit, an exact-distribution test 5-7% faster. A private name, so checked once here.
try:
    _FUSED_RMS_NORM, _x, _w = torch._fused_rms_norm, torch.linspace(-1, 1, 24).view(2, 12), torch.linspace(0.5, 1, 12)
    assert torch.equal(_FUSED_RMS_NORM(_x, [12], _w, 1e-5)[0], F.rms_norm(_x, (12,), _w, 1e-5))
except Exception:                    # absent, MPS-only (older torch), or another signature
    _FUSED_RMS_NORM = None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        # weight * x / sqrt(mean(x^2) + eps), normalised in float32 as Hugging Face's Llama does
        if x.dtype == torch.float32:  # the same numbers in one call
            if _FUSED_RMS_NORM is not None and x.device.type == "cpu" and not torch.is_grad_enabled():
                return _FUSED_RMS_NORM(x, self.weight.shape, self.weight, self.eps)[0]
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return self.weight * F.rms_norm(x.float(), self.weight.shape, eps=self.eps).to(x.dtype)


def rotary_tables(cfg: ModelConfig, device=None):
    """cos, sin of shape (max_seq_len, hd), in the 'rotate half' layout Hugging Face uses:
    pair (i, i + hd/2) turns by angle pos * theta^(-2i/hd). `sin` carries rotate-half's sign
    (-sin on the first half, +sin on the second), so that apply_rotary needs no negation."""
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
    freqs = torch.outer(torch.arange(cfg.max_seq_len, dtype=torch.float32, device=device), inv_freq)
    return torch.cat([freqs, freqs], dim=-1).cos(), torch.cat([-freqs.sin(), freqs.sin()], dim=-1)


def apply_rotary(x, cos, sin):
    """x: (..., T, hd); cos, sin: (T, hd) from rotary_tables. Rotates each pair (x_i, x_{i+hd/2}):
        x_i        -> x_i cos - x_{i+hd/2} sin
        x_{i+hd/2} -> x_{i+hd/2} cos + x_i sin
    Rolling by hd/2 swaps the halves; the table's signed sin does the rest."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin


def lean_linear(x: torch.Tensor, *linears: nn.Linear) -> torch.Tensor:
    """x (..., K) -> the outputs of the bias-free Linear layers `linears` side by side,
    (..., N1 + N2 + ...), as ONE matrix product.

    Training (autograd on): F.linear over the weights stacked row-wise, stacked on every call so
    that gradients reach each weight, the checkpoint's tensors.
    Inference: x @ W with W the stacked weights transposed to (K, N) and made contiguous, built
    once and kept on the first layer (rebuilt when a weight is moved or changed in place:
    data_ptr and the version counter say so). The same numbers, one small matmul instead of
    several, and a layout the CPU's matmul reads faster (docs/benchmark.md has the figures).
    """
    weights = [lin._parameters["weight"] for lin in linears]   # (plain dict lookups: this runs ~30x a step)
    if torch.is_grad_enabled():
        return F.linear(x, torch.cat(weights))
    try:
        key = [(w.data_ptr(), w._version) for w in weights]
    except RuntimeError:             # weights made under inference_mode keep no version counter
        key = [(w.data_ptr(), 0) for w in weights]
    kept = linears[0].__dict__.get("_lean")
    if kept is None or kept[0] != key:
        kept = linears[0]._lean = (key, torch.cat(weights).t().contiguous())
    return x @ kept[1]


class Attention(nn.Module):
    """Multi-head attention with rotary positions. in_dim: the width of its input (default D;
    EAGLE-3's layer reads 2D, an embedding beside a feature); its output is always D wide."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, in_dim: int | None = None):
        super().__init__()
        self.n_heads, self.head_dim, self.layer_idx = cfg.n_heads, cfg.head_dim, layer_idx
        in_dim = in_dim or cfg.dim
        self.q_proj = nn.Linear(in_dim, cfg.dim, bias=False)
        self.k_proj = nn.Linear(in_dim, cfg.dim, bias=False)
        self.v_proj = nn.Linear(in_dim, cfg.dim, bias=False)
        self.o_proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None, mask):
        B, T, _ = x.shape
        H, hd = self.n_heads, self.head_dim
        qkv = lean_linear(x, self.q_proj, self.k_proj, self.v_proj)  # (B, T, 3D)
        qkv = qkv.view(B, T, 3 * H, hd).transpose(1, 2)    # (B, 3H, T, hd): q heads, k heads, v heads
        qk = apply_rotary(qkv[:, :2 * H], cos, sin)        # q and k rotated together
        q, k, v = qk[:, :H], qk[:, H:], qkv[:, 2 * H:]     # (B, H, T, hd) each
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)  # (B, H, P+T, hd)
        if isinstance(mask, str):  # "causal": plain training or prefill without a cache
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:                      # None (one new token sees everything) or (T, P+T) additive
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return lean_linear(y.transpose(1, 2).reshape(B, T, H * hd), self.o_proj)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x):
        gate, up = lean_linear(x, self.gate_proj, self.up_proj).chunk(2, dim=-1)
        return lean_linear(F.silu(gate) * up, self.down_proj)  # SwiGLU: down(silu(gate(x)) * up(x))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then + mlp(norm(x)). EAGLE-1's head drops the first
    norm (input_norm=False): its input is already a mix of an embedding and a normed feature."""

    def __init__(self, cfg: ModelConfig, layer_idx: int, input_norm: bool = True):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps) if input_norm else nn.Identity()
        self.self_attn = Attention(cfg, layer_idx)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, cache, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    kind = "transformer"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2's scaled init of residual projections
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    # -- the interface speculative decoding relies on (see minispec/interface.py) --
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    @property
    def num_layers(self) -> int:
        return self.config.n_layers

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def new_cache(self, max_len: int | None = None, batch: int = 1) -> KVCache:
        c = self.config
        return KVCache(c.n_layers, c.n_heads, c.head_dim, max_len or c.max_seq_len, batch,
                       self.device, self.lm_head.weight.dtype)

    def forward(self, input_ids, cache: KVCache | None = None, position_ids=None, attn_mask=None,
                hidden_layers=(), logits_to_keep: int = 0) -> ForwardOutput:
        """input_ids (B, T) -> logits (B, T, V), or of the last `logits_to_keep` positions.

        cache:         the new tokens' keys/values are appended; they attend to all P cached ones
        position_ids:  (T,) rotary positions; default P, P+1, ..., P+T-1
        attn_mask:     (T, T) additive mask (0 or -inf) among the new tokens, e.g. a token
                       tree, the cached prefix being visible to all; or (T, P+T) over cached
                       and new positions. Default: causal.
        hidden_layers: indices i of hidden states to return, Hugging Face's numbering:
                       i < n_layers is the input of layer i (0 = embeddings); n_layers is
                       the output after the final norm (the LM head's input, EAGLE's feature).
        """
        B, T = input_ids.shape
        past = cache.length if cache is not None else 0
        cos, sin, mask = rope_and_mask(self.rope_cos, self.rope_sin, past, T, position_ids, attn_mask)
        hidden = {}
        x = self.embed_tokens(input_ids)  # (B, T, D)
        for i, layer in enumerate(self.layers):
            if i in hidden_layers:
                hidden[i] = x
            x = layer(x, cos, sin, cache, mask)
        x = self.norm(x)
        if self.config.n_layers in hidden_layers:
            hidden[self.config.n_layers] = x
        if cache is not None:
            cache.length = past + T
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        return ForwardOutput(lean_linear(x, self.lm_head).float(), hidden)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def causal_mask(T: int, past: int = 0, device=None) -> torch.Tensor:
    """(T, past + T) additive mask: new token t sees the prefix and new tokens 0..t."""
    return torch.full((T, past + T), float("-inf"), device=device).triu(past + 1)


def rope_and_mask(rope_cos, rope_sin, past: int, T: int, position_ids=None, attn_mask=None):
    """What attention needs for T new tokens after `past` cached ones: the rotary cos, sin (T, hd)
    and the mask argument of every layer ("causal", None, or an additive (T, past + T) mask).
    Shared by the target and the draft heads, which cache earlier tree levels of their own.

    position_ids (T,): rotary positions, default past, past+1, ...; attn_mask: additive, either
    (T, T) among the new tokens (the cached prefix visible to all) or (T, past + T).
    """
    max_len, device = rope_cos.shape[0], rope_cos.device
    if position_ids is None:
        if past + T > max_len:
            raise ValueError(f"sequence of {past + T} tokens exceeds the context of {max_len}")
        cos, sin = rope_cos[past:past + T], rope_sin[past:past + T]
    else:
        position_ids = torch.as_tensor(position_ids, device=device)
        if position_ids.shape != (T,) or not 0 <= int(position_ids.min()) <= int(position_ids.max()) < max_len:
            raise ValueError(f"position_ids must have shape ({T},) and lie in [0, {max_len})")
        cos, sin = rope_cos[position_ids], rope_sin[position_ids]
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool or attn_mask.shape not in ((T, T), (T, past + T)):
            raise ValueError(f"attn_mask must be an additive float mask (0 = visible, -inf = hidden) "
                             f"of shape ({T}, {T}) or ({T}, {past + T}), got {attn_mask.dtype} "
                             f"{tuple(attn_mask.shape)}")
        mask = attn_mask.to(device=device, dtype=rope_cos.dtype)
        if past and mask.shape[1] == T:  # the prefix is visible to every new token
            mask = torch.cat([mask.new_zeros(T, past), mask], dim=1)
    elif T == 1:
        mask = None
    elif past == 0:
        mask = "causal"
    else:
        mask = causal_mask(T, past, device)
    return cos, sin, mask
