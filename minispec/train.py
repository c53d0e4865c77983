"""Training the project's models on the three-domain corpus, resumable and reproducible.

    python -m minispec train target      # ~30 min on a 2-core CPU, writes data/target/
    python -m minispec train draft       # the small draft LM of chapter 1, writes data/draft/

Batch at step s depends only on (seed, s), and the training state (weights, optimizer, step)
is checkpointed atomically every `ckpt_every` steps to runs/<name>/state.pt, so an
interrupted run resumes where it stopped and ends with the same weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .checkpoint import atomic_write, save_pretrained, sha256_file
from .data import DATA_DIR, DOMAINS, TOKENIZER_PATH, load_tokens
from .model import ModelConfig, Transformer


@dataclass
class TrainConfig:
    steps: int = 1600
    batch_size: int = 8
    seq_len: int = 256
    lr: float = 1.5e-3
    min_lr: float = 1.5e-4
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    ckpt_every: int = 50
    eval_windows: int = 24   # validation windows of seq_len per domain
    eval_every: int = 250    # validation loss per domain every this many steps (0 = only at the end)
    distill: bool = False    # learn the target's next-token distributions instead of the data's


PRESETS = {
    # deep and narrow: a draft head of one layer costs a small fraction of a target step;
    # 6000 steps x 2048 tokens = 12.3M tokens (about 75 min on one CPU core)
    "target": (ModelConfig(dim=192, n_layers=8, n_heads=6, ffn_dim=512), TrainConfig(steps=6000)),
    # chapter 1's draft LM: same tokenizer and corpus, one layer, distilled from the target
    # (acceptance depends on how closely q matches p, not on how well q models the data)
    "draft": (ModelConfig(dim=192, n_layers=1, n_heads=6, ffn_dim=512),
              TrainConfig(steps=1500, distill=True)),
    # the yardstick for the target: the draft's shape trained on the data alone, as long as the
    # draft; its losses go into the target's manifest, its weights are not shipped
    "baseline": (ModelConfig(dim=192, n_layers=1, n_heads=6, ffn_dim=512), TrainConfig(steps=1500)),
}


def get_batch(tokens: dict[str, np.ndarray], step: int, cfg: TrainConfig):
    """(B, T+1) windows; each row from a domain drawn uniformly. Depends only on (seed, step)."""
    rng = np.random.default_rng([cfg.seed, step])
    names = list(tokens)  # the corpus: DOMAINS, in order
    rows = []
    for _ in range(cfg.batch_size):
        ids = tokens[names[rng.integers(len(names))]]
        s = rng.integers(len(ids) - cfg.seq_len - 1)
        rows.append(ids[s:s + cfg.seq_len + 1])
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def soft_cross_entropy(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """-sum_x p(x) log softmax(logits)_x, averaged over positions: cross-entropy against a
    teacher's distribution p (distillation, and the draft heads)."""
    return -(p * torch.log_softmax(logits, dim=-1)).sum(-1).mean()


def lm_loss(model: Transformer, batch: torch.Tensor, teacher: Transformer | None = None) -> torch.Tensor:
    """Next-token cross-entropy against the data, or against the teacher's distributions."""
    logits = model(batch[:, :-1]).logits  # (B, T, V)
    if teacher is None:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
    with torch.no_grad():
        p = torch.softmax(teacher(batch[:, :-1]).logits, dim=-1)       # (B, T, V)
    return soft_cross_entropy(logits, p)


@torch.no_grad()
def evaluate(model: Transformer, cfg: TrainConfig, tokens: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Mean next-token loss per domain over evenly spaced windows (deterministic)."""
    tokens = tokens or {d: load_tokens(d, "val") for d in DOMAINS}
    was_training = model.training
    model.eval()
    out = {}
    for d, ids in tokens.items():
        starts = np.linspace(0, len(ids) - cfg.seq_len - 2, cfg.eval_windows).astype(np.int64)
        batch = torch.from_numpy(np.stack([ids[s:s + cfg.seq_len + 1] for s in starts]).astype(np.int64))
        out[d] = round(float(lm_loss(model, batch.to(model.device))), 4)
    model.train(was_training)
    return out


def resume(model, opt, state_path: Path, settings: dict, desc: str) -> tuple[int, float, list]:
    """Load the model and optimizer from a checkpoint of the training state, if one exists (it
    must have been written with the same settings). Returns (step, elapsed seconds, history)."""
    if not state_path.exists():
        return 0, 0.0, []
    state = torch.load(state_path, map_location=next(model.parameters()).device, weights_only=True)
    if state["settings"] != settings:
        raise ValueError(f"{state_path} was written with other settings; remove it to start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    print(f"resuming {desc} from step {state['step']}")
    return state["step"], state["elapsed_s"], state["history"]


def fit(model: torch.nn.Module, loss_fn, cfg: TrainConfig, state_path, settings: dict, *,
        evaluate=None, desc: str = "train", progress: bool = True, stop_after: int | None = None,
        on_step=None) -> dict | None:
    """The training loop every model kind shares: AdamW (no decay on gains), warmup + cosine
    learning rate, gradient clipping, a validation curve, and an atomic checkpoint of the whole
    training state every cfg.ckpt_every steps, from which a rerun resumes.

    loss_fn(step) -> scalar loss of the batch for `step` (batches depend only on seed and step).
    settings: what the run was started with; resuming with other settings is an error.
    evaluate() -> {name: float}, every cfg.eval_every steps, into the history.
    Returns {"history", "train_time_s"} when finished, None when stopped by stop_after.
    """
    from tqdm.auto import tqdm
    state_path = Path(state_path)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in trainable if p.dim() >= 2], "weight_decay": cfg.weight_decay},
                             {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95))
    settings = {**settings, "train_config": asdict(cfg)}
    step, elapsed, history = resume(model, opt, state_path, settings, desc)
    model.train()
    bar = tqdm(total=cfg.steps, initial=step, desc=desc, disable=not progress)
    t0 = time.time() - elapsed
    recent = []  # training losses since the last validation
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        recent.append(loss.item())
        if on_step is not None:
            on_step(step, loss.item())
        if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0:
            history.append({"step": step, "tokens": step * cfg.batch_size * cfg.seq_len,
                            "train_loss": round(sum(recent) / len(recent), 4), "val_loss": evaluate()})
            model.train()
            recent = []
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                     "elapsed_s": time.time() - t0, "settings": settings, "history": history}
            atomic_write(state_path, lambda p: torch.save(state, p))
        if stop_after is not None and step >= stop_after:
            bar.close()
            return None
    bar.close()
    model.eval()
    return {"history": history, "train_time_s": round(time.time() - t0, 1)}


def train(name: str, model_cfg: ModelConfig, cfg: TrainConfig, run_dir=None, out_dir=None,
          device="cpu", progress: bool = True, command: str = "", tokens=None, val_tokens=None,
          stop_after: int | None = None, on_step=None, teacher: Transformer | None = None) -> Transformer:
    """Train a language model from scratch or resume from run_dir/state.pt; write the shipped
    folder out_dir (model.safetensors + manifest.json).

    tokens / val_tokens: domain -> token ids (default: the corpus built by `minispec data`).
    stop_after: return after this many steps without finishing (to test resuming).
    on_step: called as on_step(step, loss) after every step (e.g. to plot the loss).
    teacher: the model to distill from, when cfg.distill (default: the shipped target).
    """
    if cfg.distill and teacher is None:
        from .checkpoint import load_pretrained
        teacher = load_pretrained(DATA_DIR / "target", device)
    if teacher is not None:
        if not cfg.distill:
            raise ValueError("a teacher was given but the training config has distill=False")
        if teacher.vocab_size != model_cfg.vocab_size:
            raise ValueError(f"teacher vocabulary {teacher.vocab_size} != student's {model_cfg.vocab_size}")
        teacher.eval()
    run_dir = Path(run_dir or Path("runs") / name)
    out_dir = Path(out_dir or DATA_DIR / name)
    torch.manual_seed(cfg.seed)
    model = Transformer(model_cfg).to(device)
    tokens = tokens or {d: load_tokens(d, "train") for d in DOMAINS}
    val_tokens = val_tokens or {d: load_tokens(d, "val") for d in DOMAINS}
    done = fit(model, lambda step: lm_loss(model, get_batch(tokens, step, cfg).to(device), teacher),
               cfg, run_dir / "state.pt", {"model_config": model_cfg.to_dict()},
               evaluate=lambda: evaluate(model, cfg, val_tokens), desc=f"train {name}",
               progress=progress, stop_after=stop_after, on_step=on_step)
    if done is None:
        return model
    val = evaluate(model, cfg, val_tokens)
    save_pretrained(model, out_dir, name=name, tokenizer_sha256=sha256_file(TOKENIZER_PATH),
                    training={"command": command or f"python -m minispec train {name}",
                              "config": asdict(cfg), "train_time_s": done["train_time_s"],
                              "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
                              "device": str(device), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "history": done["history"]},
                    val_loss=val)
    print(f"{name}: {model.num_params():,} parameters, val loss {val}, "
          f"{done['train_time_s'] / 60:.1f} min -> {out_dir}")
    return model


def preset(name: str, steps: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    if name not in PRESETS:
        raise ValueError(f"unknown model {name!r}; presets: {sorted(PRESETS)}")
    model_cfg, cfg = PRESETS[name]
    return model_cfg, (replace(cfg, steps=steps) if steps else cfg)


def record_one_layer_losses(target_dir=None, draft_dir=None, baseline_dir=None) -> dict | None:
    """Write into the target's manifest the validation losses of the two one-layer models it is
    measured against: the distilled draft and the same shape trained on the data alone (the
    `baseline` preset, same number of steps). Returns the entry, or None if one is missing."""
    import json
    from .checkpoint import MANIFEST, read_manifest
    target_dir = Path(target_dir or DATA_DIR / "target")
    draft_dir = Path(draft_dir or DATA_DIR / "draft")
    baseline_dir = Path(baseline_dir or Path("runs") / "baseline" / "model")
    try:
        draft, baseline = read_manifest(draft_dir), read_manifest(baseline_dir)
    except (ValueError, FileNotFoundError):
        return None
    info = read_manifest(target_dir)
    info["val_loss_one_layer"] = {
        "distilled_draft": draft["val_loss"], "data_only": baseline["val_loss"],
        "steps": baseline["training"]["config"]["steps"],
        "command": "python -m minispec train baseline  # not shipped: only its losses are kept"}
    atomic_write(target_dir / MANIFEST, lambda p: Path(p).write_text(json.dumps(info, indent=1) + "\n"))
    return info["val_loss_one_layer"]
