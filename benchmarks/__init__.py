"""syftlab's benchmarks: each figure next to an anchor measured in the same run.

Run ``python -m benchmarks`` (``make bench``); ``--quick`` for a smoke run,
``--only NAME`` for one figure, ``--list`` for their names. See README.md.

Importing this package pins every process it starts to one thread: on a
2-core machine torch's small-op latency with two threads is pathological, and
the worker, its kernels and the anchor kernel all inherit this environment.
"""

from __future__ import annotations

import os

#: Environment variables that bound the threads of OpenMP, MKL, OpenBLAS and torch.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "TORCH_NUM_THREADS", "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

for _var in THREAD_VARS:
    os.environ[_var] = "1"  # before anything imports torch or numpy
del _var
