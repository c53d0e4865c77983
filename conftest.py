"""For every test run from the checkout (tests/ and the notebooks under nbval): one CPU thread.

The tiny models and the notebooks' small experiments gain nothing from intra-op threads, and
when another process wants a core, OpenMP's spinning threads make each small operation many
times slower and burn CPU time while they wait (chapter 5's exact-distribution check: 56 s of CPU
time with 2 threads against 1.7 s with one, on a busy 2-core machine). Set before any kernel
starts, so nbval's kernels and the browser test's JupyterLab kernels inherit it; a value already
in the environment wins.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
