"""Feature effects (partial dependence and ICE curves) end to end over HTTP, with scikit-learn's
``partial_dependence`` (``method="brute"``) called directly on the registered pipeline, rows, features and
grid as the oracle: on the loan demo (a classifier, categorical features by category) and on a regression
pipeline registered here; the refusals, a job, a record's replay, the narrative and the picture."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np
import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pandas.api.types import is_numeric_dtype
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.inspection import partial_dependence
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from test_api_auth import assert_problem
from test_jobs import dask_client, result_lines, run_jobs  # noqa: F401 (a fixture)

from api.demo import LOAN_TARGET, german_credit
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

TOL = 1e-12
LOAN = "/v1/models/loan/versions/1/explain/effects"
HOUSES = "/v1/models/houses/versions/1/explain/effects"
LOAN_FEATURES = ["duration_in_month", "credit_amount", "purpose", "age_in_years"]


def loan_rows(n: int, start: int = 0) -> pd.DataFrame:
    return german_credit().drop(columns=[LOAN_TARGET]).iloc[start : start + n].reset_index(drop=True)


def numeric_as_float(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the oracle reads them: numbers as floats (a grid value assigned into an int column would
    be cast), categories as objects."""
    return frame.apply(lambda c: c.astype(float) if is_numeric_dtype(c) else c.astype(object))


def categorical(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if not is_numeric_dtype(frame[c])]


def pipeline_of(app: Flask, name: str) -> Any:
    registry = app.extensions["candor"].store.registry
    return registry.load(registry.resolve(name, "1")).estimator


def oracle(estimator: Any, rows: pd.DataFrame, feature: str, **options: Any) -> Any:
    return partial_dependence(
        estimator,
        numeric_as_float(rows),
        [feature],
        categorical_features=categorical(rows),
        kind="both",
        method="brute",
        **options,
    )


def assert_oracle_equal(effect: dict[str, Any], expected: Any) -> None:
    grid = expected["grid_values"][0]
    if grid.dtype == object:
        assert effect["grid"] == grid.tolist()
    else:
        np.testing.assert_allclose(effect["grid"], grid, rtol=0, atol=TOL)
    np.testing.assert_allclose(effect["average"], expected["average"][0], rtol=0, atol=TOL)
    np.testing.assert_allclose(effect["individual"], expected["individual"][0], rtol=0, atol=TOL)


def explained(client: FlaskClient, auth: dict[str, str], route: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(route, json=body, headers=auth)
    assert response.status_code == 200, response.data
    envelope: dict[str, Any] = response.get_json()
    return envelope


# -- a regression pipeline -----------------------------------------------------------------------------------
def houses() -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame(
        {
            "area": rng.uniform(30, 200, n).round(1),
            "rooms": rng.integers(1, 7, n).astype(float),
            "district": rng.choice(["north", "south", "centre"], n).astype(object),
        }
    )
    price = 2.0 * frame["area"] + 10 * frame["rooms"] + np.where(frame["district"] == "centre", 80, 0)
    price = price + rng.normal(0, 10, n)
    pipeline = Pipeline(
        [
            (
                "prep",
                ColumnTransformer(
                    [("cat", OneHotEncoder(handle_unknown="ignore"), ["district"])], remainder="passthrough"
                ),
            ),
            ("model", GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=0)),
        ]
    ).fit(frame, price)
    manifest = {
        "name": "houses",
        "task": "regression",
        "target": "price",
        "features": [
            {"name": "area", "type": "numeric", "unit": "m2"},
            {"name": "rooms", "type": "numeric"},
            {"name": "district", "type": "categorical"},
        ],
    }
    return manifest, pipeline, frame.assign(price=price.to_numpy())


@pytest.fixture
def with_houses(app: Flask) -> pd.DataFrame:
    """The app with the regression pipeline registered as ``houses`` v1; its reference frame."""
    manifest, pipeline, reference = houses()
    app.extensions["candor"].store.registry.register_tabular(
        parse_manifest(manifest), dump_skops(pipeline), to_parquet(reference)
    )
    return reference.drop(columns=["price"])


# -- oracle ------------------------------------------------------------------------------------------
def test_loan_equals_partial_dependence(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    rows = loan_rows(40, start=100)
    body = {"instances": rows.to_dict("records"), "features": LOAN_FEATURES, "grid_resolution": 12}
    envelope = explained(client, auth, LOAN, body)
    assert envelope["kind"] == "feature_effects"
    assert envelope["output"] == {"space": "probability", "target": "good", "target_rule": "favourable_class"}
    (result,) = envelope["results"]
    assert result["rows"] == 40 and [e["feature"] for e in result["features"]] == LOAN_FEATURES
    estimator = pipeline_of(app, "loan")
    for effect in result["features"]:
        assert_oracle_equal(effect, oracle(estimator, rows, effect["feature"], grid_resolution=12))
    purpose = result["features"][2]
    assert purpose["type"] == "categorical"
    assert purpose["grid"] == sorted(set(rows["purpose"]))  # every category of the rows, by category
    assert sum(purpose["distribution"]["counts"]) == 40
    assert envelope["quality"]["evaluations"] == 40 * sum(len(e["grid"]) for e in result["features"])


def test_other_target_and_percentiles(app: Flask, client: FlaskClient, auth: dict[str, str]) -> None:
    """target "bad" is the other column (scikit-learn reports the second class of a binary model)."""
    rows = loan_rows(25)
    body = {
        "instances": rows.to_dict("records"),
        "features": ["credit_amount"],
        "target": "bad",
        "percentiles": [0.1, 0.8],
        "grid_resolution": 7,
        "kind": "individual",
    }
    envelope = explained(client, auth, LOAN, body)
    assert envelope["output"]["target_rule"] == "requested"
    effect = envelope["results"][0]["features"][0]
    assert "average" not in effect
    expected = oracle(
        pipeline_of(app, "loan"), rows, "credit_amount", grid_resolution=7, percentiles=(0.1, 0.8)
    )
    np.testing.assert_allclose(effect["grid"], expected["grid_values"][0], rtol=0, atol=TOL)
    np.testing.assert_allclose(effect["individual"], 1.0 - expected["individual"][0], rtol=0, atol=TOL)


def test_regression_reference_sample(
    app: Flask, client: FlaskClient, auth: dict[str, str], with_houses: pd.DataFrame
) -> None:
    body = {"data": "reference", "sample": 60, "seed": 3, "features": ["area", "rooms", "district"]}
    envelope = explained(client, auth, HOUSES, body)
    assert envelope["output"] == {"space": "raw", "target": None, "target_rule": "regression_value"}
    assert envelope["method"]["params"]["rows"] == 60
    rows = with_houses.sample(n=60, random_state=3)
    estimator = pipeline_of(app, "houses")
    for effect in envelope["results"][0]["features"]:
        assert_oracle_equal(effect, oracle(estimator, rows, effect["feature"], grid_resolution=20))
    rooms = envelope["results"][0]["features"][1]
    assert rooms["grid"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # fewer unique values than grid points


def test_grid_from_the_reference_data(
    app: Flask, client: FlaskClient, auth: dict[str, str], with_houses: pd.DataFrame
) -> None:
    """``grid_from: reference``: scikit-learn's grid of the whole reference data, the rows' curves on it."""
    rows = with_houses.iloc[:5]
    body = {"instances": rows.to_dict("records"), "features": ["area"], "grid_from": "reference"}
    effect = explained(client, auth, HOUSES, body)["results"][0]["features"][0]
    estimator = pipeline_of(app, "houses")
    grid = oracle(estimator, with_houses, "area", grid_resolution=20)["grid_values"][0]
    expected = oracle(estimator, rows, "area", custom_values={"area": grid})
    assert_oracle_equal(effect, expected)


# -- refusals ------------------------------------------------------------------------------------------
ROW = loan_rows(1).to_dict("records")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": ROW}, "features"),
        ({"instances": ROW, "features": []}, "features"),
        ({"instances": ROW, "features": ["age_in_years", "age_in_years"]}, "features"),
        ({"instances": ROW, "features": ["age_in_years", "height"]}, "features.1"),
        ({"instances": ROW, "features": ["x" * 129]}, "features.0"),
        ({"instances": ROW, "features": ["age_in_years"], "grid_resolution": 1}, "grid_resolution"),
        ({"instances": ROW, "features": ["age_in_years"], "grid_resolution": 101}, "grid_resolution"),
        ({"instances": ROW, "features": ["age_in_years"], "percentiles": [0.9, 0.1]}, "percentiles"),
        ({"instances": ROW, "features": ["age_in_years"], "percentiles": [0.5]}, "percentiles"),
        ({"instances": ROW, "features": ["age_in_years"], "percentiles": [-0.1, 0.5]}, "percentiles.0"),
        ({"instances": ROW, "features": ["age_in_years"], "kind": "mean"}, "kind"),
        ({"instances": ROW, "features": ["age_in_years"], "target": "maybe"}, "target"),
        ({"features": ["age_in_years"]}, "instances"),
        ({"instances": ROW, "features": ["age_in_years"], "sample": 10}, "sample"),
        ({"instances": ROW, "data": "reference", "features": ["age_in_years"]}, "instances"),
        ({"data": "reference", "sample": 0, "features": ["age_in_years"]}, "sample"),
        ({"data": "reference", "sample": 1001, "features": ["age_in_years"]}, "sample"),
        ({"data": "reference", "seed": -1, "features": ["age_in_years"]}, "seed"),
        ({"data": "everything", "features": ["age_in_years"]}, "data"),
    ],
)
def test_bad_requests_are_422_naming_the_field(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post(LOAN, json=body, headers=auth), 422)
    assert field in problem["errors"], problem


def test_caps_come_from_the_method_settings(make_app: Any) -> None:
    app = make_app(max_effects_features=2, max_effects_evaluations=500, max_effects_grid=5)
    client = app.test_client()
    auth = {"Authorization": "Bearer " + app.extensions["candor"].store.keys.create("t", ["explain"])[0]}
    three = {"instances": ROW, "features": LOAN_FEATURES[:3], "grid_resolution": 5}
    assert "features" in assert_problem(client.post(LOAN, json=three, headers=auth), 422)["errors"]
    fine = {"instances": ROW, "features": ["credit_amount"], "grid_resolution": 6}
    assert "grid_resolution" in assert_problem(client.post(LOAN, json=fine, headers=auth), 422)["errors"]
    many = {"data": "reference", "sample": 200, "features": ["credit_amount"], "grid_resolution": 5}
    problem = assert_problem(client.post(LOAN, json=many, headers=auth), 422)
    assert "sample" in problem["errors"] and "1,000 model evaluations" in problem["errors"]["sample"][0]
    rows = {
        "instances": loan_rows(101).to_dict("records"),
        "features": ["credit_amount"],
        "grid_resolution": 5,
    }
    assert "instances" in assert_problem(client.post(LOAN, json=rows, headers=auth), 422)["errors"]
    assert client.post(LOAN, json={**many, "sample": 100}, headers=auth).status_code == 200


def test_job_caps_and_options(app: Flask, keys: dict[str, str]) -> None:
    client = app.test_client()
    auth = {"Authorization": f"Bearer {keys['explain']}"}
    for options, field in [
        ({"features": ["age_in_years"], "grid_resolution": 101}, "options.grid_resolution"),
        ({"features": ["height"]}, "options.features.0"),
        ({"features": ["age_in_years"], "grid_from": "rows"}, "options.grid_from"),
        ({"features": ["age_in_years"], "data": "reference"}, "options.data"),
    ]:
        body = {
            "model": "loan",
            "version": "1",
            "kind": "effects",
            "dataset": "reference",
            "options": options,
        }
        problem = assert_problem(client.post("/v1/jobs", json=body, headers=auth), 422)
        assert field in problem["errors"], problem


# -- jobs, records, replay, narrative, picture -------------------------------------------------------------
def test_job_over_three_rows(make_app: Any, dask_client: Any) -> None:  # noqa: F811
    app = make_app(job_chunk_rows=2)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain", "audit:read"])[0]
    auth = {"Authorization": f"Bearer {token}"}
    rows = loan_rows(3, start=10)
    options = {"features": ["duration_in_month", "purpose"], "grid_resolution": 6}
    form = {
        "model": "loan",
        "version": "1",
        "kind": "effects",
        "options": json.dumps(options),
        "file": (io.BytesIO(rows.to_csv(index=False).encode()), "rows.csv"),
    }
    submitted = client.post("/v1/jobs", data=form, headers=auth, content_type="multipart/form-data")
    assert submitted.status_code == 202, submitted.data
    assert run_jobs(app, dask_client) == 1
    job = client.get(f"/v1/jobs/{submitted.get_json()['id']}", headers=auth).get_json()
    assert job["status"] == "succeeded", job
    lines = result_lines(client, token, job["id"])
    assert [line["status"] for line in lines] == ["ok"] * 3
    estimator = pipeline_of(app, "loan")
    reference = german_credit().drop(columns=[LOAN_TARGET])
    for index, line in enumerate(lines):
        for effect in line["result"]["features"]:  # each row alone, on the reference data's grid
            grid = oracle(estimator, reference, effect["feature"], grid_resolution=6)["grid_values"][0]
            custom = {effect["feature"]: grid}
            assert_oracle_equal(
                effect, oracle(estimator, rows.iloc[[index]], effect["feature"], custom_values=custom)
            )
        record = client.post(f"/v1/explanations/{line['explanation_id']}/replay", headers=auth).get_json()
        assert record["identical"], record
    summary = {curve["feature"]: curve for curve in job["summary"]["mean_curves"]}
    for feature in options["features"]:
        mean = np.mean(
            [
                next(e for e in line["result"]["features"] if e["feature"] == feature)["average"]
                for line in lines
            ],
            axis=0,
        )
        assert summary[feature]["rows"] == 3
        np.testing.assert_allclose(summary[feature]["average"], mean, rtol=0, atol=1e-12)


def test_record_replay_narrative_and_picture(client: FlaskClient, keys: dict[str, str]) -> None:
    auth = {"Authorization": f"Bearer {keys['explain']}"}
    audit = {"Authorization": f"Bearer {keys['audit:read']}"}
    body = {"data": "reference", "sample": 50, "seed": 7, "features": ["duration_in_month", "purpose"]}
    envelope = explained(client, auth, LOAN + "?narrative=true", body)
    summary = envelope["results"][0]["summary"]
    assert "Over 50 row(s)" in summary and "not a cause" in summary and "duration in month" in summary
    record = client.get(f"/v1/explanations/{envelope['id']}", headers=audit).get_json()
    assert record["kind"] == "effects"
    assert record["request"]["options"]["seed"] == 7 and record["request"]["instances"] == []
    replay = client.post(f"/v1/explanations/{envelope['id']}/replay", headers=audit).get_json()
    assert replay["identical"] and replay["tolerance"] == 1e-9, replay
    picture = client.get(f"/v1/explanations/{envelope['id']}/plot", headers=audit)
    assert picture.status_code == 200 and picture.mimetype == "image/svg+xml"
    root = ET.fromstring(picture.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "Partial dependence on duration in month" in texts and "purpose" in texts


def test_one_row_gets_its_ood_flags(client: FlaskClient, auth: dict[str, str]) -> None:
    envelope = explained(client, auth, LOAN, {"instances": ROW, "features": ["age_in_years"]})
    assert set(envelope["results"][0]["ood"]) >= {"score", "is_outlier"}
    assert "ood" in envelope["quality"]


def test_a_call_without_options_explains_the_first_feature(app: Flask) -> None:
    """What a worker's warm-up sends (a reference row and the server limits, no options) is answered."""
    from api.methods.registry import spec
    from explainers.rows import tabular_rows

    context = app.extensions["candor"]
    info = context.store.registry.resolve("loan", "1")
    model = context.store.registry.load(info)
    method = spec("effects")
    rows = tabular_rows(model, ROW)
    explanation = method.explainer().explain(info, model, rows, {}, method.limits(context.settings))
    assert [e["feature"] for e in explanation.results[0]["features"]] == model.feature_order[:1]


def test_a_retried_reference_request_is_answered_from_its_record(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {"data": "reference", "sample": 20, "features": ["purpose"]}
    headers = {**auth, "Idempotency-Key": "effects-retry-1"}
    first = client.post(LOAN, json=body, headers=headers)
    again = client.post(LOAN, json=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    other = client.post(LOAN, json={**body, "seed": 1}, headers=headers)
    assert "Idempotency-Key" in assert_problem(other, 422)["errors"]
