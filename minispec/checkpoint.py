"""Shipped weights: a folder with model.safetensors and manifest.json.

Loading never executes code (safetensors), checks the file's sha256 against the manifest, and
checks every tensor name and shape against the config, so a corrupt file, a foreign file or a
checkpoint of another configuration fails with a message that says which.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import torch

from .model import ModelConfig, Transformer

WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"
FORMAT = "minispec-model"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded, with the reason."""


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of a model's tensors (names, shapes, float32 values): names the exact target a
    draft head was trained on, however that target was loaded. Remembered on the model until a
    tensor is replaced or changed in place (torch counts in-place changes in `_version`), so that
    checking a head against its target on every request costs nothing."""
    try:                             # (parameters and buffers: cheaper to list than a state_dict)
        key = tuple((t.data_ptr(), t._version) for t in (*model.parameters(), *model.buffers()))
    except RuntimeError:             # tensors made under inference_mode keep no version counter
        key = None
    memo = model.__dict__.get("_weights_fingerprint")
    if key is not None and memo is not None and memo[0] == key:
        return memo[1]
    state = model.state_dict()
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    if key is not None:
        model.__dict__["_weights_fingerprint"] = (key, h.hexdigest())
    return h.hexdigest()


def atomic_write(path, write) -> None:
    """Call write(tmp_path), then rename over `path`: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_pretrained(model: torch.nn.Module, directory, **manifest) -> Path:
    """Write model.safetensors and a manifest naming the model's kind and config (any minispec
    model: the target and draft LMs, the draft heads), plus the keyword arguments."""
    from safetensors.torch import save_file
    directory = Path(directory)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS, lambda p: save_file(state, p))
    info = {"format": FORMAT, "kind": getattr(model, "kind", "transformer"), "config": model.config.to_dict(),
            "num_params": model.num_params(), "sha256": sha256_file(directory / WEIGHTS), **manifest}
    atomic_write(directory / MANIFEST, lambda p: Path(p).write_text(json.dumps(info, indent=1) + "\n"))
    return directory


def check_folder(directory) -> Path:
    """A checkpoint folder that exists and is a folder (not a file), else a CheckpointError."""
    directory = Path(directory)
    if not directory.exists():
        raise CheckpointError(f"{directory} does not exist")
    if not directory.is_dir():
        raise CheckpointError(f"{directory} is a file, not a checkpoint folder (a folder with {WEIGHTS} "
                              f"and {MANIFEST} or config.json)")
    return directory


def read_manifest(directory) -> dict:
    path = check_folder(directory) / MANIFEST
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no {MANIFEST} in {directory}: not a minispec checkpoint folder") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a minispec model manifest (format {info.get('format')!r})"
                              if isinstance(info, dict) else f"{path} is not a minispec model manifest")
    return info


def load_state_dict(path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning every failure into a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if Path(path).is_dir():
        raise CheckpointError(f"{path} is a folder, not a safetensors weights file")
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"weights file {path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file (corrupt or foreign): {e}") from None


def load_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source="checkpoint") -> None:
    """Copy `state` into `model`, naming any missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source} does not match this model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise CheckpointError(f"{source}: tensor {k} has shape {tuple(v.shape)}, this model "
                                  f"expects {tuple(expected[k].shape)} (checkpoint of another config?)")
        if not torch.isfinite(v).all():
            raise CheckpointError(f"{source}: tensor {k} contains NaN or infinity")
    model.load_state_dict(state)


def read_checkpoint(directory, kind: str = "transformer", verify: bool = True):
    """A model folder's manifest, its ModelConfig and its tensors, after checking that it holds
    a model of `kind` and (verify) that the weights file matches its sha256.
    Returns (info, cfg, state); every failure is a CheckpointError that says which."""
    directory = Path(directory)
    info = read_manifest(directory)
    if info.get("kind", "transformer") != kind:
        hint = ("load draft heads with their own loader, e.g. minispec.load_eagle1"
                if kind == "transformer" else f"expected a {kind!r} model")
        raise CheckpointError(f"{directory} holds a {info.get('kind', 'transformer')!r} model ({hint})")
    try:
        cfg = ModelConfig(**info["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{directory / MANIFEST}: missing or invalid config: {e}") from None
    path = directory / WEIGHTS
    if verify and path.is_file() and sha256_file(path) != info.get("sha256"):
        raise CheckpointError(f"{path} does not match the sha256 in its manifest: the file is "
                              "corrupt or was replaced")
    return info, cfg, load_state_dict(path)


def read_head_checkpoint(directory, kind: str, target, verify: bool = True):
    """read_checkpoint for a draft head, which must have been trained on this very `target`: its
    manifest names that target by the sha256 of its tensors. Returns (info, cfg, state, the
    target's sha256)."""
    info, cfg, state = read_checkpoint(directory, kind, verify)
    want, have = info.get("target_sha256"), weights_fingerprint(target)
    if want != have:
        raise CheckpointError(
            f"the head in {directory} was trained on the target whose weights have sha256 "
            f"{str(want)[:12]}..., this target's is {have[:12]}...: train a head for it "
            f"(python -m minispec train {kind})")
    return info, cfg, state, have


def load_pretrained(directory, device=None, verify: bool = True) -> Transformer:
    """Load a shipped model folder (e.g. data/target) onto `device` (default: best available)."""
    from .device import default_device
    info, cfg, state = read_checkpoint(directory, "transformer", verify)
    model = Transformer(cfg)
    load_into(model, state, source=str(Path(directory) / WEIGHTS))
    model.tokenizer_sha256 = info.get("tokenizer_sha256")  # lets a drafter be checked against its target
    return model.to(device or default_device()).eval()


def training_runs(manifest: dict) -> list[dict]:
    """A trained model's provenance, its first run first: a warm restart (`train --init`) records
    the run it began from under "init" (and that one its own), with the `weights_fingerprint` of
    the weights it started from. Each row: run, command, tokens (this run's) and tokens_total,
    minutes (this run's), and `fingerprint`, the weights_fingerprint the run ended with (None for
    the last run: its weights are the manifest's own file). A run recorded without its numbers
    (a warm start from a folder of another trainer's files) ends the history: the rows begin after it."""
    chain, r = [], manifest.get("training")
    while r and r.get("tokens_seen") is not None and r.get("train_time_s") is not None:
        chain.insert(0, r)
        r = r.get("init")
    rows, tokens, seconds = [], 0, 0.0
    for k, r in enumerate(chain):
        end = chain[k + 1]["init"].get("sha256") if k + 1 < len(chain) else None
        rows.append({"run": k + 1, "command": r.get("command") or "?", "tokens": r["tokens_seen"] - tokens,
                     "tokens_total": r["tokens_seen"], "minutes": (r["train_time_s"] - seconds) / 60,
                     "fingerprint": end})
        tokens, seconds = r["tokens_seen"], r["train_time_s"]
    return rows
