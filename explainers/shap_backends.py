"""The four SHAP algorithms behind one small interface, each returning per-raw-feature attributions.

A backend answers ``run(records) -> (values, base)`` with ``values`` shaped (rows, raw features, outputs)
and ``base`` shaped (rows, outputs), where outputs are the model's classes (or one column for regressors)
in one resolved output space. Tree and linear backends work on the encoded matrix and sum encoded columns
back to raw features; permutation and kernel work on raw features directly.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any

import numpy as np
import shap

from explainers.batched_permutation import permutation_shap
from explainers.path_table import PathTable, TableTooLarge
from explainers.raw_codec import RawCodec
from model_store.errors import InvalidInput
from model_store.tabular import TabularModel
from model_store.tabular.formats.boosters import BoosterRuntime, native_runtime
from model_store.tabular.formats.codes import reads_manifest_codes

ALGORITHMS = ("tree", "linear", "permutation", "kernel")
BACKGROUND_SEED = 0
KERNEL_BACKGROUND_ROWS = 50
TABLE_CHECK_ROWS = 100
TABLE_TOLERANCE = 1e-9
NATIVE_TABLE_TOLERANCE = 1e-5
"""The table against a booster's own float32 contributions, per row (``_within_float32``)."""
MISSING_CHECK_ROWS = 20
GLOBAL_RNG_LOCK = threading.Lock()
"""shap's permutation and kernel explainers draw from NumPy's global generator; runs hold this lock."""


class Unsupported(Exception):
    """This algorithm cannot give exact attributions for this model in this output space."""


def background(model: TabularModel, rows: int) -> Any:
    """A fixed, seeded sample of the reference rows (the same for every request on a version)."""
    reference = model.reference
    if len(reference) <= rows:
        return reference
    return reference.sample(n=rows, random_state=BACKGROUND_SEED)


class Backend:
    algorithm: str
    stochastic = False
    libraries: tuple[str, ...] = ("shap", "scikit-learn", "numpy")
    relative_tolerance = 1e-6
    """How far (relative to the outputs' magnitude) attributions may miss the model's output."""

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        self.model = model
        self.space = space
        self.background_rows = background_rows

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {}


def _as_outputs(
    model: TabularModel, space: str, values: Any, base: Any, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """shap's layouts ((n,f), (n,f,k), scalar or per-class base) as (n,f,k) values and (n,k) base."""
    values = np.asarray(values, dtype=float)
    base = np.asarray(base, dtype=float).reshape(-1) if np.ndim(base) <= 1 else np.asarray(base, dtype=float)
    if values.ndim == 2:
        values = values[:, :, None]
    if base.ndim == 1:
        base = np.broadcast_to(base, (n_rows, base.shape[0])).copy()
    n_classes = len(model.classes) if model.is_classifier else 1
    if values.shape[2] == 1 and n_classes == 2:
        # One output for a binary model is class 1; class 0 is its complement in the same space.
        offset = 1.0 if space == "probability" else 0.0
        values = np.concatenate([-values, values], axis=2)
        base = np.column_stack([offset - base[:, 0], base[:, 0]])
    if values.shape[2] != n_classes or base.shape[1] != n_classes:
        raise Unsupported("unexpected output layout")
    return values, base


class _EncodedBackend(Backend):
    """Explains the final estimator on the encoded matrix, then sums columns per raw feature."""

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        super().__init__(model, space, background_rows)
        mapping = model.parts.encoded_to_raw
        if mapping is None:
            raise Unsupported("the preprocessing cannot be mapped back to raw features")
        self.mapping = mapping
        """The raw feature of each encoded column."""
        self.regroup = np.zeros((len(mapping), len(model.feature_order)))
        self.regroup[np.arange(len(mapping)), mapping] = 1.0

    def _regrouped(self, values: np.ndarray, base: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        values3, base2 = _as_outputs(self.model, self.space, values, base, n)
        return np.matmul(values3.transpose(0, 2, 1), self.regroup).transpose(0, 2, 1), base2


class TreeBackend(_EncodedBackend):
    algorithm = "tree"

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        super().__init__(model, space, background_rows)
        estimator = model.parts.estimator
        try:
            if space == model.resolve_space("raw"):
                self.explainer = shap.TreeExplainer(estimator)
                self.perturbation = "tree_path_dependent"
            elif space == "probability":
                data = model.encode(background(model, background_rows).to_dict("records"))
                self.explainer = shap.TreeExplainer(
                    estimator, data=data, feature_perturbation="interventional", model_output="probability"
                )
                self.perturbation = "interventional"
            else:
                raise Unsupported(f"no tree explainer for {space}")
        except (shap.utils._exceptions.InvalidModelError, NotImplementedError, TypeError, ValueError) as exc:
            raise Unsupported(str(exc)) from exc
        self.table = self._verified_table() if self.perturbation == "tree_path_dependent" else None

    def _verified_table(self) -> PathTable | None:
        """The tabulated TreeSHAP, used only if it reproduces shap on the reference rows."""
        try:
            mapping, n_features = self.model.parts.encoded_to_raw, len(self.model.feature_order)
            table = PathTable(self.explainer.model, mapping, n_features)
            rows = self.model.encode(self.model.reference.head(TABLE_CHECK_ROWS).to_dict("records"))
            expected = self._shap(rows)
            got, _ = _as_outputs(
                self.model, self.space, table.shap_values(rows), self.explainer.expected_value, len(rows)
            )
        except TableTooLarge:
            return None
        scale = 1.0 + float(np.abs(expected).max())
        return table if float(np.abs(got - expected).max()) <= TABLE_TOLERANCE * scale else None

    def _shap(self, encoded: np.ndarray) -> np.ndarray:
        values = self.explainer.shap_values(encoded, check_additivity=False)
        return self._regrouped(values, self.explainer.expected_value, len(encoded))[0]

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.table is not None:
            try:
                values = self.table.shap_values(encoded)
                return _as_outputs(
                    self.model, self.space, values, self.explainer.expected_value, len(encoded)
                )
            except TableTooLarge:
                pass
        values = self.explainer.shap_values(encoded, check_additivity=False)
        return self._regrouped(values, self.explainer.expected_value, len(encoded))

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"feature_perturbation": self.perturbation}
        if self.perturbation == "tree_path_dependent":
            params["implementation"] = "path_table" if self.table is not None else "shap"
        if self.perturbation == "interventional":
            params["background_rows"] = min(self.background_rows, len(self.model.reference))
            params["background_seed"] = BACKGROUND_SEED
        return params


class NativeTreeBackend(_EncodedBackend):
    """Exact TreeSHAP of an XGBoost or LightGBM booster, in its margin space: the tabulated TreeSHAP when it
    reproduces the booster's own contributions (``pred_contribs``) on reference rows, missing values
    included, else those contributions."""

    algorithm = "tree"
    relative_tolerance = 1e-4
    """The boosters compute in float32."""

    def __init__(
        self, model: TabularModel, space: str, background_rows: int, runtime: BoosterRuntime
    ) -> None:
        super().__init__(model, space, background_rows)
        if space != model.resolve_space("raw"):
            raise Unsupported(f"the booster's contributions are in its margin, not {space}")
        self.runtime = runtime
        self.libraries = (_distribution(runtime.library), "scikit-learn", "numpy")
        self.table, self.base = self._verified_table()

    def _verified_table(self) -> tuple[PathTable | None, np.ndarray]:
        """The table and the booster's bias per output (the same for every row), or no table."""
        missing = self._missing_columns()
        rows = self._check_rows(missing)
        contributions = self.runtime.contributions(rows)  # (rows, outputs, encoded + 1)
        bias = contributions[:, :, -1]
        expected, _ = self._booster_values(contributions)
        if not np.all(bias == bias[:1]) or (trees := self.runtime.trees(missing)) is None:
            return None, bias[0]
        try:
            ensemble = shap.TreeExplainer(trees).model
            ensemble.input_dtype = self.runtime.input_dtype  # compared as the booster compares (float32)
            n_features = len(self.model.feature_order)
            table = PathTable(ensemble, self.mapping, n_features, missing_follows_default=True)
            values = table.shap_values(rows, in_blocks=False)  # (a warm-up thread must not make the pool)
            got, _ = _as_outputs(self.model, self.space, values, bias[0], len(rows))
            offset = np.asarray(ensemble.base_offset, dtype=float).reshape(-1)
            trees_bias = bias - (offset if offset.size in (1, bias.shape[1]) else 0.0)
        except Exception:  # shap cannot read or tabulate it: the booster's own contributions
            return None, bias[0]
        return (table if _within_float32(got, expected, trees_bias) else None), bias[0]

    def _missing_columns(self) -> list[int]:
        """The encoded columns a missing value can reach (those of features declared ``missing``)."""
        missing = {spec.name for spec in self.model.manifest.features if spec.missing}
        raw = self.model.feature_order
        return [c for c, f in enumerate(self.mapping) if raw[f] in missing]

    def _check_rows(self, columns: list[int]) -> np.ndarray:
        """Reference rows, and copies of the first with each of ``columns`` set missing (NaN)."""
        reference = self.model.reference.head(TABLE_CHECK_ROWS).to_dict("records")
        rows = self.model.encode(reference)
        variants = [rows]
        for missing in [[c] for c in columns] + ([columns] if len(columns) > 1 else []):
            variant = rows[:MISSING_CHECK_ROWS].copy()
            variant[:, missing] = np.nan
            variants.append(variant)
        return np.vstack(variants)

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.table is None:
            return self._booster_values(self.runtime.contributions(encoded))
        return _as_outputs(self.model, self.space, self.table.shap_values(encoded), self.base, len(encoded))

    def _booster_values(self, contributions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The booster's own contributions (rows, outputs, encoded + 1) per raw feature, and its bias."""
        values = contributions[:, :, :-1].transpose(0, 2, 1)
        return self._regrouped(values, contributions[:, :, -1], len(contributions))

    def params(self) -> dict[str, Any]:
        implementation = "path_table" if self.table is not None else self.runtime.implementation
        return {"feature_perturbation": "tree_path_dependent", "implementation": implementation}


def _within_float32(got: np.ndarray, expected: np.ndarray, trees_bias: np.ndarray) -> bool:
    """Each row's attributions (rows, features, outputs) within ``NATIVE_TABLE_TOLERANCE`` of the booster's,
    relative to the largest term its trees add up: its contributions and the trees' share of the bias (the
    bias without the booster's base score, which no tree computes). Float32 sums lose precision in
    proportion to their terms, so a row of small attributions is held to its own scale."""
    terms = np.maximum(np.abs(expected).max(axis=1), np.abs(trees_bias))  # (rows, outputs)
    scale = np.maximum(terms.max(axis=1), np.finfo(np.float32).tiny)  # per row
    error = np.abs(got - expected).max(axis=(1, 2))
    return bool(np.all(error <= NATIVE_TABLE_TOLERANCE * scale))


def _distribution(library: str) -> str:
    """The installed distribution of a library (XGBoost is also shipped as ``xgboost-cpu``)."""
    for name in (f"{library}-cpu", library):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return library


def tree_backend(model: TabularModel, space: str, background_rows: int) -> Backend:
    """The booster's own TreeSHAP for XGBoost and LightGBM models in their margin space, else shap's."""
    runtime = native_runtime(model.parts.estimator)
    if runtime is not None and space == model.resolve_space("raw"):
        return NativeTreeBackend(model, space, background_rows, runtime)
    return TreeBackend(model, space, background_rows)


class LinearBackend(_EncodedBackend):
    algorithm = "linear"

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        super().__init__(model, space, background_rows)
        if space != model.resolve_space("raw") or space == "probability":
            raise Unsupported("linear SHAP explains the model's margin only")
        data = model.encode(background(model, background_rows).to_dict("records"))
        try:
            self.explainer = shap.LinearExplainer(model.parts.estimator, data)
        except (shap.utils._exceptions.InvalidModelError, TypeError, ValueError, AttributeError) as exc:
            raise Unsupported(str(exc)) from exc

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        values = self.explainer.shap_values(encoded)
        return self._regrouped(values, self.explainer.expected_value, len(encoded))

    def params(self) -> dict[str, Any]:
        return {
            "background_rows": min(self.background_rows, len(self.model.reference)),
            "background_seed": BACKGROUND_SEED,
        }


class _AgnosticBackend(Backend):
    """Model-agnostic explainers over raw features (categories as indices), in any output space."""

    stochastic = True

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        super().__init__(model, space, background_rows)
        self.codec = RawCodec(model)
        self.background = self.codec.encode(background(model, background_rows))
        self.direct = reads_manifest_codes(model.estimator)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        if self.direct:  # a standalone model reads this very matrix: no round trip through a frame
            return self.model.output_matrix(self.space, matrix)
        return self.model.output_from_frame(self.space, self.codec.decode(matrix))

    def params(self) -> dict[str, Any]:
        return {"background_rows": len(self.background), "background_seed": BACKGROUND_SEED}


class PermutationBackend(_AgnosticBackend):
    algorithm = "permutation"

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = self.codec.encode(self.model.frame(records))
        n_features = rows.shape[1]
        evals = max(max_evals, 2 * n_features + 1)
        if self.model.calls_are_round_trips:
            values, base = permutation_shap(self.predict_codes, rows, self.background, evals, seed)
            return _as_outputs(self.model, self.space, values, base, len(rows))
        masker = shap.maskers.Independent(self.background, max_samples=len(self.background))
        with GLOBAL_RNG_LOCK:
            explainer = shap.PermutationExplainer(self.predict, masker, seed=seed)
            result = explainer(rows, max_evals=evals, silent=True)
        values, base = _as_outputs(self.model, self.space, result.values, result.base_values, len(rows))
        return values, base

    def predict_codes(self, matrix: np.ndarray) -> np.ndarray:
        """``predict`` for a model behind the manifest's codes (``formats.codes``: a remote model), which
        reads this matrix as it is (categories as their index, in manifest order)."""
        return self.model.output_matrix(self.space, matrix)

    def params(self) -> dict[str, Any]:
        params = super().params()
        if self.model.calls_are_round_trips:
            params["implementation"] = "batched"
        return params


class KernelBackend(_AgnosticBackend):
    algorithm = "kernel"

    def __init__(self, model: TabularModel, space: str, background_rows: int) -> None:
        super().__init__(model, space, background_rows)
        summary = self.background
        if len(summary) > KERNEL_BACKGROUND_ROWS:
            summary = shap.sample(summary, KERNEL_BACKGROUND_ROWS, random_state=BACKGROUND_SEED)
        self.summary = summary
        self.explainer = shap.KernelExplainer(self.predict, summary)

    def run(
        self, records: Sequence[dict[Any, Any]], encoded: np.ndarray, seed: int, max_evals: int
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = self.codec.encode(self.model.frame(records))
        with GLOBAL_RNG_LOCK:
            np.random.seed(seed)
            values = self.explainer.shap_values(rows, nsamples=max_evals, silent=True)
        return _as_outputs(self.model, self.space, values, self.explainer.expected_value, len(rows))

    def params(self) -> dict[str, Any]:
        return {"background_rows": len(self.summary), "background_seed": BACKGROUND_SEED}


BACKENDS: dict[str, Callable[[TabularModel, str, int], Backend]] = {
    "tree": tree_backend,
    "linear": LinearBackend,
    "permutation": PermutationBackend,
    "kernel": KernelBackend,
}


def default_space(model: TabularModel, algorithm: str) -> str:
    """Tree and linear SHAP explain the model's own margin; model-agnostic SHAP explains probabilities."""
    if not model.is_classifier:
        return "raw"
    return model.resolve_space("raw") if algorithm in ("tree", "linear") else "probability"


def check_algorithm(name: str) -> str:
    if name not in ALGORITHMS:
        raise InvalidInput.field("algorithm", f"Choose auto or one of {', '.join(ALGORITHMS)}.")
    return name
