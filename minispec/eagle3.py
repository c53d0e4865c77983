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

Drafting uses EAGLE-2's dynamic tree (minispec.eagle2), unchanged: only where a node's logits
and the head's input features come from differ.
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import (CheckpointError, MANIFEST, WEIGHTS, atomic_write, check_folder, load_into,
                         load_state_dict, read_checkpoint, save_pretrained, weights_fingerprint)
from .eagle import DraftHead, check_regen_source, head_training_setup, run_totals, warm_start
from .eagle2 import Eagle2Drafter
from .model import MLP, Attention, ModelConfig, RMSNorm, lean_linear, rope_and_mask, rotary_tables
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
    token_shift = True      # the head always reads x_{t+1} beside the feature of position t

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
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
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

    def logits(self, o) -> torch.Tensor:
        """o (..., D) -> (..., N) logits over the draft vocabulary."""
        return lean_linear(self.norm(o), self.lm_head).float()

    def to_target(self, logits) -> torch.Tensor:
        """(..., N) draft-vocabulary logits -> (..., V) target-vocabulary logits, -inf at every
        target id outside the draft vocabulary (target id = draft id + d2t)."""
        out = logits.new_full((*logits.shape[:-1], self.target_vocab), float("-inf"))
        out[..., self.draft_ids] = logits
        return out


# ----------------------------------------------------------------------------- training
class GrowingCache:
    """Keys and values kept by concatenation rather than written in place, so that gradients
    flow through every step's keys (training-time test). Same interface as KVCache.update."""

    def __init__(self):
        self.k = self.v = None
        self.length = 0

    def update(self, layer: int, k, v):
        self.k = k if self.k is None else torch.cat([self.k, k], dim=2)     # (B, H, P+T, hd)
        self.v = v if self.v is None else torch.cat([self.v, v], dim=2)
        return self.k, self.v


def ttt_mask(T: int, step: int, device=None) -> torch.Tensor:
    """(T, (step + 1) T) additive mask of training-time-test step `step` (0 = real features).
    Row t is the draft chain that starts after real position t, at its step-th draft: it sees
    the real prefix causally (block 0, columns 0..t) and, in every later block s = 1..step, only
    column t: its own chain's earlier steps (the diagonal). Nothing of other chains."""
    causal = torch.full((T, T), float("-inf"), device=device).triu(1)
    diag = torch.full((T, T), float("-inf"), device=device).fill_diagonal_(0.0)
    return torch.cat([causal] + [diag] * step, dim=1)


def ttt_forward(head: Eagle3Head, target, ids, hidden: dict, ttt_steps: int = 7) -> list[torch.Tensor]:
    """The head unrolled over a window: ids (B, T), hidden[layer] (B, T, D) the target's hidden
    states at the head's layers. Row t is a draft chain started after real position t (t = 0 ..
    T-2): step j reads x_{t+1+j} with the head's own output of step j - 1 (step 0: the fused
    feature g_t), sits at position t + j, and predicts the token after x_{t+1+j}. Exactly what
    drafting computes (tests/test_eagle3.py checks it), for all chains at once.
    Returns the logits (B, T-1, N) of every step; rows past the window's end are padding."""
    B, T = ids.shape
    n = T - 1
    h = head.fuse({i: hidden[i] for i in head.layers})[:, :n]             # g_t         (B, n, D)
    ids = torch.cat([ids, ids.new_zeros(B, ttt_steps)], dim=1)            # padding past the end
    cache, out = GrowingCache(), []
    for j in range(ttt_steps):
        emb = target.embed_tokens(ids[:, 1 + j:1 + j + n])                # x_{t+1+j}   (B, n, D)
        pos = torch.arange(n, device=ids.device) + j
        h = head(emb, h, cache, position_ids=pos, attn_mask=ttt_mask(n, j, ids.device))   # (B, n, D)
        out.append(head.logits(h))                                         # (B, n, N)
    return out


def eagle3_loss(head: Eagle3Head, target, ids, hidden: dict, ttt_steps: int = 7, decay: float = 0.8):
    """ids (B, T) a window, hidden[layer] (B, T, D) the target's hidden states on it (the head's
    layers and the final feature). Step j's logits at row t are compared with the target's
    distribution at position t + 1 + j. Loss: sum_j decay^j * soft cross-entropy against that
    distribution restricted to the draft vocabulary (renormalised), over the rows where the
    target's top choice is in it; no feature loss. Returns (loss, parts) with each step's
    cross-entropy and top-1 agreement (a miss wherever the target's choice lies outside the
    draft vocabulary)."""
    with torch.no_grad():
        t_logits = target.lm_head(hidden[target.num_layers]).float()       # (B, T, V)
        in_vocab = head.t2d[t_logits.argmax(-1)]                           # (B, T)
        p = torch.softmax(t_logits[..., head.t2d], -1)                     # (B, T, N)
        best = p.argmax(-1)                                                # (B, T) draft ids
    loss, parts = 0.0, {}
    for j, logits in enumerate(ttt_forward(head, target, ids, hidden, ttt_steps)):
        m = ids.shape[1] - 1 - j                                           # rows with a target
        lp = torch.log_softmax(logits[:, :m], -1)                          # (B, m, N)
        w = in_vocab[:, 1 + j:1 + j + m].float()                           # (B, m)
        ce = -((p[:, 1 + j:1 + j + m] * lp).sum(-1) * w).sum() / w.sum().clamp_min(1.0)
        loss = loss + decay ** j * ce
        agree = (lp.argmax(-1) == best[:, 1 + j:1 + j + m]) & in_vocab[:, 1 + j:1 + j + m]
        parts[f"ce{j}"] = ce.item()
        parts[f"top1_{j}"] = agree.float().mean().item()
    return loss, parts


@torch.no_grad()
def evaluate_head(head: Eagle3Head, target, val: dict, ttt_steps: int = 7) -> dict:
    """Per domain: each unrolled step's cross-entropy and top-1 agreement on fixed windows."""
    was = head.training
    head.eval()
    out = {d: {k: round(v, 4) for k, v in eagle3_loss(head, target, b.ids, b.hidden, ttt_steps)[1].items()}
           for d, b in val.items()}
    head.train(was)
    return out


def token_counts(tokens, vocab_size: int) -> np.ndarray:
    """(vocab_size,) how often each id occurs in an iterable of id arrays."""
    return sum(np.bincount(np.asarray(t).ravel(), minlength=vocab_size) for t in tokens)


def draft_vocab(counts, size: int) -> torch.Tensor:
    """The `size` most frequent ids (ties: smaller id first), in increasing order."""
    counts = np.asarray(counts)
    if not 1 <= size <= len(counts):
        raise ValueError(f"draft vocabulary size must lie in [1, {len(counts)}], got {size}")
    order = np.lexsort((np.arange(len(counts)), -counts))[:size]
    return torch.as_tensor(np.sort(order))


EAGLE3_TRAIN = dict(steps=2000, lr=3e-3, min_lr=3e-4, warmup=100, weight_decay=0.0,
                    grad_clip=0.5, eval_every=250, eval_windows=8)
DRAFT_VOCAB = 2048      # half the target's 4096 (chapter 5 measures the trade-off)
VOCAB_BATCHES = 200     # training batches counted to choose the draft vocabulary


def train_eagle3(target=None, out_dir=None, run_dir=None, steps: int | None = None, ttt_steps: int = 7,
                 draft_vocab_size: int = DRAFT_VOCAB, vocab_source: str = "data",
                 source: str = "regenerated", num_batches: int | None = None, cache_dir=None,
                 progress: bool = True, stop_after: int | None = None, on_step=None,
                 tokens=None, val_tokens=None, command: str = "", cfg=None,
                 init=None, seed: int | None = None, regen_temperature: float = 1.0) -> Eagle3Head:
    """Train an EAGLE-3 head with the training-time test unrolled ttt_steps steps, on the target's
    own continuations (source="regenerated", default; sampled at regen_temperature, 0: greedy)
    or corpus windows, resumable from run_dir/state.pt; write the shipped folder out_dir (default
    data/eagle3) in SpecForge's layout beside minispec's manifest. The draft vocabulary: the
    draft_vocab_size ids most frequent in the training data (vocab_source="data": with the
    default source, the target's own continuations, their prompts left out) or in the whole
    corpus ("corpus").

    init: a trained head's folder to start from (a warm restart: the recipe's schedule runs
    again, the head keeps its draft vocabulary); with a new `seed` (the data stream's and the
    run's) it sees new data, so that training continues on more of it."""
    from .distill import SelfDistillation, validation_batches
    from .train import TrainConfig, fit
    if vocab_source not in ("data", "corpus"):
        raise ValueError(f"vocab_source must be 'data' or 'corpus', got {vocab_source!r}")
    if isinstance(ttt_steps, bool) or not isinstance(ttt_steps, int) or ttt_steps < 1:
        raise ValueError(f"ttt_steps must be an integer >= 1, got {ttt_steps!r}")
    if cfg is None:
        cfg = TrainConfig(**{**EAGLE3_TRAIN, **({"steps": steps} if steps else {})})
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    check_regen_source(source, regen_temperature)            # before the target and the corpus load
    target, run_dir, out_dir, tokens, val_tokens = head_training_setup("eagle3", target, run_dir, out_dir,
                                                                       tokens, val_tokens)
    layers = feature_layers_for(target.num_layers)
    start, init_info = warm_start(init, target, load_eagle3)        # before the data: a refusal is quick
    if start is not None and (start.config.vocab_size != draft_vocab_size or tuple(start.layers) != tuple(layers)):
        raise ValueError(f"the head in {init} has a draft vocabulary of {start.config.vocab_size} and "
                         f"feature layers {tuple(start.layers)}; asked for {draft_vocab_size} and {tuple(layers)}")
    data = SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, layers=layers, seed=cfg.seed,
                            source=source, num_batches=num_batches, cache_dir=cache_dir,
                            temperature=regen_temperature)
    if cache_dir is not None:
        data.precompute(range(min(num_batches or cfg.steps, cfg.steps)), progress=progress)
    if start is not None:
        counts = None                                                     # its vocabulary stays
    elif vocab_source == "data":
        skip = data.prompt_len if source == "regenerated" else 0          # the target's own tokens
        counts = token_counts((data.batch(s).ids[:, skip:].cpu().numpy()
                               for s in range(min(VOCAB_BATCHES, num_batches or VOCAB_BATCHES))),
                              target.vocab_size)
    else:
        counts = token_counts(tokens.values(), target.vocab_size)
    val = validation_batches(target, val_tokens, cfg.seq_len, cfg.eval_windows, layers)
    torch.manual_seed(cfg.seed)
    head = start if start is not None else \
        Eagle3Head.for_target(target, draft_vocab(counts, draft_vocab_size), layers).to(target.device)

    def loss_fn(step):
        b = data.batch(step)
        return eagle3_loss(head, target, b.ids, b.hidden, ttt_steps)[0]

    target_sha256 = weights_fingerprint(target)
    settings = {"model_config": head.config.to_dict(), "layers": list(layers), "ttt_steps": ttt_steps,
                "draft_vocab_size": draft_vocab_size, "vocab_source": vocab_source,
                "target_sha256": target_sha256, "source": source, "num_batches": num_batches,
                "init": init_info,
                **({"regen_temperature": regen_temperature} if regen_temperature != 1 else {})}  # old runs resume
    done = fit(head, loss_fn, cfg, run_dir / "state.pt", settings,
               evaluate=lambda: evaluate_head(head, target, val, ttt_steps), desc="train eagle3",
               progress=progress, stop_after=stop_after, on_step=on_step)
    if done is None:
        return head
    metrics = evaluate_head(head, target, val, ttt_steps)
    save_eagle3(head, out_dir, target_sha256=target_sha256,
                tokenizer_sha256=getattr(target, "tokenizer_sha256", None),
                training={"command": command or "python -m minispec train eagle3",
                          "config": asdict(cfg), "ttt_steps": ttt_steps, "vocab_source": vocab_source,
                          "data": {"source": source, "num_batches": num_batches,
                                   "regen_temperature": regen_temperature if source != "corpus" else None,
                                   "distinct_tokens": min(num_batches or cfg.steps, cfg.steps)
                                   * cfg.batch_size * cfg.seq_len},
                          **run_totals(init_info, done["train_time_s"], cfg.steps * cfg.batch_size * cfg.seq_len),
                          "device": str(target.device), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "history": done["history"]},
                val=metrics)
    print(f"eagle3 head: {head.num_params():,} parameters, {done['train_time_s'] / 60:.1f} min -> {out_dir}")
    return head


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


def vocab_study(target, tokenizer, head: Eagle3Head, sizes, rankings: dict, limit: int | None = 10,
                max_new_tokens: int = 128, repeats: int = 1, progress: bool = True, val_tokens=None) -> dict:
    """The draft-vocabulary trade-off: the head restricted to its `size` most frequent tokens by
    each ranking (name -> (V,) counts; a ranking picks among the head's own tokens), benchmarked
    as method eagle3 in one run against ar (tau and speed), plus the share of the target's greedy
    choices on the validation text (default: the corpus's; val_tokens: domain -> ids) that each
    restricted vocabulary contains (its coverage)."""
    from .bench import run_bench
    from .data import DOMAINS, load_tokens
    from .distill import validation_batches
    own = head.draft_ids.cpu().numpy()
    heads, coverage = {"eagle3": head}, {}
    val = validation_batches(target, val_tokens or {d: load_tokens(d, "val") for d in DOMAINS}, 256, 8)
    with torch.no_grad():
        best = torch.cat([target.lm_head(b.feature(target)).argmax(-1).flatten() for b in val.values()])
    for name, counts in rankings.items():
        order = own[np.lexsort((own, -np.asarray(counts)[own]))]           # the head's tokens, by count
        for n in sizes:
            if n >= len(own):                                                # the head itself
                continue
            label = f"eagle3@{name}{n}"
            small = restrict_vocab(head, order[:n])
            heads[label] = small
            coverage[label] = round(float(small.t2d[best].float().mean()), 4)
    summary = run_bench(target, tokenizer, list(heads), drafts=heads, limit=limit, max_new_tokens=max_new_tokens,
                        repeats=repeats, progress=progress)
    summary["coverage"] = {"eagle3": round(float(head.t2d[best].float().mean()), 4), **coverage}
    summary["sizes"], summary["rankings"] = list(sizes), list(rankings)
    return summary


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
    info, cfg, state = read_checkpoint(directory, Eagle3Head.kind, verify)
    want, have = info.get("target_sha256"), weights_fingerprint(target)
    if want != have:
        raise CheckpointError(
            f"the head in {directory} was trained on the target whose weights have sha256 "
            f"{str(want)[:12]}..., this target's is {have[:12]}...: train a head for it "
            "(python -m minispec train eagle3)")
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


# ----------------------------------------------------------------------------- drafting
class Eagle3Drafter(Eagle2Drafter):
    """EAGLE-2's dynamic tree with an EAGLE-3 head (method "eagle3"). The head reads the fused
    low, middle and high features of the target, and its own LM head ranks a node's children
    over the draft vocabulary, mapped back to target ids (-inf elsewhere), so verification and
    the drafted q live in the target's vocabulary as for every other method."""

    def __init__(self, head: Eagle3Head, target, max_len: int, total_tokens=None, depth=None, top_k=None):
        super().__init__(head, target, max_len, total_tokens, depth, top_k)
        self.feature_layers = head.layers

    def observe(self, tokens: list[int], hidden: dict[int, torch.Tensor]) -> None:
        g = self.head.fuse(hidden)                                          # (m, D)
        self.pending = g if self.pending is None else torch.cat([self.pending, g])

    def node_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(n, D) head outputs at n nodes -> (n, V) logits in target ids (NaN or infinity from a
        broken head refused by name)."""
        return self.head.to_target(check_finite(self.head.logits(feats), "the EAGLE-3 head"))
