"""The one explicit setup call of a notebook or script session (nothing happens at import time).

>>> import utils
>>> utils.setup()            # repository root as working directory, 1 BLAS/OpenMP/torch thread
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup(threads: int | None = 1, root: str | os.PathLike | None = ROOT) -> Path:
    """Prepare a session: working directory, thread counts (analysis and training).

    The analyses are many small matrix products, for which extra BLAS/OpenMP threads only add
    contention (FC correlation matrix on a busy 2-core machine: 12 s with 2 threads, 0.4 s
    with 1), so notebooks run with one thread.  The limit is applied to the already-loaded
    BLAS/OpenMP pools (threadpoolctl) and to torch, so it works after numpy has been imported.

    Args:
        threads: threads for BLAS/OpenMP and torch; ``None`` leaves them as they are.
        root: working directory of the session (relative paths such as ``"results"`` and
            ``"figures"`` resolve against it); ``None`` keeps the current one.

    Returns:
        the working directory.
    """
    if root is not None:
        os.chdir(root)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        import torch
        from threadpoolctl import threadpool_limits

        # SPARSE_NUM_THREADS: the training engine's thread count (utils.engine.train), for trainings
        # started in the session; the others for processes started from it
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "SPARSE_NUM_THREADS"):
            os.environ[var] = str(threads)
        threadpool_limits(threads)
        torch.set_num_threads(threads)
    return Path.cwd()
