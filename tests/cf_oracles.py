"""Independent oracles for the issue-3 tests: counterfactual constraints, re-scoring, adverse-action reasons.

Nothing here imports Candor's counterfactual or reason code. The constraints of a feature are worked out
from the manifest as written (before registration completes it), the fitted Pipeline and the reference data,
following the contract: min/max from the manifest else the reference data; categories from the manifest else
the fitted OneHotEncoder; the effective step is the manifest's step, else 1 when every reference value is a
whole number, else none. Every returned counterfactual is re-scored with the fitted Pipeline itself.

Also here: the fixture models of these tests (a binary "credit" model with a monotone increasing and a
monotone decreasing feature, declared steps, an immutable and two protected features, a favourable class
that is index 0; plus a regression and a multiclass variant), the module-scoped app helper, and the SHAP
oracle for reasons. A plain module (not a conftest), importable because pyproject puts ``tests`` on
pytest's pythonpath.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from api.demo import clinical_model, loan_model
from api.http.app import create_app
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

PROBLEM = "application/problem+json"
NO_CF_REASONS = {
    "unreachable within the constraints",
    "budget exhausted",
    "none found by genetic (method random searches every number of changes)",
    "none found by kdtree (method random searches every number of changes)",
}
STATUSES = {"ok", "no_counterfactual", "already_desired"}
VOLATILE = ("id", "created_at", "timing_ms")


def cf_url(name: str, version: str = "1") -> str:
    return f"/v1/models/{name}/versions/{version}/explain/counterfactuals"


def reasons_url(name: str, version: str = "1") -> str:
    return f"/v1/models/{name}/versions/{version}/explain/reasons"


def native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: native(v) for k, v in row.items()} for row in frame.to_dict("records")]


# -- constraints of one feature, worked out independently ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    kind: str  # numeric | categorical
    mutable: bool
    protected: bool
    monotone: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    categories: tuple[Any, ...] = ()

    @property
    def varies(self) -> bool:
        """In the default features_to_vary: mutable and not protected."""
        return self.mutable and not self.protected


def encoder_categories(pipeline: Pipeline) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for _, step in pipeline.steps[:-1]:
        if isinstance(step, ColumnTransformer):
            for _, transformer, columns in step.transformers_:
                if isinstance(transformer, OneHotEncoder):
                    for column, cats in zip(columns, transformer.categories_, strict=True):
                        out[str(column)] = [native(c) for c in cats]
    return out


def feature_rules(manifest: dict[str, Any], pipeline: Pipeline, reference: pd.DataFrame) -> dict[str, Rule]:
    encoded = encoder_categories(pipeline)
    rules: dict[str, Rule] = {}
    for spec in manifest["features"]:
        name = spec["name"]
        common = {
            "name": name,
            "kind": spec["type"],
            "mutable": spec.get("mutable", True),
            "protected": spec.get("protected", False),
            "monotone": spec.get("monotone", "none"),
        }
        if spec["type"] == "numeric":
            column = reference[name].astype(float)
            step = spec.get("step")
            if step is None and bool((column == column.round()).all()):
                step = 1.0
            rules[name] = Rule(
                **common,
                low=float(spec.get("min", column.min())),
                high=float(spec.get("max", column.max())),
                step=step,
            )
        else:
            cats = spec.get("categories") or encoded.get(name) or sorted(reference[name].unique(), key=str)
            rules[name] = Rule(**common, categories=tuple(native(c) for c in cats))
    return rules


def numeric_window(rule: Rule, permitted: dict[str, Any]) -> tuple[float, float]:
    """Manifest min/max intersected with the request's permitted_range."""
    low, high = float(rule.low), float(rule.high)  # type: ignore[arg-type]
    if rule.name in permitted:
        low, high = max(low, float(permitted[rule.name][0])), min(high, float(permitted[rule.name][1]))
    return low, high


def allowed_categories(rule: Rule, permitted: dict[str, Any]) -> list[Any]:
    if rule.name in permitted:
        return [c for c in rule.categories if c in permitted[rule.name]]
    return list(rule.categories)


def on_grid(value: float, step: float) -> bool:
    k = value / step
    return abs(k - round(k)) <= 1e-9 * max(1.0, abs(k))


def same(rule: Rule, a: Any, b: Any) -> bool:
    if rule.kind == "numeric":
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9 * max(1.0, abs(float(a))))
    return str(a) == str(b)


def violations(
    query: dict[str, Any],
    cf: dict[str, Any],
    rules: dict[str, Rule],
    features_to_vary: Iterable[str],
    permitted: dict[str, Any],
) -> list[str]:
    """Every constraint the counterfactual ``cf`` of ``query`` breaks (empty when it keeps them all).

    Range, grid and category rules apply to the values a counterfactual changes; a value left as the query
    has it is not proposed by the counterfactual."""
    vary = set(features_to_vary)
    out = []
    if set(cf) != set(rules):
        out.append(f"features:{sorted(set(rules) ^ set(cf))}")
        return out
    for name, rule in rules.items():
        before, after = query[name], cf[name]
        if same(rule, before, after):
            continue
        if name not in vary:
            out.append(f"changed_outside_features_to_vary:{name}")
        if not rule.mutable:
            out.append(f"changed_immutable:{name}")
        if rule.protected:
            out.append(f"changed_protected:{name}")
        if rule.kind == "numeric":
            value = float(after)
            if not math.isfinite(value):
                out.append(f"not_finite:{name}")
                continue
            low, high = numeric_window(rule, permitted)
            tol = 1e-9 * max(1.0, abs(value))
            if not (low - tol <= value <= high + tol):
                out.append(f"outside_range:{name}={after} not in [{low}, {high}]")
            if rule.step is not None and not on_grid(value, rule.step):
                out.append(f"off_step_grid:{name}={after} step {rule.step}")
            if rule.monotone == "increasing" and value < float(before):
                out.append(f"monotone_decreased:{name} {before}->{after}")
            if rule.monotone == "decreasing" and value > float(before):
                out.append(f"monotone_increased:{name} {before}->{after}")
        elif after not in allowed_categories(rule, permitted):
            out.append(f"category_not_allowed:{name}={after!r}")
    return out


def diff(query: dict[str, Any], cf: dict[str, Any], rules: dict[str, Rule]) -> dict[str, tuple[Any, Any]]:
    return {n: (query[n], cf[n]) for n, rule in rules.items() if not same(rule, query[n], cf[n])}


# -- a registered model and everything the oracles need about it -----------------------------------------
@dataclasses.dataclass
class Subject:
    name: str
    manifest: dict[str, Any]
    pipeline: Pipeline
    reference: pd.DataFrame  # features only
    rules: dict[str, Rule]

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]]

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.manifest.get("classes", [])]

    @property
    def is_regression(self) -> bool:
        return self.manifest["task"] == "regression"

    @property
    def default_vary(self) -> list[str]:
        return [n for n in self.features if self.rules[n].varies]

    def frame(self, rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(list(rows), columns=self.features)
        for name in self.features:
            if self.rules[name].kind != "numeric":
                frame[name] = frame[name].astype(object)
        return frame

    def proba(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return self.pipeline.predict_proba(self.frame(rows))

    def predict_value(self, rows: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.asarray(self.pipeline.predict(self.frame(rows)), dtype=float)

    def reaches(self, rows: Sequence[dict[str, Any]], desired: Any) -> np.ndarray:
        """Whether each row, re-scored, is the desired class (argmax) or lies in the desired range."""
        if self.is_regression:
            values = self.predict_value(rows)
            return (values >= desired[0]) & (values <= desired[1])
        proba = self.proba(rows)
        return np.asarray([self.classes[k] for k in proba.argmax(axis=1)]) == desired

    def label_rows(self, desired_label: str, predicted: bool, limit: int) -> list[dict[str, Any]]:
        """Reference rows predicted as ``desired_label`` (``predicted=True``) or as any other class."""
        proba = self.pipeline.predict_proba(self.reference)
        labels = np.asarray(self.classes)[proba.argmax(axis=1)]
        picked = np.flatnonzero((labels == desired_label) == predicted)[:limit]
        return records(self.reference.iloc[picked])


def check_prediction(subject: Subject, prediction: dict[str, Any], row: dict[str, Any]) -> None:
    """``prediction`` is the pipeline's own output on ``row`` (probabilities to 1e-9)."""
    if subject.is_regression:
        assert prediction["value"] == pytest_approx(subject.predict_value([row])[0]), (prediction, row)
        return
    proba = subject.proba([row])[0]
    assert set(prediction["probabilities"]) == set(subject.classes), prediction
    got = [prediction["probabilities"][c] for c in subject.classes]
    np.testing.assert_allclose(got, proba, rtol=0, atol=1e-9, err_msg=f"{prediction} for {row}")
    assert prediction["label"] == subject.classes[int(np.argmax(proba))], (prediction, row)


def pytest_approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-9, rel=1e-12)


@dataclasses.dataclass
class CfRequest:
    """What the oracle needs to know about one counterfactual request."""

    features_to_vary: list[str]
    permitted: dict[str, Any]
    desired: Any  # a class label or a [lo, hi] range
    total_cfs: int


def effective_request(subject: Subject, body: dict[str, Any]) -> CfRequest:
    if subject.is_regression:
        desired: Any = list(body["desired_range"])
    else:
        desired = body.get("desired_class") or subject.manifest["favourable_class"]
    return CfRequest(
        features_to_vary=list(dict.fromkeys(body.get("features_to_vary") or subject.default_vary)),
        permitted=dict(body.get("permitted_range") or {}),
        desired=desired,
        total_cfs=int(body.get("total_cfs", 4)),
    )


def check_constraints_block(subject: Subject, block: dict[str, Any], request: CfRequest) -> None:
    """The result's ``constraints``: the effective features_to_vary and the bounds that applied to them."""
    assert sorted(block["features_to_vary"]) == sorted(request.features_to_vary), block
    bounds = block["bounds"]
    for name in request.features_to_vary:
        rule = subject.rules[name]
        assert name in bounds, (name, bounds)
        got = bounds[name]
        if rule.kind == "numeric":
            low, high = numeric_window(rule, request.permitted)
            step = rule.step
            snapped_low = math.ceil(low / step - 1e-9) * step if step else low
            snapped_high = math.floor(high / step + 1e-9) * step if step else high
            assert any(math.isclose(got["min"], v, abs_tol=1e-9) for v in (low, snapped_low)), (name, got)
            assert any(math.isclose(got["max"], v, abs_tol=1e-9) for v in (high, snapped_high)), (name, got)
            assert got.get("step") == (None if step is None else pytest_approx(step)), (name, got)
            assert got.get("monotone", "none") == rule.monotone, (name, got)
        else:
            assert sorted(map(str, got["categories"])) == sorted(
                map(str, allowed_categories(rule, request.permitted))
            ), (name, got)


def check_result(
    subject: Subject, result: dict[str, Any], query: dict[str, Any], request: CfRequest
) -> list[dict[str, Any]]:
    """Every guarantee of one counterfactual result; returns its counterfactuals."""
    assert result["status"] in STATUSES, result
    assert_rows_equal(subject, result["instance"], query)
    check_prediction(subject, result["prediction"], query)
    cfs = result["counterfactuals"]
    if bool(subject.reaches([query], request.desired)[0]):
        assert result["status"] == "already_desired", (result["status"], query)
        assert cfs == []
        return cfs
    assert result["status"] != "already_desired", result["prediction"]
    if "constraints" in result:  # required on ok results too: test_searched_results_state_their_constraints
        check_constraints_block(subject, result["constraints"], request)
    if result["status"] == "no_counterfactual":
        assert "constraints" in result, result
        assert cfs == [], result
        assert result["reason"] in NO_CF_REASONS, result.get("reason")
        return cfs
    assert 1 <= len(cfs) <= request.total_cfs, (len(cfs), request.total_cfs)
    reached = subject.reaches([cf["instance"] for cf in cfs], request.desired)
    for cf, ok in zip(cfs, reached, strict=True):
        row = cf["instance"]
        broken = violations(query, row, subject.rules, request.features_to_vary, request.permitted)
        assert broken == [], (broken, query, row)
        assert bool(ok), ("not the desired outcome when re-scored", request.desired, row, cf["prediction"])
        check_prediction(subject, cf["prediction"], row)
        expected = diff(query, row, subject.rules)
        got = {c["feature"]: (c["from"], c["to"]) for c in cf["changes"]}
        assert len(got) == len(cf["changes"]), cf["changes"]
        assert set(got) == set(expected), (cf["changes"], expected)
        for name, (before, after) in got.items():
            rule = subject.rules[name]
            assert same(rule, before, expected[name][0]) and same(rule, after, expected[name][1]), got
        assert expected, "a counterfactual changes something"
        assert cf["valid"] is True and cf["constraints_ok"] is True, cf
    metrics = result["metrics"]
    assert metrics["found"] == len(cfs) and metrics["requested"] == request.total_cfs, metrics
    assert metrics["validity"] == 1.0, metrics
    sparsity = sum(len(cf["changes"]) for cf in cfs) / len(cfs)
    assert metrics["sparsity"] == pytest_approx(sparsity), metrics
    return cfs


def check_envelope(
    subject: Subject, envelope: dict[str, Any], body: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    """The whole counterfactual envelope for ``body``; returns the counterfactuals per instance."""
    request = effective_request(subject, body)
    assert envelope["kind"] == "counterfactual"
    assert envelope["method"]["name"] == "counterfactuals"
    assert envelope["method"]["algorithm"] == body.get("method", "random")
    params = envelope["method"]["params"]
    assert params["total_cfs"] == request.total_cfs
    assert sorted(params["features_to_vary"]) == sorted(request.features_to_vary)
    if "seed" in body:
        assert params["seed"] == body["seed"]
    if subject.is_regression:
        assert envelope["output"] == {"desired": {"range": request.desired}}
    else:
        assert envelope["output"] == {"desired": {"class": request.desired}}
    assert len(envelope["results"]) == len(body["instances"])
    found = [
        check_result(subject, result, query, request)
        for result, query in zip(envelope["results"], body["instances"], strict=True)
    ]
    assert envelope["quality"]["returned"] == sum(len(f) for f in found), envelope["quality"]
    return found


def assert_rows_equal(subject: Subject, got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert set(got) == set(expected), (got, expected)
    for name, value in expected.items():
        assert same(subject.rules[name], got[name], value), (name, got[name], value)


def without_volatile(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope without its id, created_at and timings (also a result's own ``search.elapsed_ms``)."""
    out = {k: v for k, v in envelope.items() if k not in VOLATILE}
    out["results"] = [
        {**r, "search": {k: v for k, v in r["search"].items() if k != "elapsed_ms"}} if "search" in r else r
        for r in envelope["results"]
    ]
    return out


# -- SHAP oracle for reasons ----------------------------------------------------------------------------
def raw_owner_of_columns(pipeline: Pipeline, features: list[str]) -> list[str]:
    """The raw feature behind each column the final estimator reads (one-hot columns map back to theirs)."""
    (_, prep), *rest = pipeline.steps[:-1]
    assert not rest and isinstance(prep, ColumnTransformer)
    owners: list[str] = []
    for _, transformer, columns in prep.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        names = [prep.feature_names_in_[c] if isinstance(c, int | np.integer) else c for c in columns]
        if isinstance(transformer, OneHotEncoder):
            assert transformer.drop_idx_ is None
            for column, cats in zip(names, transformer.categories_, strict=True):
                owners += [str(column)] * len(cats)
        else:
            owners += [str(c) for c in names]
    assert len(owners) == len(prep.get_feature_names_out())
    assert set(owners) == set(features)
    return owners


def shap_toward(subject: Subject, rows: Sequence[dict[str, Any]], label: str) -> list[dict[str, float]]:
    """Per raw feature, TreeSHAP log-odds attributions toward class ``label`` (one-hot columns summed)."""
    import shap

    pipeline = subject.pipeline
    encoded = pipeline[:-1].transform(subject.frame(rows))
    encoded = encoded.toarray() if hasattr(encoded, "toarray") else np.asarray(encoded, dtype=float)
    values = np.asarray(shap.TreeExplainer(pipeline[-1]).shap_values(encoded), dtype=float)
    assert values.ndim == 2, "binary GBC: one log-odds output, for classes_[1]"
    sign = 1.0 if subject.classes.index(label) == 1 else -1.0
    owners = np.asarray(raw_owner_of_columns(pipeline, subject.features))
    return [
        {f: sign * float(values[i, owners == f].sum()) for f in subject.features} for i in range(len(rows))
    ]


# -- fixture models ------------------------------------------------------------------------------------
CREDIT_CATEGORICAL = {
    "plan": ["basic", "plus", "premium"],
    "region": ["east", "north", "south", "west"],
    "gender": ["f", "m", "x"],
}
CREDIT_REASONS = {
    "tenure": {"code": "T01", "text": "Time with us is short."},
    "debt": {"code": "D02", "text": "Outstanding debt is high."},
    "rate": {"code": "R03", "text": "Interest rate band is high."},
    "plan": {"code": "P04", "text": "Current plan tier."},
    "age": {"code": "A05", "text": "Age (protected; never a reason)."},
}


def credit_frame(n: int = 500, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(0, 31, n),  # whole years, no declared step: effective step 1
            "debt": (rng.integers(0, 101, n) * 50).astype(float),  # declared step 50
            "rate": rng.integers(4, 37, n) * 0.25,  # declared step 0.25, declared min/max wider than data
            "balance": rng.normal(1000.0, 300.0, n).round(2),  # continuous
            "plan": pd.Series(rng.choice(CREDIT_CATEGORICAL["plan"], n), dtype=object),
            "region": pd.Series(rng.choice(CREDIT_CATEGORICAL["region"], n), dtype=object),
            "gender": pd.Series(rng.choice(CREDIT_CATEGORICAL["gender"], n), dtype=object),
            "age": rng.integers(18, 76, n),
        }
    )
    return frame


def credit_score(frame: pd.DataFrame, seed: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    plan = frame["plan"].map({"basic": -1.0, "plus": 0.0, "premium": 1.0}).to_numpy()
    region = frame["region"].map({"east": 0.4, "north": 0.0, "south": -0.4, "west": 0.2}).to_numpy()
    gender = frame["gender"].map({"f": 0.3, "m": -0.3, "x": 0.0}).to_numpy()
    return (
        0.12 * (frame["tenure"] - 15)
        - 0.0007 * (frame["debt"] - 2500)
        - 0.35 * (frame["rate"] - 5)
        + 0.002 * (frame["balance"] - 1000)
        + plan
        + region
        + gender
        + 0.03 * (frame["age"] - 45)
        + rng.normal(0.0, 0.6, len(frame))
    ).to_numpy()


def credit_specs() -> list[dict[str, Any]]:
    return [
        {"name": "tenure", "type": "numeric", "monotone": "increasing"},
        {"name": "debt", "type": "numeric", "monotone": "decreasing", "step": 50.0},
        {"name": "rate", "type": "numeric", "step": 0.25, "min": 0.5, "max": 12.0},
        {"name": "balance", "type": "numeric"},
        {"name": "plan", "type": "categorical"},
        {"name": "region", "type": "categorical", "mutable": False},
        {"name": "gender", "type": "categorical", "protected": True},  # mutable by default, yet protected
        {"name": "age", "type": "numeric", "protected": True, "mutable": False, "monotone": "increasing"},
    ]


def _credit_pipeline(estimator: Any) -> Pipeline:
    prep = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), list(CREDIT_CATEGORICAL)),
            ("numeric", "passthrough", ["tenure", "debt", "rate", "balance", "age"]),
        ]
    )
    return Pipeline([("prep", prep), ("model", estimator)])


@cache
def credit_model(task: str = "binary") -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    """(manifest, fitted pipeline, reference frame with the target) for the binary, multiclass or
    regression variant of the fixture credit model."""
    frame = credit_frame()
    score = credit_score(frame)
    manifest: dict[str, Any] = {"name": f"credit-{task}", "features": credit_specs(), "target": "outcome"}
    if task == "regression":
        target: Any = score.round(4)
        estimator: Any = GradientBoostingRegressor(n_estimators=60, max_depth=3, random_state=0)
        manifest["task"] = "regression"
    elif task == "multiclass":
        target = np.where(score < -1.0, "low", np.where(score > 1.0, "high", "mid")).astype(object)
        estimator = GradientBoostingClassifier(n_estimators=40, max_depth=2, random_state=0)
        manifest.update(task="multiclass_classification", classes=["high", "low", "mid"])
    else:
        # "approve" sorts first: the favourable class is index 0, not the usual positive class.
        target = np.where(score > 0, "approve", "deny").astype(object)
        estimator = GradientBoostingClassifier(n_estimators=60, max_depth=3, random_state=0)
        manifest.update(
            task="binary_classification",
            classes=["approve", "deny"],
            favourable_class="approve",
            reasons=CREDIT_REASONS,
        )
    pipeline = _credit_pipeline(estimator).fit(frame, target)
    return manifest, pipeline, frame.assign(outcome=target)


@cache
def demo_model(name: str) -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    return {"loan": loan_model, "clinical": clinical_model}[name]()


def subject_for(name: str, app: Flask) -> Subject:
    """The oracle's view of a registered model: the manifest as written, the registered pipeline."""
    if name in ("loan", "clinical"):
        manifest, _, data = demo_model(name)
        reference = data.drop(columns=[manifest["target"]])
    else:
        manifest, _, data = credit_model(name.removeprefix("credit-"))
        reference = data.drop(columns=[manifest["target"]])
    registry = app.extensions["candor"].store.registry
    pipeline = registry.load(registry.resolve(name, "1")).estimator
    return Subject(name, manifest, pipeline, reference, feature_rules(manifest, pipeline, reference))


# -- apps ----------------------------------------------------------------------------------------------
def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclasses.dataclass
class Served:
    app: Flask
    client: FlaskClient
    auth: dict[str, str]
    writer: dict[str, str]


def serve(app: Flask) -> Served:
    """A client with an explain key and a models:write key for ``app``."""
    keys = app.extensions["candor"].store.keys
    return Served(
        app,
        app.test_client(),
        bearer(keys.create("cf-explain", ["explain"])[0]),
        bearer(keys.create("cf-write", ["models:write"])[0]),
    )


@contextmanager
def served_copy(root: Path, demo_dir: Path, **settings: Any) -> Iterator[Served]:
    """An app over a fresh copy of the demo data dir under ``root`` (SQLite unless overridden)."""
    data = root / "data"
    shutil.copytree(demo_dir, data)
    app = create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}", **settings})
    try:
        yield serve(app)
    finally:
        app.extensions["candor"].store.close()


def register_over_http(served: Served, task: str) -> str:
    manifest, pipeline, reference = credit_model(task)
    name = manifest["name"]
    response = served.client.post(
        f"/v1/models/{name}/versions",
        headers=served.writer,
        content_type="multipart/form-data",
        data={
            "manifest": json.dumps(manifest),
            "artifact": (io.BytesIO(dump_skops(pipeline)), "model.skops"),
            "reference": (io.BytesIO(to_parquet(reference)), "reference.parquet"),
        },
    )
    assert response.status_code == 201, response.get_json()
    return name


def post(served: Served, url: str, body: Any) -> Any:
    return served.client.post(url, json=body, headers=served.auth)


def ok_json(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, (response.status_code, response.get_data(as_text=True)[:2000])
    return response.get_json()


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem; ``field`` must be named in ``errors`` (itself or a dotted child of it)."""
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert {"type", "title", "status", "instance"} <= body.keys(), body
    assert body["status"] == status
    text = json.dumps(body)
    assert "Traceback" not in text and "site-packages" not in text, text
    if field is not None:
        errors = body.get("errors", {})
        named = [k for k in errors if k == field or k.startswith(field + ".")]
        assert named, (field, body)
        assert all(isinstance(m, str) and m for k in named for m in errors[k]), body
    return body
