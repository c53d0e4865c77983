"""Chapter 5: training an EAGLE-3 head with the training-time test (TTT).

At inference the head is fed its own outputs o in place of the target's fused features g, which
training on real features never shows it. TTT unrolls the head `ttt_steps` steps over a window,
feeding o back in, each step predicting one token further, all chains at once under one mask
(ttt_mask), and trains every step against the target's distribution there (eagle3_loss: soft
cross-entropy only, weights 0.8^j). The head's draft vocabulary is the N tokens most frequent in
its training data (draft_vocab). Everything else (set-up, warm restarts, the loop and its
checkpoints, the manifest) is shared with EAGLE-1's training (minispec.eagle_train).
"""
from __future__ import annotations

import numpy as np
import torch

from .checkpoint import weights_fingerprint
from .distill import SelfDistillation, validation_batches
from .eagle3 import Eagle3Head, feature_layers_for, load_eagle3, save_eagle3
from .eagle_train import check_regen_source, head_training_setup, precompute, recipe, training_record, warm_start
from .train import TrainConfig, fit

TTT_STEPS = 7           # the reference's unrolled steps


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


def ttt_forward(head: Eagle3Head, target, ids, hidden: dict, ttt_steps: int = TTT_STEPS) -> list[torch.Tensor]:
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


def eagle3_loss(head: Eagle3Head, target, ids, hidden: dict, ttt_steps: int = TTT_STEPS, decay: float = 0.8):
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
def evaluate_eagle3(head: Eagle3Head, target, val: dict, ttt_steps: int = TTT_STEPS) -> dict:
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


def check_options(vocab_source: str, ttt_steps) -> None:
    if vocab_source not in ("data", "corpus"):
        raise ValueError(f"vocab_source must be 'data' or 'corpus', got {vocab_source!r}")
    if isinstance(ttt_steps, bool) or not isinstance(ttt_steps, int) or ttt_steps < 1:
        raise ValueError(f"ttt_steps must be an integer >= 1, got {ttt_steps!r}")


def vocab_counts(target, data, tokens, vocab_source: str, num_batches) -> np.ndarray:
    """How often each target id occurs where the draft vocabulary is chosen from: the first
    VOCAB_BATCHES training batches (vocab_source "data"; of regenerated batches, only the target's
    own tokens, not the prompts), or the whole corpus ("corpus")."""
    if vocab_source == "corpus":
        return token_counts(tokens.values(), target.vocab_size)
    skip = data.prompt_len if data.source == "regenerated" else 0
    return token_counts((data.batch(s).ids[:, skip:].cpu().numpy()
                         for s in range(min(VOCAB_BATCHES, num_batches or VOCAB_BATCHES))), target.vocab_size)


def train_eagle3(target=None, out_dir=None, run_dir=None, steps: int | None = None, ttt_steps: int = TTT_STEPS,
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
    check_options(vocab_source, ttt_steps)
    cfg = recipe(EAGLE3_TRAIN, steps, cfg, seed)
    check_regen_source(source, regen_temperature)            # before the target and the corpus load
    target, run_dir, out_dir, tokens, val_tokens = head_training_setup("eagle3", target, run_dir, out_dir,
                                                                       tokens, val_tokens)
    layers = feature_layers_for(target.num_layers)
    start, init_info = warm_start(init, target, load_eagle3)        # before the data: a refusal is quick
    if start is not None and (start.config.vocab_size != draft_vocab_size or tuple(start.layers) != tuple(layers)):
        raise ValueError(f"the head in {init} has a draft vocabulary of {start.config.vocab_size} and "
                         f"feature layers {tuple(start.layers)}; asked for {draft_vocab_size} and {tuple(layers)}")
    data = precompute(SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, layers=layers, seed=cfg.seed,
                                       source=source, num_batches=num_batches, cache_dir=cache_dir,
                                       temperature=regen_temperature), cfg, num_batches, cache_dir, progress)
    draft_ids = None if start is not None else \
        draft_vocab(vocab_counts(target, data, tokens, vocab_source, num_batches), draft_vocab_size)
    val = validation_batches(target, val_tokens, cfg.seq_len, cfg.eval_windows, layers)
    torch.manual_seed(cfg.seed)
    head = start if start is not None else Eagle3Head.for_target(target, draft_ids, layers).to(target.device)

    def loss_fn(step):
        b = data.batch(step)
        return eagle3_loss(head, target, b.ids, b.hidden, ttt_steps)[0]

    target_sha256 = weights_fingerprint(target)
    settings = {"model_config": head.config.to_dict(), "layers": list(layers), "ttt_steps": ttt_steps,
                "draft_vocab_size": draft_vocab_size, "vocab_source": vocab_source,
                "target_sha256": target_sha256, "source": source, "num_batches": num_batches, "init": init_info,
                **({"regen_temperature": regen_temperature} if regen_temperature != 1 else {})}  # old runs resume
    done = fit(head, loss_fn, cfg, run_dir / "state.pt", settings,
               evaluate=lambda: evaluate_eagle3(head, target, val, ttt_steps), desc="train eagle3",
               progress=progress, stop_after=stop_after, on_step=on_step)
    if done is None:
        return head
    metrics = evaluate_eagle3(head, target, val, ttt_steps)
    data_info = {"source": source, "num_batches": num_batches,
                 "regen_temperature": regen_temperature if source != "corpus" else None}
    save_eagle3(head, out_dir, target_sha256=target_sha256, tokenizer_sha256=getattr(target, "tokenizer_sha256", None),
                training=training_record("eagle3", command, cfg, data_info, init_info, done, target,
                                         ttt_steps=ttt_steps, vocab_source=vocab_source), val=metrics)
    print(f"eagle3 head: {head.num_params():,} parameters, {done['train_time_s'] / 60:.1f} min -> {out_dir}")
    return head
