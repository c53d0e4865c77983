"""Chapter 5: EAGLE-3, training-time test with multi-layer features and direct token prediction.

EAGLE-1 regresses the target's next feature, and that target limits what a head can learn: more
data stops helping. EAGLE-3 drops the feature loss and predicts tokens directly, which frees the
head's output to be whatever helps the NEXT draft step, and it reads more of the target:

    g_t  = fc(concat(h^low_t, h^mid_t, h^high_t))                  3D -> D, no bias
    o_t  = layer(concat(input_norm(embed(x_{t+1})), hidden_norm(g_t)), residual g_t)
    q    = softmax(lm_head(norm(o_t)))                              over the draft vocabulary

h^l_t is the hidden state entering layer l of the target at position t. The head's own output
o_t replaces g in later draft steps, so at inference the head is fed its own outputs, which
training with real features never shows it. The training-time test (TTT) closes that gap:
training unrolls the head k steps, feeding o back in, each step predicting one token further.

Draft vocabulary: the head's LM head covers only the N target tokens most frequent in the
training data. Draft id i is target id i + d2t[i]; t2d marks the target ids that have a draft id
(SpecForge's buffers, which vLLM and SGLang load). Drafted tokens are mapped back to target ids
before verification; the head can never propose a token outside its vocabulary.

Drafting uses EAGLE-2's dynamic tree (minispec.eagle2.DynamicTree), unchanged: only where a
node's logits and the head's input features come from differ (target_layers, input_features and
node_logits below, which minispec.drafting calls). The training-time test and the head's
training are minispec.eagle3_train.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoint import (CheckpointError, MANIFEST, WEIGHTS, atomic_write, check_folder, load_into,
                         load_state_dict, read_head_checkpoint, save_pretrained, weights_fingerprint)
from .drafting import DraftHead
from .model import MLP, Attention, ModelConfig, RMSNorm, lean_linear, rope_and_mask
from .validate import check_finite, check_vocab_map


def feature_layers_for(n_layers: int) -> tuple[int, int, int]:
    """The low, middle and high layers whose inputs EAGLE-3 fuses. The reference takes layers
    2, L//2 and L-3 of a 32-layer model: 1/16, 1/2 and 29/32 of the way up. Features mean what
    they mean by their place in the stack, so minispec keeps those fractions rather than the
    offsets: (1, 4, 7) for its 8-layer target (2, L//2, L-3 would give (2, 4, 5), whose "high"
    sits mid-stack), and (2, 16, 29) for 32 layers. Layer 0's input, the embedding, which the
    head reads anyway, is avoided where the target has more than one layer."""
    clamp = lambda i: min(max(i, 1), n_layers - 1) if n_layers > 1 else 0
    return (clamp(round(n_layers * 2 / 32)), clamp(n_layers // 2), clamp(round(n_layers * 29 / 32)))


class Eagle3Layer(nn.Module):
    """The head's decoder layer: attention reads [input_norm(embedding), hidden_norm(h)] (2D wide)
    and adds to the residual stream h; then the usual MLP. Names as in SpecForge's midlayer."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.hidden_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = Attention(cfg, 0, in_dim=2 * cfg.dim)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, emb, h, cos, sin, cache, mask):
        x = torch.cat([self.input_layernorm(emb), self.hidden_norm(h)], dim=-1)   # (B, T, 2D)
        h = h + self.self_attn(x, cos, sin, cache, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Eagle3Head(DraftHead):
    """fc (fuse) -> midlayer -> norm -> lm_head over the draft vocabulary. cfg.vocab_size is the
    draft vocabulary's size N; target_vocab the target's V. Tensor names are SpecForge's."""
    kind = "eagle3"

    def __init__(self, cfg: ModelConfig, target_vocab: int, layers=(1, 4, 7)):
        super().__init__()
        if cfg.n_layers != 1:
            raise ValueError(f"an EAGLE-3 head has one decoder layer, got n_layers={cfg.n_layers}")
        if cfg.vocab_size > target_vocab:
            raise ValueError(f"draft vocabulary {cfg.vocab_size} larger than the target's {target_vocab}")
        self.config, self.target_vocab, self.layers = cfg, target_vocab, tuple(int(i) for i in layers)
        D = cfg.dim
        self.fc = nn.Linear(len(self.layers) * D, D, bias=False)
        self.midlayer = Eagle3Layer(cfg)
        self.norm = RMSNorm(D, cfg.norm_eps)
        self.lm_head = nn.Linear(D, cfg.vocab_size, bias=False)
        self.register_buffer("d2t", torch.zeros(cfg.vocab_size, dtype=torch.long))      # (N,)
        self.register_buffer("t2d", torch.zeros(target_vocab, dtype=torch.bool))        # (V,)
        self.init_weights()
        self.set_vocab(torch.arange(cfg.vocab_size))

    @classmethod
    def for_target(cls, target, draft_ids, layers=None) -> "Eagle3Head":
        """A fresh head for `target` over the draft vocabulary `draft_ids` (target ids). Its LM
        head starts from the target's rows for those tokens (a warm start; it is trained)."""
        draft_ids = torch.as_tensor(sorted(set(int(i) for i in draft_ids)))
        cfg = replace(target.config, n_layers=1, vocab_size=len(draft_ids))
        head = cls(cfg, target.vocab_size, layers or feature_layers_for(target.num_layers))
        head.set_vocab(draft_ids)
        with torch.no_grad():
            head.lm_head.weight.copy_(target.lm_head.weight[draft_ids.to(target.device)].cpu())
        head.target_sha256 = weights_fingerprint(target)          # it drafts for this target alone
        return head

    def set_vocab(self, draft_ids) -> None:
        """draft_ids: the target ids of the draft vocabulary, in increasing order (draft id i is
        the i-th smallest), so d2t[i] = draft_ids[i] - i >= 0."""
        ids = torch.as_tensor(draft_ids, dtype=torch.long, device=self.d2t.device)
        if ids.shape != self.d2t.shape or (ids.numel() > 1 and not bool((ids[1:] > ids[:-1]).all())) \
                or int(ids.min()) < 0 or int(ids.max()) >= self.target_vocab:
            raise ValueError(f"draft_ids must be {self.d2t.numel()} increasing target ids in [0, {self.target_vocab})")
        self.d2t.copy_(ids - torch.arange(len(ids), device=ids.device))
        self.t2d.zero_()
        self.t2d[ids] = True

    @property
    def draft_ids(self) -> torch.Tensor:
        """(N,) the target id of every draft id: i + d2t[i]."""
        return torch.arange(len(self.d2t), device=self.d2t.device) + self.d2t

    def fuse(self, hidden: dict) -> torch.Tensor:
        """hidden[layer] (..., D) for the head's layers -> g (..., D)."""
        return self.fc(torch.cat([hidden[i] for i in self.layers], dim=-1))

    def forward(self, emb, h, cache=None, position_ids=None, attn_mask=None):
        """emb (B, T, D) embeddings of x_{t+1}; h (B, T, D) fused features g_t or the head's own
        earlier outputs -> o (B, T, D). cache, position_ids, attn_mask as in Transformer.forward."""
        past = cache.length if cache is not None else 0
        T = emb.shape[1]
        cos, sin, mask = rope_and_mask(self.rope_cos, self.rope_sin, past, T, position_ids, attn_mask)
        o = self.midlayer(emb, h, cos, sin, cache, mask)
        if cache is not None:
            cache.length = past + T
        return o

    def target_layers(self, target) -> tuple[int, ...]:
        return self.layers

    def input_features(self, hidden: dict, target) -> torch.Tensor:
        return self.fuse(hidden)

    def node_logits(self, feats: torch.Tensor, target) -> torch.Tensor:
        """The head's own LM head ranks the children over the draft vocabulary, mapped back to
        target ids (-inf elsewhere), so verification and the drafted q live in the target's
        vocabulary as for every other method. NaN or infinity (a broken head) is refused by name."""
        return self.to_target(check_finite(self.logits(feats), "the EAGLE-3 head"))

    def logits(self, o) -> torch.Tensor:
        """o (..., D) -> (..., N) logits over the draft vocabulary."""
        return lean_linear(self.norm(o), self.lm_head).float()

    def to_target(self, logits) -> torch.Tensor:
        """(..., N) draft-vocabulary logits -> (..., V) target-vocabulary logits, -inf at every
        target id outside the draft vocabulary (target id = draft id + d2t)."""
        out = logits.new_full((*logits.shape[:-1], self.target_vocab), float("-inf"))
        out[..., self.draft_ids] = logits
        return out


def restrict_vocab(head: Eagle3Head, keep_ids) -> Eagle3Head:
    """FR-Spec / VocabTrim at inference: a copy of the head whose LM head keeps only the rows of
    `keep_ids` (target ids inside its draft vocabulary). Drafting gets cheaper (the LM head is
    most of a small head's cost); acceptance drops where the target's choice is left out."""
    keep = torch.as_tensor(sorted(set(int(i) for i in keep_ids)), device=head.device)
    old = head.draft_ids
    rows = torch.searchsorted(old, keep)
    if keep.numel() == 0 or int(rows.max()) >= len(old) or not torch.equal(old[rows], keep):
        raise ValueError("keep_ids must be a non-empty subset of the head's draft vocabulary")
    small = Eagle3Head(replace(head.config, vocab_size=len(keep)), head.target_vocab, head.layers).to(head.device)
    state = {k: v for k, v in head.state_dict().items() if k not in ("lm_head.weight", "d2t", "t2d")}
    small.load_state_dict({**state, "lm_head.weight": head.lm_head.weight[rows], "d2t": small.d2t,
                           "t2d": small.t2d})
    small.set_vocab(keep)
    small.target_sha256 = getattr(head, "target_sha256", None)
    return small.eval()


# ----------------------------------------------------------------------------- checkpoints
def specforge_config(head: Eagle3Head) -> dict:
    """The config.json that SpecForge writes for an EAGLE-3 head and vLLM / SGLang read."""
    c = head.config
    return {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama",
            "hidden_size": c.dim, "intermediate_size": c.ffn_dim, "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_heads, "head_dim": c.head_dim, "num_hidden_layers": 1,
            "vocab_size": head.target_vocab, "draft_vocab_size": c.vocab_size,
            "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps,
            "rope_theta": c.rope_theta, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "float32", "eagle_aux_hidden_state_layer_ids": list(head.layers)}


def save_eagle3(head: Eagle3Head, directory, **manifest) -> Path:
    """model.safetensors in SpecForge's tensor names (fc, midlayer.*, norm, lm_head, d2t, t2d),
    its config.json, and minispec's manifest.json (which also names the target)."""
    directory = Path(directory)
    save_pretrained(head, directory, name="eagle3", target_vocab=head.target_vocab,
                    layers=list(head.layers), **manifest)
    cfg = specforge_config(head)
    atomic_write(directory / "config.json", lambda p: Path(p).write_text(json.dumps(cfg, indent=1) + "\n"))
    return directory


def _check_fits(head_cfg: ModelConfig, target_vocab: int, layers, target, where) -> None:
    c = target.config
    if (head_cfg.dim, head_cfg.n_heads, target_vocab) != (c.dim, c.n_heads, target.vocab_size):
        raise CheckpointError(f"the head in {where} (dim {head_cfg.dim}, {head_cfg.n_heads} heads, target "
                              f"vocabulary {target_vocab}) does not fit this target (dim {c.dim}, "
                              f"{c.n_heads} heads, vocabulary {target.vocab_size})")
    if len(layers) != 3 or not all(0 <= i < target.num_layers for i in layers):
        raise CheckpointError(f"the head in {where} reads layers {list(layers)}, which this "
                              f"{target.num_layers}-layer target does not have")


def load_eagle3(directory, target, verify: bool = True) -> Eagle3Head:
    """Load a trained head (default folder: data/eagle3) for `target`. With minispec's manifest,
    the head must have been trained on this very target (sha256 of its weights); a folder with
    only SpecForge's config.json and model.safetensors is loaded by shape."""
    directory = check_folder(directory)
    if not (directory / MANIFEST).exists() and (directory / "config.json").exists():
        return load_specforge(directory, target)
    info, cfg, state, have = read_head_checkpoint(directory, Eagle3Head.kind, target, verify)
    layers = tuple(info.get("layers", ()))
    _check_fits(cfg, int(info.get("target_vocab", -1)), layers, target, directory)
    head = Eagle3Head(cfg, target.vocab_size, layers)
    _check_vocab(state, target.vocab_size, directory / WEIGHTS)
    load_into(head, state, source=str(directory))
    head.target_sha256 = have
    return head.to(target.device).eval()


def load_specforge(directory, target) -> Eagle3Head:
    """An EAGLE-3 head from SpecForge's layout alone (config.json + model.safetensors)."""
    directory = check_folder(directory)
    try:
        sf = json.loads((directory / "config.json").read_text())
        if not isinstance(sf, dict):
            raise CheckpointError(f"{directory / 'config.json'} holds {type(sf).__name__}, not a config "
                                  "(a JSON object with SpecForge's fields)")
        if "LlamaForCausalLMEagle3" not in sf.get("architectures", []):
            raise CheckpointError(f"{directory / 'config.json'} is not an EAGLE-3 head "
                                  f"(architectures {sf.get('architectures')})")
        cfg = ModelConfig(vocab_size=sf["draft_vocab_size"], dim=sf["hidden_size"], n_layers=1,
                          n_heads=sf["num_attention_heads"], ffn_dim=sf["intermediate_size"],
                          max_seq_len=sf.get("max_position_embeddings", target.max_seq_len),
                          rope_theta=sf.get("rope_theta", 10000.0), norm_eps=sf.get("rms_norm_eps", 1e-5))
        target_vocab = sf["vocab_size"]
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(f"{directory / 'config.json'}: not a readable EAGLE-3 config ({e})") from None
    if sf.get("num_key_value_heads", cfg.n_heads) != cfg.n_heads:
        raise CheckpointError(f"{directory}: grouped-query attention is not supported by minispec's head")
    layers = tuple(sf.get("eagle_aux_hidden_state_layer_ids") or feature_layers_for(target.num_layers))
    _check_fits(cfg, target_vocab, layers, target, directory)
    state = load_state_dict(directory / WEIGHTS)
    state.pop("embed_tokens.weight", None)            # optional in the layout; the target's is used
    _check_vocab(state, target_vocab, directory / WEIGHTS)
    state["t2d"] = state["t2d"].bool()                # some writers store it as integers
    head = Eagle3Head(cfg, target_vocab, layers)
    load_into(head, state, source=str(directory))
    return head.to(target.device).eval()


def _check_vocab(state: dict, target_vocab: int, where) -> None:
    """The file's d2t / t2d: present, and a one-to-one map into the target's vocabulary."""
    missing = [k for k in ("d2t", "t2d") if k not in state]
    if missing:
        raise CheckpointError(f"{where} has no {' or '.join(missing)}: not an EAGLE-3 head with a draft vocabulary")
    try:
        check_vocab_map(state["d2t"], state["t2d"], target_vocab, str(where))
    except ValueError as e:
        raise CheckpointError(str(e)) from None
