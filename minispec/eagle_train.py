"""Chapter 2: training an EAGLE head by self-distillation, and what every head's training shares.

EAGLE-1's objective: SmoothL1(f^_{t+1}, f_{t+1}) + 0.1 * soft cross-entropy against the target's
distribution at the predicted feature, with uniform noise on the input features. The data are
the target's features on corpus windows or on its own continuations (minispec.distill); the
loop, its schedule and its resumable checkpoints are minispec.train's. EAGLE-3's training
(minispec.eagle3_train) reuses the set-up, warm restarts and the manifest's record from here.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import MANIFEST, load_pretrained, read_manifest, save_pretrained, weights_fingerprint
from .data import DATA_DIR, DOMAINS, load_tokens
from .distill import MixedDistillation, SelfDistillation, validation_batches
from .eagle import Eagle1Head, load_eagle1
from .sampling import SamplingParams
from .train import TrainConfig, fit, soft_cross_entropy


def eagle1_loss(head: Eagle1Head, target, ids, feature, feature_loss: bool = True,
                noise: float = 0.1, ce_weight: float = 0.1, generator=None):
    """ids (B, T), feature (B, T, D): a window and the target's features on it.
    Returns (loss, parts): parts has the feature loss, the cross-entropy and top-1 agreement.
    generator: draws the noise (so a batch's noise depends only on its step)."""
    s = 1 if head.token_shift else 0
    f_in, f_next = feature[:, :-1], feature[:, 1:]                      # f_t -> f_{t+1}
    if head.training and noise:
        u = torch.rand(f_in.shape, generator=generator, device=f_in.device)
        f_in = f_in + (u * 2 - 1) * noise                                # U(-noise, noise)
    emb = target.embed_tokens(ids[:, s:ids.shape[1] - 1 + s])           # x_{t+1} (shift) or x_t
    pred = head(emb, f_in)                                               # (B, T-1, D)
    logits = target.lm_head(pred).float()
    with torch.no_grad():
        target_logits = target.lm_head(f_next).float()
        p = torch.softmax(target_logits, -1)
    ce = soft_cross_entropy(logits, p)
    reg = F.smooth_l1_loss(pred, f_next)
    loss = ce_weight * ce + (reg if feature_loss else 0.0)
    top1 = (logits.argmax(-1) == target_logits.argmax(-1)).float().mean()
    return loss, {"feature": reg.item(), "ce": ce.item(), "top1": top1.item()}


@torch.no_grad()
def evaluate_eagle1(head: Eagle1Head, target, val: dict) -> dict[str, dict[str, float]]:
    """Per domain: feature loss, cross-entropy and top-1 agreement with the target's argmax
    (the greedy acceptance of a first draft) on fixed validation windows."""
    was = head.training
    head.eval()
    out = {}
    for d, (ids, feature) in val.items():
        _, parts = eagle1_loss(head, target, ids, feature)
        out[d] = {k: round(v, 4) for k, v in parts.items()}
    head.train(was)
    return out


def head_training_setup(kind: str, target=None, run_dir=None, out_dir=None, tokens=None, val_tokens=None):
    """What every head's training starts from: the target (default: the shipped one), frozen;
    the run folder (default runs/KIND) and the shipped folder (default data/KIND); the corpus's
    training and validation tokens unless given."""
    if target is None:
        target = load_pretrained(DATA_DIR / "target")
    for p in target.parameters():
        p.requires_grad_(False)
    target.eval()
    return (target, Path(run_dir or Path("runs") / kind), Path(out_dir or DATA_DIR / kind),
            tokens or {d: load_tokens(d, "train") for d in DOMAINS},
            val_tokens or {d: load_tokens(d, "val") for d in DOMAINS})


def check_regen_source(source: str, regen_temperature) -> None:
    """A regeneration temperature is a valid temperature, and only given with regenerated data."""
    SamplingParams(temperature=regen_temperature)
    if source == "corpus" and regen_temperature != 1:
        raise ValueError("a regeneration temperature applies to the target's own continuations "
                         "(source 'regenerated' or 'mixed'), not to corpus windows")


def warm_start(init, target, load):
    """Where a warm restart begins: the trained head in folder `init`, loaded by `load` (which
    refuses a head of another target), in training mode, and what the new run's manifest records
    of it: its folder, the sha256 of its tensors (as `target_sha256` names a target), and the
    earlier run's command, tokens, time (added to the new run's, so that the manifest counts all
    the data the head has seen), validation history and its own `init` (so that a chain of
    restarts keeps every run). A folder without minispec's manifest (a head in SpecForge's layout
    alone) records no earlier run. (None, None) when init is None."""
    if init is None:
        return None, None
    head = load(init, target)
    earlier = read_manifest(init).get("training", {}) if (Path(init) / MANIFEST).exists() else {}
    return head.train(), {"from": str(init), "sha256": weights_fingerprint(head),
                          **{k: earlier.get(k) for k in ("command", "tokens_seen", "train_time_s", "history", "init")}}


def run_totals(init_info, train_time_s: float, tokens_seen: int) -> dict:
    """What a head's manifest records of its training in all: this run's time and tokens plus
    those of the run a warm restart began from (time rounded to 0.1 s), and that run's record."""
    earlier = init_info or {}
    return {"train_time_s": round(train_time_s + (earlier.get("train_time_s") or 0), 1),
            "tokens_seen": tokens_seen + (earlier.get("tokens_seen") or 0), "init": init_info}


def training_record(kind: str, command: str, cfg: TrainConfig, data: dict, init_info, done: dict,
                    target, **extra) -> dict:
    """What a head's manifest records of its training: the command, the recipe, `extra` (the
    kind's own settings), the data (with its number of distinct tokens), the totals over warm
    restarts, where it ran and the validation history."""
    n = data.get("num_batches")
    distinct = min(n or cfg.steps, cfg.steps) * cfg.batch_size * cfg.seq_len
    return {"command": command or f"python -m minispec train {kind}", "config": asdict(cfg), **extra,
            "data": {**data, "distinct_tokens": distinct},
            **run_totals(init_info, done["train_time_s"], cfg.steps * cfg.batch_size * cfg.seq_len),
            "device": str(target.device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "history": done["history"]}


def recipe(defaults: dict, steps: int | None, cfg: TrainConfig | None, seed: int | None) -> TrainConfig:
    """The training recipe: `cfg` if given, else the kind's defaults (with `steps` if given);
    a new `seed` (the data stream's and the run's) where given."""
    if cfg is None:
        cfg = TrainConfig(**{**defaults, **({"steps": steps} if steps else {})})
    return cfg if seed is None else replace(cfg, seed=seed)


EAGLE1_TRAIN = dict(steps=4000, lr=3e-3, min_lr=3e-4, warmup=100, weight_decay=0.0,
                    grad_clip=0.5, eval_every=250, eval_windows=16)


def eagle1_data(target, tokens, cfg: TrainConfig, source: str, num_batches, cache_dir, regen_temperature,
                progress: bool = True):
    """The batches: corpus windows, the target's continuations ("regenerated") or both in turns
    ("mixed"), precomputed into cache_dir where given."""
    make = lambda src, n: SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, seed=cfg.seed, source=src,
                                           num_batches=n, cache_dir=cache_dir, temperature=regen_temperature)
    if source == "mixed":
        half = None if num_batches is None else (num_batches + 1) // 2
        data = MixedDistillation(make("corpus", half), make("regenerated", half))
    else:
        data = make(source, num_batches)
    return precompute(data, cfg, num_batches, cache_dir, progress)


def precompute(data, cfg: TrainConfig, num_batches, cache_dir, progress: bool):
    """Compute the batches a run will see into cache_dir ahead of training, where given."""
    if cache_dir is not None:
        data.precompute(range(min(num_batches or cfg.steps, cfg.steps)), progress=progress)
    return data


def train_eagle1(target=None, out_dir=None, run_dir=None, steps: int | None = None,
                 token_shift: bool = True, feature_loss: bool = True, cache_dir=None,
                 source: str = "corpus", num_batches: int | None = None, progress: bool = True,
                 stop_after: int | None = None, on_step=None,
                 tokens=None, val_tokens=None, command: str = "", cfg=None,
                 init=None, seed: int | None = None, regen_temperature: float = 1.0) -> Eagle1Head:
    """Train an EAGLE-1 head on the target's features (self-distillation) over corpus windows,
    the target's own continuations (source="regenerated", sampled at regen_temperature; 0: its
    greedy ones, the text that greedy decoding drafts for) or both in turns ("mixed"), from
    num_batches distinct batches (None: a new one every step); resumable from run_dir/state.pt;
    write the shipped folder out_dir (default data/eagle1). token_shift=False and
    feature_loss=False train the two ablations.

    init: a trained head's folder to start from (a warm restart: the schedule runs again); with a
    new `seed` (the data stream's and the run's) it sees new data."""
    cfg = recipe(EAGLE1_TRAIN, steps, cfg, seed)
    check_regen_source(source, regen_temperature)            # before the target and the corpus load
    target, run_dir, out_dir, tokens, val_tokens = head_training_setup("eagle1", target, run_dir, out_dir,
                                                                       tokens, val_tokens)
    start, init_info = warm_start(init, target, load_eagle1)        # before the data: a refusal is quick
    if start is not None and start.token_shift != token_shift:
        raise ValueError(f"the head in {init} was trained with token_shift={start.token_shift}; "
                         f"asked for token_shift={token_shift}")
    data = eagle1_data(target, tokens, cfg, source, num_batches, cache_dir, regen_temperature, progress)
    val = {d: (b.ids, b.feature(target))
           for d, b in validation_batches(target, val_tokens, cfg.seq_len, cfg.eval_windows).items()}
    torch.manual_seed(cfg.seed)
    head = start if start is not None else Eagle1Head.for_target(target, token_shift).to(target.device)

    def loss_fn(step):
        b = data.batch(step)
        g = torch.Generator(device=target.device).manual_seed(cfg.seed * 1_000_003 + step)
        return eagle1_loss(head, target, b.ids, b.feature(target), feature_loss, generator=g)[0]

    target_sha256 = weights_fingerprint(target)
    settings = {"model_config": head.config.to_dict(), "token_shift": token_shift,
                "feature_loss": feature_loss, "target_sha256": target_sha256,
                "source": source, "num_batches": num_batches, "init": init_info,
                **({"regen_temperature": regen_temperature} if regen_temperature != 1 else {})}  # old runs resume
    done = fit(head, loss_fn, cfg, run_dir / "state.pt", settings,
               evaluate=lambda: evaluate_eagle1(head, target, val), desc="train eagle1",
               progress=progress, stop_after=stop_after, on_step=on_step)
    if done is None:
        return head
    metrics = evaluate_eagle1(head, target, val)
    regen = source != "corpus"
    data_info = {"source": source, "num_batches": num_batches, "prompt_len": data.prompt_len if regen else None,
                 "regen_temperature": regen_temperature if regen else None}
    save_pretrained(head, out_dir, name="eagle1", token_shift=token_shift, target_sha256=target_sha256,
                    tokenizer_sha256=getattr(target, "tokenizer_sha256", None),
                    training=training_record("eagle1", command, cfg, data_info, init_info, done, target,
                                             feature_loss=feature_loss), val=metrics)
    print(f"eagle1 head: {head.num_params():,} parameters, validation {metrics}, "
          f"{done['train_time_s'] / 60:.1f} min -> {out_dir}")
    return head
