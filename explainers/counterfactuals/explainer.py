"""Counterfactual recourse for tabular models: what would have to change to reach the desired outcome.

Candidates come from Candor's vectorised random search or from dice-ml (genetic, kdtree). Whatever their
source, every candidate is repaired onto the constraints, re-checked, re-scored by the registered model,
walked back towards the query while it stays valid, and only then chosen; a counterfactual that breaks a
constraint or misses the desired outcome is dropped, never returned.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from explainers.base import NO_LIMITS, Explainer
from explainers.counterfactuals.checks import repair, satisfied
from explainers.counterfactuals.dice_search import GENETIC_MAX_ITERATIONS, DiceSearch
from explainers.counterfactuals.random_search import BATCH, first_rounds, random_search, select, take_back
from explainers.counterfactuals.rows import Desired, Distance, RowCodec, Scorer, Scoring
from explainers.counterfactuals.space import SearchSpace
from explainers.envelope import Explanation, MethodInfo, ModelRef, library_versions
from explainers.rows import Rows, tabular
from model_store.errors import InvalidInput
from model_store.predictors.answers import room_for_answers
from model_store.tabular import TabularModel
from model_store.versions import VersionInfo

DEFAULTS: dict[str, Any] = {
    "total_cfs": 4,
    "desired_class": None,
    "desired_range": None,
    "features_to_vary": None,
    "permitted_range": None,
    "method": "random",
    "proximity_weight": 0.5,
    "diversity_weight": 1.0,
    "seed": 0,
    "budget_ms": 3000,
}
METHODS = ("random", "genetic", "kdtree")


class _Search:
    """Everything one request needs to search for one row after another."""

    def __init__(self, model: TabularModel, opts: dict[str, Any], deadline: float) -> None:
        self.model = model
        self.opts = opts
        self.deadline = deadline
        self.space = SearchSpace(model, opts["features_to_vary"], opts["permitted_range"])
        self.desired = desired_outcome(model, opts)
        self.codec = RowCodec(self.space)
        self.scorer = Scorer(model, self.codec, self.desired)
        self.distance = Distance(model, self.space)
        self.dropped = {"invalid": 0, "constraint_violations": 0}
        self.drawn: dict[int, tuple[list[np.ndarray], np.random.Generator]] = {}
        """Per row, the first rounds ``score_ahead`` drew and the generator that drew them."""

    def candidates(
        self, index: int, row: np.ndarray, record: dict[str, Any]
    ) -> Scoring[tuple[np.ndarray, bool]]:
        """Valid, constraint-satisfying candidates for one row, and whether the deadline cut the search."""
        seed, total = int(self.opts["seed"]), int(self.opts["total_cfs"])
        if self.opts["method"] == "random":
            drawn, rng = self.drawn.pop(index, ([], self.rng(index)))
            found = yield from random_search(self.space, row, self.scorer, total, rng, self.deadline, drawn)
            return found.candidates, found.timed_out
        method = self.opts["method"]
        dice = self.model.derived.get_or_load(("dice", method), partial(DiceSearch, self.model, method))
        raw, timed_out = dice.candidates(
            self.space, self.codec, record, self.desired, total, seed, self.deadline
        )
        return (yield from self.checked(row, repair(self.space, row, raw))), timed_out

    def rng(self, index: int) -> np.random.Generator:
        """Row ``index``'s random search draws from its own generator, seeded by the request's seed."""
        return np.random.default_rng([int(self.opts["seed"]), index])

    def score_ahead(self, matrix: np.ndarray) -> None:
        """For a remote model whose answers this explanation keeps (``model_store.predictors.answers``): the
        query rows and every row's first random-search rounds scored in one request, which the searches
        then find answered (the same draws, the same results: one request instead of three). Only when
        they fill at most half the room left for kept answers: else the query rows alone."""
        room = room_for_answers()
        if not self.model.calls_are_round_trips or room == 0:
            return
        if self.opts["method"] == "random" and self.space.varying:
            drawn = {}
            for i, row in enumerate(matrix):
                rng = self.rng(i)
                drawn[i] = (first_rounds(self.space, row, rng), rng)
            ahead = np.vstack([matrix, *(r for rounds, _ in drawn.values() for r in rounds)])
            if len(ahead) <= room // 2:  # room left for the walk back's rows
                self.drawn = drawn
                self.model.predict_encoded(ahead)
                return
        self.model.predict_encoded(matrix)

    def checked(self, row: np.ndarray, candidates: np.ndarray) -> Scoring[np.ndarray]:
        """Only candidates that change something, satisfy every constraint and reach the desired outcome."""
        kept, _outputs = yield from self.checked_scored(row, candidates)
        return kept

    def checked_scored(
        self, row: np.ndarray, candidates: np.ndarray
    ) -> Scoring[tuple[np.ndarray, np.ndarray]]:
        """``checked`` with the model's outputs for the kept candidates (scored once)."""
        candidates = candidates[(candidates != row).any(axis=1)] if len(candidates) else candidates
        ok = satisfied(self.space, row, candidates)
        self.dropped["constraint_violations"] += int((~ok).sum())
        candidates = candidates[ok]
        outputs = yield from self.scorer.score(candidates)
        valid = self.desired.reached(outputs)
        self.dropped["invalid"] += int((~valid).sum())
        return candidates[valid], outputs[valid]

    def explain_row(
        self, index: int, row: np.ndarray, record: dict[str, Any], outputs: np.ndarray
    ) -> Scoring[dict[str, Any]]:
        """One row's result (``search.rows_scored`` is filled in by ``explain``, which runs the searches)."""
        started = time.perf_counter()
        result: dict[str, Any] = {
            "instance": self.codec.to_records(row[None, :])[0],
            "prediction": self.model.describe_predictions(outputs[None, :])[0],
        }
        if self.desired.reached(outputs[None, :])[0]:
            return {
                **result,
                "status": "already_desired",
                "counterfactuals": [],
                "metrics": self.metrics(row, []),
            }
        timed_out = False
        chosen = np.empty((0, len(row)))
        scored = self.scorer.outputs(chosen)
        if self.space.varying:
            pool, timed_out = yield from self.candidates(index, row, record)
            refined = yield from take_back(self.space, row, pool, self.scorer, self.distance, self.deadline)
            pool = np.vstack([refined, pool])
            chosen = select(
                row,
                pool,
                self.distance,
                int(self.opts["total_cfs"]),
                float(self.opts["proximity_weight"]),
                float(self.opts["diversity_weight"]),
            )
            # the final guarantee, whatever the source; its outputs are the ones described
            chosen, scored = yield from self.checked_scored(row, chosen)
        counterfactuals = self.describe(row, chosen, scored)
        result.update(
            status="ok" if counterfactuals else "no_counterfactual",
            counterfactuals=counterfactuals,
            metrics=self.metrics(row, chosen, scored),
            search={"rows_scored": 0, "elapsed_ms": round((time.perf_counter() - started) * 1000, 3)},
        )
        result["constraints"] = self.space.describe()
        if not counterfactuals:
            result["reason"] = self.no_counterfactual_reason(timed_out)
        return result

    def no_counterfactual_reason(self, timed_out: bool) -> str:
        """Why nothing is returned; only the exhaustive-by-design random search may claim unreachability."""
        if timed_out:
            return "budget exhausted"
        if self.space.varying and self.opts["method"] != "random":
            return f"none found by {self.opts['method']} (method random searches every number of changes)"
        return "unreachable within the constraints"

    def describe(self, row: np.ndarray, chosen: np.ndarray, outputs: np.ndarray) -> list[dict[str, Any]]:
        """The chosen counterfactuals with the model's ``outputs`` for them."""
        if len(chosen) == 0:
            return []
        predictions = self.model.describe_predictions(outputs)
        valid = self.desired.reached(outputs)
        ok = satisfied(self.space, row, chosen)
        out = []
        for k, candidate in enumerate(chosen):
            changes = [
                {
                    "feature": self.space.order[j],
                    "from": self.codec.value(j, row[j]),
                    "to": self.codec.value(j, candidate[j]),
                }
                for j in np.flatnonzero(candidate != row).tolist()
            ]
            out.append(
                {
                    "instance": dict(
                        zip(
                            self.space.order,
                            (self.codec.value(j, x) for j, x in enumerate(candidate)),
                            strict=True,
                        )
                    ),
                    "changes": changes,
                    "prediction": predictions[k],
                    "valid": bool(valid[k]),
                    "constraints_ok": bool(ok[k]),
                }
            )
        return out

    def metrics(self, row: np.ndarray, chosen: Any, outputs: np.ndarray | None = None) -> dict[str, Any]:
        chosen = np.asarray(chosen, dtype=float).reshape(-1, len(row))
        requested = int(self.opts["total_cfs"])
        if len(chosen) == 0:
            return {
                "found": 0,
                "requested": requested,
                "validity": 0.0,
                "sparsity": None,
                "proximity": None,
                "diversity": None,
            }
        pairwise = self.distance.pairwise(chosen)
        upper = pairwise[np.triu_indices(len(chosen), k=1)]
        return {
            "found": len(chosen),
            "requested": requested,
            "validity": float(
                self.desired.reached(outputs if outputs is not None else self.scorer.outputs(chosen)).mean()
            ),
            "sparsity": float((chosen != row).sum(axis=1).mean()),
            "proximity": float(self.distance.to_row(row, chosen).mean()),
            "diversity": float(upper.mean()) if len(upper) else 0.0,
        }


def desired_outcome(model: TabularModel, opts: dict[str, Any]) -> Desired:
    """The outcome counterfactuals must reach, from ``desired_class`` or ``desired_range``."""
    if model.is_classifier:
        if opts["desired_range"] is not None:
            raise InvalidInput.field("desired_range", "Classification models take desired_class.")
        label = opts["desired_class"]
        if label is None:
            if len(model.classes) != 2:
                raise InvalidInput.field("desired_class", "Required for multiclass models.")
            label = model.manifest.favourable_class or model.classes[1]
        if label not in model.classes:
            raise InvalidInput.field(
                "desired_class", f"Unknown class; classes are {', '.join(model.classes)}."
            )
        return Desired(label=label, index=model.classes.index(label))
    if opts["desired_class"] is not None:
        raise InvalidInput.field("desired_class", "Regression models take desired_range.")
    bounds = opts["desired_range"]
    if bounds is None:
        raise InvalidInput.field("desired_range", "Required for regression models.")
    if bounds[0] > bounds[1]:
        raise InvalidInput.field("desired_range", "The lower end is greater than the upper end.")
    return Desired(low=float(bounds[0]), high=float(bounds[1]))


class CounterfactualExplainer(Explainer):
    name = "counterfactuals"
    kind = "counterfactual"

    def explain(
        self,
        info: VersionInfo,
        model: Any,
        rows: Rows,
        options: dict[str, Any],
        limits: Mapping[str, Any] = NO_LIMITS,
    ) -> Explanation:
        rows = tabular(rows)
        started = time.perf_counter()
        opts = {
            **DEFAULTS,
            **model.manifest.defaults.get("counterfactuals", {}),
            **{k: v for k, v in options.items() if v is not None},
        }
        if opts["method"] not in METHODS:
            raise InvalidInput.field("method", f"One of {', '.join(METHODS)}.")
        deadline = time.monotonic() + int(opts["budget_ms"]) / 1000
        records = rows.records
        search = _Search(model, opts, deadline)
        matrix = search.codec.to_matrix(records)
        search.score_ahead(matrix)
        outputs = search.scorer.outputs(matrix)
        searches = [search.explain_row(i, matrix[i], record, outputs[i]) for i, record in enumerate(records)]
        results, scored = search.scorer.run(searches, together=model.calls_are_round_trips)
        for result, rows_scored in zip(results, scored, strict=True):
            if "search" in result:
                result["search"]["rows_scored"] = rows_scored
        returned = [cf for r in results for cf in r["counterfactuals"]]
        return Explanation(
            kind=self.kind,
            model=ModelRef(info.name, info.version, info.artifact_sha256),
            method=MethodInfo(
                "counterfactuals",
                opts["method"],
                _params(opts, search),
                library_versions("dice-ml", "scikit-learn", "numpy"),
            ),
            output={"desired": search.desired.describe()},
            results=results,
            quality={
                "returned": len(returned),
                "validity": float(np.mean([cf["valid"] for cf in returned])) if returned else None,
                "constraint_violations_returned": sum(not cf["constraints_ok"] for cf in returned),
                "dropped": search.dropped,
            },
            timing_ms={"total": round((time.perf_counter() - started) * 1000, 3)},
        )


def _params(opts: dict[str, Any], search: _Search) -> dict[str, Any]:
    params = {
        "total_cfs": int(opts["total_cfs"]),
        "seed": int(opts["seed"]),
        "budget_ms": int(opts["budget_ms"]),
        "proximity_weight": float(opts["proximity_weight"]),
        "diversity_weight": float(opts["diversity_weight"]),
        "features_to_vary": [search.space.order[j] for j in search.space.varying],
        "permitted_range": opts["permitted_range"],
        "engine": "candor" if opts["method"] == "random" else "dice-ml",
    }
    if opts["method"] == "random":
        params["candidates_per_round"] = BATCH
    if opts["method"] == "genetic":
        params["max_iterations"] = GENETIC_MAX_ITERATIONS
    return params
