"""What the chapters' graders share: the Verdict a grader returns, and helpers for the learner's code.

The helpers run the learner's function and read what it returns.

A grader's cases raise Fail with the message for the learner; `judge` turns the first one into a
failing Verdict; a run without one is a pass.

While the learner's function runs, the package's own implementation of the exercise (the
functions a grader names in `judge(..., switch_off=...)`) raises instead of answering, so that
an exercise cannot be passed by calling it; the grader itself still uses it for the expected
answers, between the learner's calls.
"""
from __future__ import annotations

import html
import numbers
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..model import ModelConfig

# tiny models: a 64-token vocabulary for decoding checks, 16 tokens where 3-token
# continuations must be enumerated exactly (16^3 outcomes)
TINY = ModelConfig(vocab_size=64, dim=32, n_layers=2, n_heads=4, ffn_dim=48, max_seq_len=64)
SMALL = ModelConfig(**{**TINY.to_dict(), "vocab_size": 16})


@dataclass
class Verdict:
    """A grader's answer: PASS or FAIL on one exercise, and why. True when it passed."""
    exercise: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} [{self.exercise}] {self.message}"

    def _repr_html_(self) -> str:
        color = "#2d6a4f" if self.passed else "#b00020"
        return (f'<div style="border-left:4px solid {color};padding:2px 8px"><b style="color:{color}">'
                f'{"PASS" if self.passed else "FAIL"}</b> [{self.exercise}] {html.escape(self.message)}</div>')


class Fail(Exception):
    """A failed case, with the message for the learner."""


_SWITCHED_OFF: list = []   # the package functions that refuse while the learner's code runs


def judge(exercise: str, body, switch_off=()) -> Verdict:
    """Run a grader's cases (`body`, which returns the message of a pass) into a Verdict;
    `switch_off`: the package's functions that do what the exercise asks (see the module's doc)."""
    _SWITCHED_OFF[:] = switch_off
    try:
        return Verdict(exercise, True, body())
    except Fail as e:
        return Verdict(exercise, False, str(e))
    finally:
        _SWITCHED_OFF.clear()


def _refuse(*args, **kwargs):
    # runs as the switched-off function, with ITS module's globals: builtins only
    name = __import__("sys")._getframe().f_code.co_name          # its name, see switched_off
    raise RuntimeError(f"minispec's own {name} is switched off while your function is graded: "
                       "write the exercise's code yourself")


@contextmanager
def switched_off(functions):
    """Within the block, each function (any reference to it: its code object is swapped) raises
    a RuntimeError that names it; afterwards it is itself again."""
    saved = [(f, f.__code__) for f in functions]
    try:
        for f in functions:
            f.__code__ = _refuse.__code__.replace(co_name=f"{f.__module__}.{f.__qualname__}")
        yield
    finally:
        for f, code in saved:
            f.__code__ = code


def call_student(what, fn, *args):
    """Call the learner's function, with the exercise's package functions switched off; an
    exception becomes a failed case that names it."""
    try:
        with switched_off(list(_SWITCHED_OFF)):
            return fn(*args)
    except Exception as e:  # noqa: BLE001 - any error in student code is a finding, not a crash
        raise Fail(f"{what} raised {type(e).__name__}: {e}") from None


def as_ids(x, what) -> list[int]:
    """The token ids the learner's function returned, as a list of ints (a tensor or a list of
    0-d integer tensors will do)."""
    if isinstance(x, torch.Tensor):
        x = x.flatten().tolist()
    if isinstance(x, (list, tuple)):
        x = [int(t) if isinstance(t, torch.Tensor) and t.numel() == 1 and not t.is_floating_point() else t for t in x]
    if not isinstance(x, (list, tuple)) or not all(isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in x):
        raise Fail(f"{what} must return a list of int token ids, got {type(x).__name__}: {x!r:.80}")
    return [int(t) for t in x]
