"""What every notebook uses: show the package's own code, keep widget callbacks apart, print a
probability.

The notebooks import these instead of keeping copies of the package's code: one concept, one
place.
"""
from __future__ import annotations

import functools
import inspect
import threading


def show(obj) -> "IPython.display.Code":
    """Render the source of a function or class from the package, with highlighting."""
    from IPython.display import Code
    return Code(inspect.getsource(obj), language="python")


_CALLBACKS = threading.Lock()


def one_at_a_time(callback):
    """A widget callback that never runs beside another one. A Jupyter kernel may run widget
    callbacks on more than one thread (ipykernel 7 routes widget messages to subshells, and lets
    them in while a cell runs); two callbacks stepping one generation at once would corrupt its
    caches. Every callback wrapped here takes the same lock."""
    @functools.wraps(callback)
    def run(*args, **kwargs):
        with _CALLBACKS:
            return callback(*args, **kwargs)
    return run


def fmt_prob(x: float) -> str:
    """A probability that stays readable when small: 0.412, 0.003, 2.7e-05, 0."""
    return "0" if x == 0 else (f"{x:.3f}" if x >= 1e-3 else f"{x:.1e}")
