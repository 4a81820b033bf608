"""Every tabular method on the XGBoost and LightGBM demo models (``loan-xgb``: a standalone booster with
native categorical splits; ``loan-lgbm``: one-hot + LGBMClassifier in a skops Pipeline), counterfactuals
re-scored by the boosters themselves, and rows with missing values through every method."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import orjson
import pandas as pd
import pytest
import skops.io as sio
import tree_models as tm
import xgboost
from cf_oracles import Served, feature_rules, served_copy, violations

from api.demo import LOAN_TARGET, install_demos
from model_store.reference import to_parquet

DEMOS = ("loan-xgb", "loan-lgbm")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Iterator[Served]:
    with served_copy(tmp_path_factory.mktemp("trees"), demo_dir) as s:
        install_demos(s.app.extensions["candor"].store.registry, names=DEMOS)
        for library, build in (("lightgbm", tm.standalone), ("xgboost", tm.pipeline)):
            spec, artifact, data, _ = build(library, "binary", f"{library[:3]}-tiny")
            response = s.client.post(
                f"/v1/models/{spec['name']}/versions",
                headers=s.writer,
                content_type="multipart/form-data",
                data=tm.form(spec, artifact, data, "model"),
            )
            assert response.status_code == 201, response.get_json()
        yield s


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return response.get_json()


class Rescorer:
    """P(favourable class) from the stored artifact, called with the library directly (no Candor code)."""

    def __init__(self, served: Served, name: str) -> None:
        registry = served.app.extensions["candor"].store.registry
        info = registry.resolve(name, "production" if name in DEMOS else "1")
        self.manifest = ok(
            served.client.get(f"/v1/models/{name}/versions/{info.version}", headers=served.auth)
        )["manifest"]
        files = registry.files(info)
        self.fmt = self.manifest.get("format", "skops")
        self.favourable = self.manifest["classes"].index(self.manifest["favourable_class"])
        artifact = files[{"xgboost": "model.ubj", "lightgbm": "model.txt", "skops": "model.skops"}[self.fmt]]
        if self.fmt == "xgboost":
            self.model: Any = xgboost.Booster()
            self.model.load_model(bytearray(artifact))
        elif self.fmt == "lightgbm":
            self.model = lightgbm.Booster(model_str=artifact.decode())
        else:
            self.model = sio.loads(artifact, trusted=sio.get_untrusted_types(data=artifact))
        self.pipeline = registry.load(info).estimator
        self.reference = registry.load(info).reference

    def codes(self, rows: list[dict[str, Any]]) -> np.ndarray:
        out = []
        for row in rows:
            coded = []
            for spec in self.manifest["features"]:
                value = row[spec["name"]]
                if spec["type"] == "categorical":
                    coded.append(float(spec["categories"].index(value)))
                else:
                    coded.append(math.nan if value is None else float(value))
            out.append(coded)
        return np.asarray(out, dtype=float)

    def favourable_probability(self, rows: list[dict[str, Any]]) -> np.ndarray:
        if self.fmt == "xgboost":
            matrix = tm.xgboost_matrix(self.model, self.codes(rows))
            positive = self.model.predict(matrix)
        elif self.fmt == "lightgbm":
            positive = self.model.predict(self.codes(rows))
        else:
            names = [s["name"] for s in self.manifest["features"]]
            frame = pd.DataFrame.from_records(rows, columns=names)
            for spec in self.manifest["features"]:
                if spec["type"] == "numeric":
                    frame[spec["name"]] = frame[spec["name"]].astype(float)
            encoded = self.model[:-1].transform(frame)
            last = self.model[-1]
            booster = last.get_booster() if hasattr(last, "get_booster") else last.booster_
            if hasattr(last, "get_booster"):
                positive = booster.predict(xgboost.DMatrix(encoded))
            else:
                positive = booster.predict(encoded)
        positive = np.asarray(positive, dtype=float)
        return positive if self.favourable == 1 else 1.0 - positive


def declined_rows(rescorer: Rescorer, limit: int) -> list[dict[str, Any]]:
    names = [s["name"] for s in rescorer.manifest["features"]]
    rows = rescorer.reference[names].to_dict("records")
    rows = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows]
    scores = rescorer.favourable_probability(rows)
    return [row for row, p in zip(rows, scores, strict=True) if p < 0.5][:limit]


@pytest.mark.parametrize("name", [*DEMOS, "lig-tiny", "xgb-tiny"])
def test_counterfactuals_are_valid_when_rescored_by_the_booster(served: Served, name: str) -> None:
    rescorer = Rescorer(served, name)
    queries = declined_rows(rescorer, 8)
    assert len(queries) == 8
    envelope = ok(
        served.client.post(
            f"/v1/models/{name}/versions/{'production' if name in DEMOS else '1'}/explain/counterfactuals",
            headers=served.auth,
            json={"instances": queries},
        )
    )
    spec = rescorer.manifest
    rules = feature_rules(spec, rescorer.pipeline, rescorer.reference)
    vary = envelope["method"]["params"]["features_to_vary"]
    found = 0
    for query, result in zip(queries, envelope["results"], strict=True):
        for cf in result.get("counterfactuals", []):
            found += 1
            assert cf["valid"] and cf["constraints_ok"]
            instance = {k: v for k, v in cf["instance"].items()}
            assert rescorer.favourable_probability([instance])[0] > 0.5, (name, instance)
            checked_query = {k: (math.nan if v is None else v) for k, v in query.items()}
            checked_cf = {k: (math.nan if v is None else v) for k, v in instance.items()}
            assert violations(checked_query, checked_cf, rules, vary, {}) == []
    assert found >= 8, [r["status"] for r in envelope["results"]]


@pytest.mark.parametrize("name", DEMOS)
def test_every_tabular_method_answers_on_the_demo(served: Served, name: str) -> None:
    base = f"/v1/models/{name}/versions/production"
    client, auth = served.client, served.auth
    rows = pd.read_csv(io.StringIO(_loan_csv(5)))
    instances = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in rows.to_dict("records")
    ]
    shap = ok(client.post(f"{base}/explain/shap?narrative=true", headers=auth, json={"instances": instances}))
    assert shap["output"]["space"] == "log_odds"
    assert all("ood" in r and r["summary"] for r in shap["results"])
    reasons = ok(
        client.post(
            f"{base}/explain/reasons",
            headers=auth,
            json={"instances": instances, "with_counterfactual": True},
        )
    )
    assert len(reasons["results"]) == 5
    effects = ok(
        client.post(
            f"{base}/explain/effects",
            headers=auth,
            json={"instances": instances, "features": ["credit_amount", "purpose"]},
        )
    )
    assert len(effects["results"][0]["features"]) == 2
    for path in ("importance", "profile", "segments"):
        ok(client.get(f"{base}/{path}", headers=auth))
    picture = client.get(f"{base}/importance/plot?kind=bar", headers=auth)
    assert picture.status_code == 200 and picture.mimetype == "image/svg+xml"
    reader = served.app.extensions["candor"].store.keys.create("trees-audit", ["audit:read"])[0]
    audit = {"Authorization": f"Bearer {reader}"}
    replay = ok(client.post(f"/v1/explanations/{shap['id']}/replay", headers=audit))
    assert replay["identical"] is True
    plot = client.get(f"/v1/explanations/{shap['id']}/plot", headers=audit)
    assert plot.status_code == 200 and plot.mimetype == "image/svg+xml"


def _loan_csv(n: int) -> str:
    from api.demo import german_credit

    return german_credit().drop(columns=[LOAN_TARGET]).head(n).to_csv(index=False)


def test_rows_with_missing_values_through_every_method(served: Served) -> None:
    """``size`` is declared ``missing: true``: a null goes through every tabular method, shown as null."""
    base = "/v1/models/lig-tiny/versions/1"
    rows = [{"size": None, "colour": "red", "weight": 50.0}, {"size": 2.0, "colour": "blue", "weight": 40.0}]
    client, auth = served.client, served.auth
    for algorithm in ("tree", "permutation", "kernel"):
        body = {"instances": rows, "algorithm": algorithm, "max_evals": 64}
        envelope = ok(client.post(f"{base}/explain/shap", headers=auth, json=body))
        values = {a["feature"]: a["value"] for a in envelope["results"][0]["attributions"]}
        assert values["size"] is None
    prediction = ok(client.post(f"{base}/predict", headers=auth, json={"instances": rows}))
    booster = Rescorer(served, "lig-tiny")
    expected = booster.favourable_probability(rows)
    got = [p["probabilities"]["yes"] for p in prediction["predictions"]]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    ok(
        client.post(
            f"{base}/explain/reasons", headers=auth, json={"instances": rows, "with_counterfactual": True}
        )
    )
    ok(client.post(f"{base}/explain/counterfactuals", headers=auth, json={"instances": rows}))
    effects = ok(
        client.post(f"{base}/explain/effects", headers=auth, json={"instances": rows, "features": ["size"]})
    )
    assert effects["results"][0]["features"][0]["grid"] == [2.0]
    ok(client.post("/v1/models/lig-tiny:explain", headers=auth, json={"instances": rows}))
    for path in ("importance", "profile", "segments"):
        ok(client.get(f"{base}/{path}", headers=auth))
    nothing = client.post(
        f"{base}/explain/effects", headers=auth, json={"instances": rows[:1], "features": ["size"]}
    )
    assert nothing.status_code == 422 and "instances" in nothing.get_json()["errors"]


def test_reference_with_missing_values_stays_missing(served: Served) -> None:
    reference = Rescorer(served, "lig-tiny").reference
    assert reference["size"].isna().sum() == tm.frame()["size"].isna().sum() > 0
    assert len(to_parquet(reference)) > 0


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    from distributed import Client

    from api.jobs.cluster import local_cluster
    from api.settings import Settings

    with local_cluster(Settings.load({"dask_workers": 1}, environ={})) as cluster, Client(cluster) as client:
        yield client


@pytest.mark.parametrize("name", DEMOS)
def test_small_job_on_dask_equals_the_explain_endpoint(served: Served, dask_client: Any, name: str) -> None:
    """A worker loads the booster from the version's files and answers as the endpoint does."""
    from api.jobs.runner import Runner

    csv = _loan_csv(6).encode()
    form = {
        "model": name,
        "version": "production",
        "kind": "shap",
        "options": '{"layout": "columnar"}',
        "file": (io.BytesIO(csv), "rows.csv"),
    }
    submitted = served.client.post(
        "/v1/jobs", data=form, headers=served.auth, content_type="multipart/form-data"
    )
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    context = served.app.extensions["candor"]
    assert Runner(context.settings, store=context.store).run(once=True, client=dask_client) == 1
    job = ok(served.client.get(f"/v1/jobs/{submitted.get_json()['id']}", headers=served.auth))
    assert job["status"] == "succeeded", job
    lines = served.client.get(f"/v1/jobs/{job['id']}/result", headers=served.auth).data.splitlines()
    results = [orjson.loads(line)["result"] for line in lines]
    instances = pd.read_csv(io.BytesIO(csv)).to_dict("records")
    body = {
        "instances": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in instances]
    }
    body["layout"] = "columnar"
    expected = ok(
        served.client.post(
            f"/v1/models/{name}/versions/production/explain/shap", headers=served.auth, json=body
        )
    )
    for got, want in zip(results, expected["results"], strict=True):
        np.testing.assert_allclose(got["attribution_values"], want["attribution_values"], rtol=0, atol=1e-12)


TORCH_SCRIPT = """
import json, sys, tempfile
from api.http.app import create_app
from api import demo
from api.http.context import candor
from api.service.explain_request import ExplainRequest

app = create_app({"data_dir": tempfile.mkdtemp()})
with app.app_context():
    service = candor().service
    demo.install_demos(service.store.registry, names=("loan-xgb", "loan-lgbm"))
    rows = json.load(open("tests/data/loan_declined.json"))["instances"]
    for name in ("loan-xgb", "loan-lgbm"):
        service.predict(name, "latest", rows)
        for method in ("shap", "counterfactuals", "reasons"):
            service.explain(ExplainRequest(method, name, "latest", rows, {}))
print("torch" in sys.modules)
"""


def test_booster_requests_never_import_torch() -> None:
    """XGBoost, LightGBM and their skops wrappers keep a tabular worker free of torch."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", TORCH_SCRIPT],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("name", DEMOS)
def test_fairness_report_on_the_booster_demos_matches_fairlearn_and_the_booster(
    served: Served, name: str
) -> None:
    """Issue 22 on the XGBoost/LightGBM flavours: group figures equal fairlearn on the booster's own
    decisions, and every flipping row is what the booster says when re-scored."""
    from fairlearn.metrics import demographic_parity_difference, selection_rate

    rescorer = Rescorer(served, name)
    from api.demo import german_credit

    frame = german_credit().head(300)
    rows = [
        {k: v for k, v in r.items() if k != LOAN_TARGET}
        for r in orjson.loads(frame.to_json(orient="records"))
    ]
    body = {
        "instances": rows,
        "outcomes": frame[LOAN_TARGET].astype(str).tolist(),
        "resamples": 0,
        "min_group_size": 1,
        "limit": 1000,
    }
    route = f"/v1/models/{name}/versions/production/fairness"
    result = ok(served.client.post(route, json=body, headers=served.auth))["results"][0]
    favourable = rescorer.favourable_probability(rows)
    y_pred = (favourable > 0.5).astype(int)
    y_true = (frame[LOAN_TARGET].astype(str) == rescorer.manifest["favourable_class"]).astype(int).to_numpy()
    for attribute in ("personal_status_and_sex", "foreign_worker"):
        groups = frame[attribute].astype(str).to_numpy(dtype=object)
        got = next(s for s in result["attributes"] if s["attribute"] == attribute)
        assert got["between"]["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y_true, y_pred, sensitive_features=groups), abs=1e-12
        )
        for group in got["groups"]:
            inside = groups == group["group"]
            assert group["count"] == int(inside.sum())
            if not inside.any():  # a category of the manifest absent from these rows
                assert group["selection_rate"] is None
                continue
            assert group["selection_rate"] == pytest.approx(
                selection_rate(y_true[inside], y_pred[inside]), abs=1e-12
            )
            assert group["mean_probability"] == pytest.approx(favourable[inside].mean(), abs=1e-6)
    listed = result["flipping_rows"]["rows"]
    assert result["flipping_rows"]["total"] == len(listed)
    assert listed, "the boosters read the protected features: some decisions flip"
    moved = [{**rows[f["row"]], f["attribute"]: f["value"]} for f in listed]
    after = rescorer.favourable_probability(moved)
    for flip, now in zip(listed, after, strict=True):
        assert flip["probability_after"] == pytest.approx(now, abs=1e-6)
        assert (now > 0.5) != (favourable[flip["row"]] > 0.5)
