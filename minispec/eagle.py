"""Chapters 2 and 3: EAGLE-1, drafting at the feature level, as a chain or a static tree.

The target's feature f_t (its last hidden state, the LM head's input) predicts token x_{t+1}.
Continuing the sequence of features is easier than continuing the tokens, provided the head is
told which token was actually sampled from each feature (the token shift):

    head input at position t:  fc(concat(embed(x_{t+1}), f_t))       2D -> D
    one decoder layer (no input norm)                                 -> f^_{t+1}
    the target's frozen LM head on f^_{t+1}                           -> q(x_{t+2})

The head reuses the target's embedding and LM head, so it owns only fc and one layer. It drafts
autoregressively: a drafted token and the feature predicted with it are the next input.
Training (self-distillation): SmoothL1(f^_{t+1}, f_{t+1}) + 0.1 * soft cross-entropy against the
target's distribution, with uniform noise on the input features.

Trees: `choices` lists the nodes as paths of sibling ranks ([0] = the root's best child, [0, 1]
= that child's second-best child, ...), as in the EAGLE reference's static trees; a chain of
gamma drafts is [[0], [0, 0], ...]. Greedy decoding takes ranks from the head's top-k; sampling
draws siblings without replacement and records the renormalised q each one was drawn from, which
the tree verifier needs to stay lossless.
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import (CheckpointError, MANIFEST, load_into, read_checkpoint, read_manifest, save_pretrained,
                         weights_fingerprint)
from .model import DecoderLayer, KVCache, ModelConfig, lean_linear, rope_and_mask, rotary_tables
from .sampling import SamplingParams, sample, warp
from .speculative import check_max_entropy, too_unsure
from .train import soft_cross_entropy
from .tree import DraftTree
from .validate import check_finite


class DraftHead(nn.Module):
    """What every EAGLE head has: an input projection `fc`, one decoder layer with a KV cache of
    its own (a draft tree's levels are cached in it), and a config shaped like the target's."""

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    def new_cache(self, max_len: int) -> KVCache:
        c = self.config
        return KVCache(1, c.n_heads, c.head_dim, max_len, 1, self.device, self.fc.weight.dtype)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Eagle1Head(DraftHead):
    """fc(concat(embedding, feature)) -> one decoder layer -> predicted next feature.
    Parameter names are those of EAGLE-1 checkpoints (fc, layers.0.*)."""
    kind = "eagle1"

    def __init__(self, cfg: ModelConfig, token_shift: bool = True):
        super().__init__()
        if cfg.n_layers != 1:
            raise ValueError(f"an EAGLE-1 head has one decoder layer, got n_layers={cfg.n_layers}")
        self.config, self.token_shift = cfg, token_shift
        self.fc = nn.Linear(2 * cfg.dim, cfg.dim, bias=True)
        self.layers = nn.ModuleList([DecoderLayer(cfg, 0, input_norm=False)])
        cos, sin = rotary_tables(cfg)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @classmethod
    def for_target(cls, target, token_shift: bool = True) -> "Eagle1Head":
        """A fresh head shaped like `target`'s layers, which drafts for that target alone."""
        head = cls(replace(target.config, n_layers=1), token_shift)
        head.target_sha256 = weights_fingerprint(target)
        return head

    def forward(self, emb, feature, cache: KVCache | None = None, position_ids=None, attn_mask=None):
        """emb, feature (B, T, D) -> predicted next features (B, T, D). cache, position_ids and
        attn_mask as in Transformer.forward ((T, P+T) masks let tree levels see their ancestors)."""
        past = cache.length if cache is not None else 0
        T = emb.shape[1]
        cos, sin, mask = rope_and_mask(self.rope_cos, self.rope_sin, past, T, position_ids, attn_mask)
        x = self.fc(torch.cat([emb, feature], dim=-1))                   # (B, T, D)
        x = self.layers[0](x, cos, sin, cache, mask)
        if cache is not None:
            cache.length = past + T
        return x


# ----------------------------------------------------------------------------- training
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
def evaluate_head(head: Eagle1Head, target, val: dict) -> dict[str, dict[str, float]]:
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
    from .data import DATA_DIR, DOMAINS, load_tokens
    if target is None:
        from . import load_target
        target = load_target()
    for p in target.parameters():
        p.requires_grad_(False)
    target.eval()
    return (target, Path(run_dir or Path("runs") / kind), Path(out_dir or DATA_DIR / kind),
            tokens or {d: load_tokens(d, "train") for d in DOMAINS},
            val_tokens or {d: load_tokens(d, "val") for d in DOMAINS})


def check_regen_source(source: str, regen_temperature) -> None:
    """A regeneration temperature is a valid temperature, and only given with regenerated data."""
    from .sampling import SamplingParams
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


EAGLE1_TRAIN = dict(steps=4000, lr=3e-3, min_lr=3e-4, warmup=100, weight_decay=0.0,
                    grad_clip=0.5, eval_every=250, eval_windows=16)


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
    from .distill import MixedDistillation, SelfDistillation, validation_batches
    from .train import TrainConfig, fit
    if cfg is None:
        cfg = TrainConfig(**{**EAGLE1_TRAIN, **({"steps": steps} if steps else {})})
    if seed is not None:
        cfg = replace(cfg, seed=seed)
    check_regen_source(source, regen_temperature)            # before the target and the corpus load
    target, run_dir, out_dir, tokens, val_tokens = head_training_setup("eagle1", target, run_dir, out_dir,
                                                                       tokens, val_tokens)
    start, init_info = warm_start(init, target, load_eagle1)        # before the data: a refusal is quick
    if start is not None and start.token_shift != token_shift:
        raise ValueError(f"the head in {init} was trained with token_shift={start.token_shift}; "
                         f"asked for token_shift={token_shift}")
    if source == "mixed":              # corpus windows and the target's continuations, in turns
        half = None if num_batches is None else (num_batches + 1) // 2
        data = MixedDistillation(*(SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, seed=cfg.seed,
                                                    source=src, num_batches=half, cache_dir=cache_dir,
                                                    temperature=regen_temperature)
                                   for src in ("corpus", "regenerated")))
    else:
        data = SelfDistillation(target, tokens, cfg.batch_size, cfg.seq_len, seed=cfg.seed,
                                source=source, num_batches=num_batches, cache_dir=cache_dir,
                                temperature=regen_temperature)
    if cache_dir is not None:
        data.precompute(range(min(num_batches or cfg.steps, cfg.steps)), progress=progress)
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
               evaluate=lambda: evaluate_head(head, target, val), desc="train eagle1",
               progress=progress, stop_after=stop_after, on_step=on_step)
    if done is None:
        return head
    metrics = evaluate_head(head, target, val)
    save_pretrained(head, out_dir, name="eagle1", token_shift=token_shift,
                    target_sha256=target_sha256,
                    tokenizer_sha256=getattr(target, "tokenizer_sha256", None),
                    training={"command": command or "python -m minispec train eagle1",
                              "config": asdict(cfg), "feature_loss": feature_loss,
                              "data": {"source": source, "num_batches": num_batches,
                                       "prompt_len": data.prompt_len if source != "corpus" else None,
                                       "regen_temperature": regen_temperature if source != "corpus" else None,
                                       "distinct_tokens": min(num_batches or cfg.steps, cfg.steps)
                                       * cfg.batch_size * cfg.seq_len},
                              **run_totals(init_info, done["train_time_s"], cfg.steps * cfg.batch_size * cfg.seq_len),
                              "device": str(target.device), "torch": torch.__version__,
                              "threads": torch.get_num_threads(), "history": done["history"]},
                    val=metrics)
    print(f"eagle1 head: {head.num_params():,} parameters, validation {metrics}, "
          f"{done['train_time_s'] / 60:.1f} min -> {out_dir}")
    return head


def load_eagle1(directory, target, verify: bool = True) -> Eagle1Head:
    """Load a trained head (default folder: data/eagle1) for `target`. The manifest names the
    target it was trained on by the sha256 of its tensors; another target is refused."""
    info, cfg, state = read_checkpoint(directory, Eagle1Head.kind, verify)
    want, have = info.get("target_sha256"), weights_fingerprint(target)
    if want != have:
        raise CheckpointError(
            f"the head in {directory} was trained on the target whose weights have sha256 "
            f"{str(want)[:12]}..., this target's is {have[:12]}...: train a head for it "
            "(python -m minispec train eagle1)")
    if (cfg.dim, cfg.vocab_size, cfg.n_heads) != (target.config.dim, target.vocab_size, target.config.n_heads):
        raise CheckpointError(f"the head's shape (dim {cfg.dim}, vocabulary {cfg.vocab_size}) does not "
                              f"match the target's (dim {target.config.dim}, vocabulary {target.vocab_size})")
    head = Eagle1Head(cfg, bool(info.get("token_shift", True)))
    load_into(head, state, source=str(directory))
    head.target_sha256 = have
    return head.to(target.device).eval()


@torch.no_grad()
def compare_heads(target, tokenizer, heads: dict, gamma: int = 4, limit: int = 5,
                  max_new_tokens: int = 128, temperatures=(0.0, 1.0), seed: int = 0,
                  progress: bool = True) -> dict:
    """The ablation table: every head drafts chains of `gamma` on the first `limit` evaluation
    prompts of each domain, greedy and sampling. Per head, temperature and domain: tau,
    acceptance per position, and (greedy) whether the output equals plain greedy decoding.
    Hardware-independent: no timings."""
    from tqdm.auto import tqdm
    from .data import load_prompts
    from .generation import generate
    from .stats import GenerationStats
    questions = load_prompts(limit=limit)
    out = {}
    for name, head in heads.items():
        out[name] = {}
        for temp in temperatures:
            per, lossless = {}, {}
            for q in tqdm(questions, desc=f"head {name}, T={temp}", disable=not progress):
                ids = tokenizer.encode(q["turns"][0])
                kw = dict(temperature=temp, seed=seed + q["question_id"], eos_id=tokenizer.eot_id)
                g = generate(target, ids, max_new_tokens, method="eagle1", draft=head, gamma=gamma, **kw)
                d = q["category"]
                per[d] = per.get(d, GenerationStats()).merge(g.stats)
                if temp == 0:
                    lossless[d] = lossless.get(d, True) and g.tokens == generate(target, ids, max_new_tokens, **kw).tokens
            out[name][f"T={temp:g}"] = {d: {"tau": round(st.mean_acceptance_length, 3),
                                            "acceptance_per_pos": [round(a, 3) for a in st.acceptance_per_pos],
                                            "lossless": lossless.get(d)} for d, st in per.items()}
    return {"gamma": gamma, "limit": limit, "max_new_tokens": max_new_tokens,
            "temperatures": list(temperatures), "heads": out}


# ----------------------------------------------------------------------------- drafting
def chain_choices(gamma: int) -> list[list[int]]:
    """A chain of gamma drafts as a choice list: [[0], [0, 0], ...]."""
    return [[0] * d for d in range(1, gamma + 1)]


# Static trees, named by their number of nodes, in the spirit of the reference's choice lists:
# wide near the root, where the head is least sure of its ranking, and a deep spine along its
# best guesses. t26 has the reference's size (25-26 nodes, depth 5), which a GPU verifies about
# as fast as one token. On a 2-core CPU every node costs (a verification pass over 27 tokens
# takes about 1.9 plain steps, each tree level one head pass), so tau rises with the tree's size while
# speed falls: t4 is the fastest tree there (chapter 3 measures all of them).
TREES = {
    "t4": [[0], [1], [0, 0], [0, 0, 0]],
    "t8": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 0, 0]],
    "t12": [[0], [1], [2], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0],
            [0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
    "t16": [[0], [1], [2], [3], [0, 0], [0, 1], [1, 0], [2, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0],
            [1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]],
    "t26": [[0], [1], [2], [3], [4], [0, 0], [0, 1], [0, 2], [0, 3], [1, 0], [1, 1], [2, 0], [2, 1],
            [3, 0], [0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [0, 2, 0], [2, 0, 0], [0, 0, 0, 0],
            [0, 0, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]],
}
TREE_CHOICES = TREES["t4"]    # method eagle1-tree's default, the fastest tree on a CPU (chapter 3)


def check_choices(choices, vocab: int | None = None, max_nodes: int | None = None) -> list[tuple[int, ...]]:
    """Validate a choice list (the rules of minispec.validate): a non-empty list of distinct paths
    of sibling ranks, each with its parent and elder sibling; ranks below `vocab` (the tokens the
    head ranks) and at most `max_nodes` paths, where given. Return it sorted by depth, parents
    before children."""
    example = "e.g. [[0], [1], [0, 0]]"
    if isinstance(choices, (str, bytes)) or not isinstance(choices, (list, tuple)):
        raise ValueError(f"choices must be a list of paths of sibling ranks, {example}; got {choices!r}")
    if not choices:
        raise ValueError(f"choices is empty: give at least one path, {example} (or None for the default tree)")
    if max_nodes is not None and len(choices) > max_nodes:
        raise ValueError(f"choices has {len(choices)} nodes; a tree is scored beside the request in one "
                         f"pass and may have at most {max_nodes} (the model's context)")
    for c in choices:
        if isinstance(c, (str, bytes)) or not isinstance(c, (list, tuple)) or not c \
                or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in c):
            raise ValueError(f"choice {c!r}: a path is a non-empty list of sibling ranks >= 0, {example}")
    paths = sorted({tuple(c) for c in choices}, key=lambda c: (len(c), c))
    if len(paths) != len(choices):
        raise ValueError("choices must be a list of distinct paths")
    have = set(paths)
    for c in paths:
        if vocab is not None and c[-1] >= vocab:
            raise ValueError(f"choice {list(c)} asks for the child of rank {c[-1]}, but the head ranks only "
                             f"{vocab} tokens (ranks 0 to {vocab - 1})")
        if len(c) > 1 and c[:-1] not in have:
            raise ValueError(f"choice {list(c)} has no parent {list(c[:-1])} in the list")
        if c[-1] and c[:-1] + (c[-1] - 1,) not in have:
            raise ValueError(f"choice {list(c)} needs its elder sibling {list(c[:-1]) + [c[-1] - 1]}")
    return paths


class Eagle1Drafter:
    """Drafts a tree of `choices` with an EAGLE-1 head over the target's features.

    The head keeps a KV cache over the real sequence: position t holds (x_{t+1}, f_t) once the
    target has produced f_t. Each round feeds the pairs the last verification produced, then
    expands the tree level by level, one head forward per level (the level's nodes see the
    real prefix, their ancestors and themselves), and finally forgets the tree.
    """
    def __init__(self, head: Eagle1Head, target, max_len: int, choices=None, max_entropy=None):
        self.head, self.target = head, target
        self.max_entropy = check_max_entropy(max_entropy)     # SVIP (chapter 4); None: off
        self.paths = check_choices(TREE_CHOICES if choices is None else choices, head.config.vocab_size,
                                   target.max_seq_len)
        if not head.token_shift and any(c[-1] for c in self.paths):
            raise ValueError("a head trained without the token shift cannot tell siblings apart: "
                             "it drafts chains only")
        self.n_children = {}                                          # choice path -> its children
        for c in self.paths:
            self.n_children[c[:-1]] = max(self.n_children.get(c[:-1], 0), c[-1] + 1)
        self.feature_layers = (target.num_layers,)
        self.gamma = max(len(c) for c in self.paths)                  # the tree's depth
        self.extra_nodes = len(self.paths) - self.gamma               # nodes beyond one chain
        self.budget = len(self.paths)
        self.cache = head.new_cache(max_len + len(self.paths))
        self.pending = None   # (m, D) target features the head has not read yet

    def node_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """(n, D) features predicted at n nodes -> (n, V) logits of their children: the
        target's own LM head (EAGLE-1 drafts in the target's vocabulary). NaN or infinity (a broken
        head) is refused by name."""
        return check_finite(lean_linear(feats, self.target.lm_head).float(), "the EAGLE-1 head")

    def observe(self, tokens: list[int], hidden: dict[int, torch.Tensor]) -> None:
        """The target has read the tokens before the last one; hidden[L] (m, D) are its
        features on the m it read last."""
        f = hidden[self.target.num_layers]
        self.pending = f if self.pending is None else torch.cat([self.pending, f])

    def catch_up(self, tokens: list[int]) -> torch.Tensor:
        """Feed the head the real pairs (x_{t+1}, f_t) it has not seen, t = fed .. L-2, whose
        features came out of the target's last pass. Returns (D,) the feature it predicts at
        the root, whose LM-head output ranks the root's children."""
        s, L, fed = int(self.head.token_shift), len(tokens), self.cache.length   # fed = L - 1 - m
        toks = torch.tensor(tokens[fed + s:L - 1 + s], device=self.head.device)
        out = self.head(self.target.embed_tokens(toks)[None], self.pending[None], self.cache)[0]  # (m, D)
        self.pending = None
        return out[-1]

    def head_level(self, tokens: list[int], nodes: list[int], tree_tokens: list[int],
                   parents: list[int], node_feat: dict, slot: dict) -> torch.Tensor:
        """One head forward over `nodes`, all at the same depth: node i reads its token (its
        parent's without the token shift) with the feature predicted at its parent, and sees
        the real prefix, its ancestors (cached in the head at slot[a]) and itself. Returns
        (n, D) the features predicted at the nodes; records their cache slots."""
        L, dev = len(tokens), self.head.device
        s = self.head.token_shift
        fed_tok = [tree_tokens[i] if s else (tree_tokens[parents[i]] if parents[i] >= 0 else tokens[-1])
                   for i in nodes]
        feat_in = torch.stack([node_feat[parents[i]] for i in nodes])              # (n, D)
        emb = self.target.embed_tokens(torch.tensor(fed_tok, device=dev))           # (n, D)
        past = self.cache.length
        ancestors = []
        for i in nodes:
            a, up = parents[i], []
            while a >= 0:
                up.append(a)
                a = parents[a]
            ancestors.append(up)
        depth = len(ancestors[0]) + 1
        for row, i in enumerate(nodes):
            slot[i] = past + row
        if len(nodes) == 1 and past - (L - 1) == depth - 1:
            # a chain so far: the head's cache holds the prefix and exactly this node's
            # ancestors, so the plain causal step computes the same, without a mask
            return self.head(emb[None], feat_in[None], self.cache)[0]
        mask = torch.full((len(nodes), past + len(nodes)), float("-inf"), device=dev)
        mask[:, :L - 1] = 0.0                                                       # the real prefix
        for row, up in enumerate(ancestors):
            mask[row, [slot[a] for a in up]] = 0.0                                  # ancestors' slots
            mask[row, past + row] = 0.0                                             # itself
        pos = torch.full((len(nodes),), L - 2 + depth, device=dev)
        return self.head(emb[None], feat_in[None], self.cache, position_ids=pos, attn_mask=mask)[0]

    def propose(self, tokens: list[int], k: int, params: SamplingParams, generator=None) -> DraftTree:
        """A tree of at most depth k below tokens[-1]."""
        if k < 1 or self.pending is None:
            return DraftTree([], [])
        has_children = lambda c: len(c) < k and c in self.n_children     # within depth k
        # node_feat[i]: the feature predicted AT node i, whose LM-head output ranks node i's
        # children; index -1 is the root. node_of: choice path -> node index.
        node_feat = {-1: self.catch_up(tokens)}
        node_of = {(): -1}
        tree_tokens, parents, qs, slot = [], [], [], {}
        level = [()]
        while level:
            expand = [c for c in level if has_children(c)]
            if not expand:
                break
            feats = torch.stack([node_feat[node_of[c]] for c in expand])            # (n, D)
            logits = self.node_logits(feats)                                         # (n, V)
            new = []
            for c, row in zip(expand, logits):
                picks, q_rows = self._children(row, self.n_children[c], params, generator)
                unsure = too_unsure(row, params, self.max_entropy)  # SVIP: these picks are guesses,
                for r in range(len(picks)):                          # so nothing is drafted below them
                    node_of[c + (r,)] = len(tree_tokens)
                    tree_tokens.append(picks[r])
                    parents.append(node_of[c])
                    if q_rows is not None:
                        qs.append(q_rows[r])
                    if not unsure:
                        new.append(c + (r,))
            level = [c for c in new if has_children(c)]        # one head pass for the next level
            if level:
                ids = [node_of[c] for c in level]
                h = self.head_level(tokens, ids, tree_tokens, parents, node_feat, slot)
                node_feat.update(zip(ids, h))
        self.cache.rollback(len(tokens) - 1)                             # forget the tree
        return DraftTree(tree_tokens, parents, torch.stack(qs) if qs else None)

    @staticmethod
    def _children(logits, n: int, params: SamplingParams, generator):
        """Up to n distinct children: the top n when greedy; else drawn without replacement
        from q, each with the renormalised q it was drawn from (fewer when q's support, cut by
        top_k or top_p, has fewer tokens)."""
        if params.greedy:
            return logits.topk(n).indices.tolist(), None
        q = warp(logits, params)
        picks, rows = [], []
        for _ in range(n):
            x = int(sample(q, generator))
            picks.append(x)
            rows.append(q)
            rest = q.clone()
            rest[x] = 0.0
            total = rest.sum()
            if total <= 0:
                break
            q = rest / total
        return picks, rows
