"""Candor's vectorised form of DiCE's ``random`` method, then batched sparsity and diverse selection.

DiCE's random method changes 1, 2, ... randomly chosen features of many copies of the query to values drawn
inside their ranges, keeps what the model scores as the desired outcome, and finally walks each kept change
back towards the query one single-row prediction at a time. Here each round is one batch drawn with a seeded
``numpy.random.Generator``, on the step grid and inside monotone limits, scored in one model call; the walk
back is one batch per pass over all candidates; every deadline check happens between batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from explainers.counterfactuals.checks import satisfied, snap
from explainers.counterfactuals.rows import Distance, Scorer, Scoring
from explainers.counterfactuals.space import FeatureBound, SearchSpace

BATCH = 500
POOL_FACTOR = 3
REFINE_POOL = 40
AHEAD_ROUNDS = 2
"""Rounds scored ahead for a remote model (``first_rounds``)."""
TAKE_BACK = (1.0, 0.75, 0.5, 0.25)
"""Shares of a numeric change tried back towards the query (1.0 restores the query's value)."""


@dataclass
class SearchResult:
    candidates: np.ndarray
    timed_out: bool


def sample(
    bound: FeatureBound, current: float, low: float, high: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` values for one feature other than ``current`` where possible, all allowed by its bound."""
    if bound.kind != "numeric":
        options = [float(v) for v in bound.allowed if v != current] or [current]
        return rng.choice(np.asarray(options, dtype=float), n)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        return np.full(n, current)
    if bound.step is None:
        return rng.uniform(low, high, n)
    first, last = math.ceil(low / bound.step - 1e-9), math.floor(high / bound.step + 1e-9)
    if first > last:
        return np.full(n, current)
    return rng.integers(first, last + 1, n).astype(float) * bound.step


def random_search(
    space: SearchSpace,
    row: np.ndarray,
    scorer: Scorer,
    total_cfs: int,
    rng: np.random.Generator,
    deadline: float,
    drawn: Sequence[np.ndarray] = (),
) -> Scoring[SearchResult]:
    """Valid, constraint-satisfying candidates changing 1, 2, ... features, until enough or out of time.
    ``drawn``: the first rounds' candidates as ``first_rounds`` drew them with ``rng`` (then in the state
    after them)."""
    found: list[np.ndarray] = []
    count = 0
    for k in range(1, len(space.varying) + 1):
        ahead = k <= len(drawn)  # scored already: no time left to save
        if not ahead and time.monotonic() > deadline:
            return SearchResult(_stack(found, row), timed_out=True)
        batch = drawn[k - 1] if ahead else draw_round(space, row, k, rng)
        valid = batch[(yield from scorer.score_valid(batch))]
        found.append(valid)
        count += len(valid)
        if count >= POOL_FACTOR * total_cfs or (count >= total_cfs and k >= 2):
            break
    return SearchResult(_stack(found, row), timed_out=False)


def draw_round(space: SearchSpace, row: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Round ``k``'s candidates: distinct copies of ``row`` with ``k`` of its varying features drawn anew,
    those satisfying every constraint."""
    vary = space.varying
    low, high = space.row_limits(row)
    batch = np.repeat(row[None, :], BATCH, axis=0)
    chosen = np.argsort(rng.random((BATCH, len(vary))), axis=1)[:, :k]
    for position, j in enumerate(vary):
        rows = (chosen == position).any(axis=1)
        batch[rows, j] = sample(space.bounds[j], row[j], low[j], high[j], int(rows.sum()), rng)
    batch = np.unique(batch[(batch != row).any(axis=1)], axis=0)
    return batch[satisfied(space, row, batch)]


def first_rounds(space: SearchSpace, row: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The candidates of the rounds ``random_search`` nearly always needs (changing 1, then 2 features),
    drawn with ``rng`` as the search would: to be scored ahead, in one request, for a remote model, and then
    given to the search with the same ``rng``."""
    return [draw_round(space, row, k, rng) for k in range(1, min(AHEAD_ROUNDS, len(space.varying)) + 1)]


def _stack(found: list[np.ndarray], row: np.ndarray) -> np.ndarray:
    if not found:
        return np.empty((0, len(row)))
    return np.unique(np.vstack(found), axis=0)


def _key(row: np.ndarray, candidates: np.ndarray, distance: Distance) -> tuple[np.ndarray, np.ndarray]:
    return (candidates != row).sum(axis=1), distance.to_row(row, candidates)


def take_back(
    space: SearchSpace, row: np.ndarray, pool: np.ndarray, scorer: Scorer, distance: Distance, deadline: float
) -> Scoring[np.ndarray]:
    """Each candidate moved back towards the query feature by feature while it stays valid (batched)."""
    if len(pool) == 0:
        return pool
    changes, dist = _key(row, pool, distance)
    current = pool[np.lexsort((dist, changes))][:REFINE_POOL].copy()
    low, high = space.row_limits(row)
    for _ in range(int((current != row).sum(axis=1).max())):
        if time.monotonic() > deadline:
            break
        trials, owners = [], []
        for owner, candidate in enumerate(current):
            for j in np.flatnonzero(candidate != row):
                shares = TAKE_BACK if space.bounds[j].kind == "numeric" else (1.0,)
                for share in shares:
                    trial = candidate.copy()
                    if share == 1.0:
                        trial[j] = row[j]
                    else:
                        moved = row[j] + (candidate[j] - row[j]) * (1 - share)
                        trial[j] = snap(np.array([moved]), low[j], high[j], space.bounds[j].step)[0]
                    trials.append(trial)
                    owners.append(owner)
        matrix = np.array(trials)
        keep = satisfied(space, row, matrix) & (matrix != row).any(axis=1)
        keep[keep] = yield from scorer.score_valid(matrix[keep])
        if not _adopt_better(row, current, matrix[keep], np.array(owners)[keep], distance):
            break
    return current


def _adopt_better(
    row: np.ndarray, current: np.ndarray, trials: np.ndarray, owners: np.ndarray, distance: Distance
) -> bool:
    """Replace each candidate by its sparsest-then-closest valid trial when that is better; any change?"""
    improved = False
    if len(trials) == 0:
        return improved
    changes, dist = _key(row, trials, distance)
    base_changes, base_dist = _key(row, current, distance)
    for owner in np.unique(owners):
        mine = np.flatnonzero(owners == owner)
        best = mine[np.lexsort((dist[mine], changes[mine]))[0]]
        if (changes[best], dist[best]) < (base_changes[owner], base_dist[owner]):
            current[owner] = trials[best]
            improved = True
    return improved


def select(
    row: np.ndarray,
    pool: np.ndarray,
    distance: Distance,
    total_cfs: int,
    proximity_weight: float,
    diversity_weight: float,
) -> np.ndarray:
    """Greedy choice: fewest changes and closest first, then each next one far from those already chosen."""
    pool = np.unique(pool, axis=0)
    if len(pool) == 0:
        return pool
    changes, dist = _key(row, pool, distance)
    cost = changes + proximity_weight * dist
    pairwise = distance.pairwise(pool)
    chosen = [int(np.argmin(cost))]
    while len(chosen) < min(total_cfs, len(pool)):
        score = cost - diversity_weight * pairwise[:, chosen].min(axis=1)
        score[chosen] = np.inf
        chosen.append(int(np.argmin(score)))
    return pool[chosen]
