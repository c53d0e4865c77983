"""Device choice (CUDA, then MPS, then CPU; override with MINISPEC_DEVICE), synchronisation, and
the number of CPU threads decoding uses (MINISPEC_THREADS)."""
from __future__ import annotations

import os
from contextlib import contextmanager

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


def inference_threads(device="cpu") -> int:
    """Threads torch may use for decoding on the CPU: $MINISPEC_THREADS, else 1 (0 = keep
    torch's own setting; ignored off the CPU).

    Why 1: a decoding step is a few hundred small operations, and with several threads each
    waits for the slowest. Measured on a 2-core CPU (docs/benchmark.md): two threads are 13-26%
    faster on a quiet machine, but about 3 times slower than one when another process wants a
    core, so one thread is the default that cannot collapse; MINISPEC_THREADS=2 suits a
    dedicated machine.
    """
    value = os.environ.get("MINISPEC_THREADS", "1")
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"MINISPEC_THREADS must be an integer >= 0 (0 = torch's own setting), got {value!r}")
    return n if torch.device(device).type == "cpu" else 0


@contextmanager
def cpu_threads(n: int):
    """Run the block with torch's intra-op thread count set to n (n = 0: unchanged); restored after."""
    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
