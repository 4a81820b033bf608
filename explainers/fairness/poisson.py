"""Poisson bootstrap weights for a job's rows.

A row's weight in each resample is a Poisson(1) draw fixed by (seed, the row's number in the job, the
resample). Each chunk adds its rows' weighted sums, and the sums are the same in any split and any order, so
a job's intervals resample its rows as the request's bootstrap does, and repeat with the seed. This is the
bootstrap for data too large to resample in one place (Hanley and MacGibbon 2006; Chamandy et al. 2012): a
Poisson(1) count per row stands in for the multinomial counts of drawing n rows from n, and agrees with it as
n grows.

The draws come from a counter-based hash (SplitMix64's finalizer, applied twice) turned into a uniform in
[0, 1) and then into a count through Poisson(1)'s cumulative distribution.
"""

from __future__ import annotations

import math

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)
RESAMPLE_BITS = np.uint64(17)
"""A counter is the row's number shifted by this, plus the resample (at most 2**17 - 1, above the schema's
100,000): a resample's draws do not depend on how many resamples are asked for."""
POISSON_CDF = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(24)])
"""P(X <= k) for X ~ Poisson(1): a uniform below entry k and at or above entry k - 1 draws k."""


def _mix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * MIX_1
    x = (x ^ (x >> np.uint64(27))) * MIX_2
    return x ^ (x >> np.uint64(31))


def weights(seed: int, rows: np.ndarray, resamples: int) -> np.ndarray:
    """Each row's Poisson(1) count in each resample: a (rows, resamples) float array."""
    if resamples >= 1 << int(RESAMPLE_BITS):
        raise ValueError(f"at most {(1 << int(RESAMPLE_BITS)) - 1} resamples")
    with np.errstate(over="ignore"):
        key = _mix(np.asarray([seed], dtype=np.uint64) * GOLDEN + np.uint64(1))
        counter = (np.asarray(rows, dtype=np.uint64)[:, None] << RESAMPLE_BITS) + np.arange(
            resamples, dtype=np.uint64
        )
        hashed = _mix(_mix(counter + key))
    uniform = (hashed >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.searchsorted(POISSON_CDF, uniform, side="right").astype(np.float64)
