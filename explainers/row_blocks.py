"""Large batches split into row blocks that run on ``CANDOR_BOOSTER_THREADS`` threads at once: for row-wise
tree walks that release the GIL (the tabulated TreeSHAP, the OOD forest's ``apply``). Each row's result is
computed as it would be alone, so the split never changes a value."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model_store.tabular.formats.boosters import booster_threads

_pools: dict[int, ThreadPoolExecutor] = {}
_making = threading.Lock()


def _executor(threads: int) -> ThreadPoolExecutor:
    """One pool per size and process, made on first use by a request (in a gunicorn worker: after it forks;
    its threads take the maker's priority, so a warm-up thread, which runs niced, never makes one)."""
    with _making:
        if threads not in _pools:
            _pools[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="candor-rows")
        return _pools[threads]


def by_row_blocks(compute: Callable[[np.ndarray], np.ndarray], matrix: np.ndarray) -> np.ndarray:
    """``compute(matrix)`` (an array with a row per row of ``matrix``), from blocks of the rows on
    ``booster_threads(rows)`` threads at once."""
    threads = booster_threads(len(matrix))
    if threads < 2:
        return compute(matrix)
    blocks = np.array_split(matrix, threads)
    return np.concatenate(list(_executor(threads).map(compute, blocks)))
