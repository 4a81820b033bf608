"""dice-ml's ``genetic`` and ``kdtree`` methods as candidate generators, bounded and made repeatable.

The ``dice_ml.Data``/``Model``/``Dice`` objects are built once per model version and method. dice-ml keeps
per-call state on the explainer and draws from the global RNGs, so calls are serialised by a lock, seeded, and
run on a helper thread that the request stops waiting for at its deadline. Whatever dice-ml returns is only a
candidate: the caller repairs, re-checks and re-scores it. dice-ml's exceptions and printed text never reach
the client.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import pandas as pd

from explainers.counterfactuals.rows import Desired, RowCodec
from explainers.counterfactuals.space import SearchSpace
from explainers.shap_backends import GLOBAL_RNG_LOCK
from model_store.tabular import TabularModel

log = logging.getLogger(__name__)
OUTCOME = "__candor_outcome__"
GENETIC_MAX_ITERATIONS = 100
_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dice")


def _silent(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """Stands in for dice-ml's ``tqdm`` (returns the iterable) and ``print`` (does nothing)."""
    return iterable


class DiceSearch:
    """One version's dice-ml explainer for one method."""

    def __init__(self, model: TabularModel, method: str) -> None:
        import dice_ml
        from dice_ml.explainer_interfaces import dice_genetic, dice_KD, explainer_base

        # dice-ml draws a progress bar on stderr and prints to stdout on every call; silence only dice-ml.
        explainer_base.tqdm = _silent
        for module in (dice_genetic, dice_KD):
            module.print = _silent  # type: ignore[attr-defined]

        self.model = model
        self.method = method
        frame = model.reference.copy()
        encoded = model.encode(frame.to_dict("records"))
        if model.is_classifier:
            frame[OUTCOME] = model.predict_encoded(encoded).argmax(axis=1)
        else:
            frame[OUTCOME] = model.predict_encoded(encoded)[:, 0]
        numeric = [s.name for s in model.manifest.features if s.type == "numeric"]
        data = dice_ml.Data(dataframe=frame, continuous_features=numeric, outcome_name=OUTCOME)
        backend_model = dice_ml.Model(
            model=model.estimator,
            backend="sklearn",
            model_type="classifier" if model.is_classifier else "regressor",
        )
        self.explainer = dice_ml.Dice(data, backend_model, method=method)
        self.lock = threading.Lock()

    def candidates(
        self,
        space: SearchSpace,
        codec: RowCodec,
        record: dict[str, Any],
        desired: Desired,
        total_cfs: int,
        seed: int,
        deadline: float,
    ) -> tuple[np.ndarray, bool]:
        """dice-ml's counterfactuals for one row as a matrix, and whether the deadline cut the search."""
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not self.lock.acquire(timeout=remaining):
            return np.empty((0, len(space.order))), True
        future = _EXECUTOR.submit(self._run_locked, space, record, desired, total_cfs, seed)
        try:
            frame = future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return np.empty((0, len(space.order))), True
        if frame is None or frame.empty:
            return np.empty((0, len(space.order))), False
        return self._to_matrix(codec, frame), False

    def _run_locked(
        self, space: SearchSpace, record: dict[str, Any], desired: Desired, total_cfs: int, seed: int
    ) -> pd.DataFrame | None:
        try:
            return self._run(space, record, desired, total_cfs, seed)
        finally:
            self.lock.release()

    def _run(
        self, space: SearchSpace, record: dict[str, Any], desired: Desired, total_cfs: int, seed: int
    ) -> pd.DataFrame | None:
        query = self.model.frame([record])
        permitted: dict[str, list[Any]] = {}
        for j in space.varying:
            bound, spec = space.bounds[j], space.specs[j]
            if bound.kind == "numeric":
                permitted[bound.name] = [bound.low, bound.high]
            elif bound.kind == "categorical":
                permitted[bound.name] = [(spec.categories or [])[i] for i in bound.allowed]
        kwargs: dict[str, Any] = {
            "total_CFs": total_cfs,
            "features_to_vary": [space.order[j] for j in space.varying],
            "permitted_range": permitted,
        }
        if desired.index is not None:
            kwargs["desired_class"] = desired.index
        else:
            kwargs["desired_range"] = [desired.low, desired.high]
        if self.method == "genetic":
            kwargs["maxiterations"] = GENETIC_MAX_ITERATIONS
        try:
            with GLOBAL_RNG_LOCK, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                random.seed(seed)
                np.random.seed(seed)
                result = self.explainer.generate_counterfactuals(query, **kwargs)
        except Exception as exc:  # dice-ml raises many types for "nothing found"; none reaches the client
            log.info("dice-ml %s found no counterfactual: %s", self.method, type(exc).__name__)
            return None
        frame = result.cf_examples_list[0].final_cfs_df
        return None if frame is None else frame[list(space.order)]

    @staticmethod
    def _to_matrix(codec: RowCodec, frame: pd.DataFrame) -> np.ndarray:
        records: list[dict[str, Any]] = frame.to_dict("records")  # type: ignore[assignment]
        rows = []
        for record in records:
            try:
                rows.append(codec.to_matrix([record])[0])
            except (KeyError, ValueError, TypeError):
                continue  # a value outside the model's categories: dropped like any violation
        return np.array(rows) if rows else np.empty((0, len(codec.order)))
