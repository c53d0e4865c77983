"""Device choice (CUDA, then MPS, then CPU; override with MINISPEC_DEVICE) and synchronisation."""
from __future__ import annotations

import os

import torch


def default_device(name: str | None = None) -> torch.device:
    """The device to run on: `name`, else $MINISPEC_DEVICE, else CUDA, MPS or CPU."""
    name = name or os.environ.get("MINISPEC_DEVICE")
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {name!r} requested but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device) -> None:
    """Wait for queued GPU work, so wall-clock timings are honest."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()
