"""The fairness report (``POST .../fairness``) end to end over HTTP: group metrics against fairlearn called
directly on the same predictions, bootstrap intervals under a seed, the flip test re-scored with the model
itself, synthetic models that do and do not read the protected attribute, the refusals, the loan demo,
records and replay, and a job over uploaded rows."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from flask import Flask
from flask.testing import FlaskClient
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, precision_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from test_api_auth import assert_problem
from test_jobs import dask_client, result_lines, run_jobs  # noqa: F401 (a fixture)

from api.demo import LOAN_TARGET, german_credit
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

LOAN = "/v1/models/loan/versions/1/fairness"
TOL = 1e-12


def loan_frame(n: int = 300) -> pd.DataFrame:
    return german_credit().head(n)


def rows_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.drop(columns=[LOAN_TARGET]).to_json(orient="records"))  # type: ignore[no-any-return]


def post(client: FlaskClient, auth: dict[str, str], body: dict[str, Any], route: str = LOAN) -> Any:
    response = client.post(route, json=body, headers=auth)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def model_of(app: Flask, name: str) -> Any:
    registry = app.extensions["candor"].store.registry
    return registry.load(registry.resolve(name, "1"))


def section(result: dict[str, Any], attribute: str) -> dict[str, Any]:
    return next(s for s in result["attributes"] if s["attribute"] == attribute)


def submit_job(
    app: Flask, data: bytes, options: dict[str, Any], token: str, filename: str = "rows.csv"
) -> Any:
    """``POST /v1/jobs`` of a fairness job on ``loan`` over the file ``data``."""
    form = {
        "model": "loan",
        "version": "1",
        "kind": "fairness",
        "options": json.dumps(options),
        "file": (io.BytesIO(data), filename),
    }
    auth = {"Authorization": f"Bearer {token}"}
    return app.test_client().post("/v1/jobs", data=form, headers=auth, content_type="multipart/form-data")


def finished_job(
    app: Flask,
    dask_client: Any,  # noqa: F811
    data: bytes,
    options: dict[str, Any],
    token: str,
) -> dict[str, Any]:
    """The fairness job over ``data``, submitted, run on ``dask_client`` and succeeded."""
    submitted = submit_job(app, data, options, token)
    assert submitted.status_code == 202, submitted.data
    assert run_jobs(app, dask_client) == 1
    auth = {"Authorization": f"Bearer {token}"}
    job = app.test_client().get(f"/v1/jobs/{submitted.get_json()['id']}", headers=auth).get_json()
    assert job["status"] == "succeeded", job
    return job  # type: ignore[no-any-return]


def oracle_groups(frame: pd.DataFrame, attribute: str) -> np.ndarray:
    if attribute == "age_in_years":
        labels = np.asarray(["< 25", "25 to < 35", "35 to < 50", ">= 50"], dtype=object)
        return labels[np.searchsorted([25.0, 35.0, 50.0], frame[attribute].to_numpy(dtype=float), "right")]
    return frame[attribute].astype(str).to_numpy(dtype=object)


# -- group metrics against fairlearn -------------------------------------------------------------------------
def test_group_metrics_equal_fairlearn_on_the_same_predictions(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    frame = loan_frame(300)
    body = {
        "instances": rows_of(frame),
        "outcomes": frame[LOAN_TARGET].tolist(),
        "resamples": 20,
        "min_group_size": 1,
    }
    result = post(client, auth, body)["results"][0]
    model = model_of(app, "loan")
    probabilities = model.predict_encoded(model.encode(model.validate(rows_of(frame))))
    favourable = model.class_index("good")
    y_pred = (probabilities.argmax(axis=1) == favourable).astype(int)
    y_true = (frame[LOAN_TARGET] == "good").astype(int).to_numpy()
    for attribute in ("age_in_years", "personal_status_and_sex", "foreign_worker"):
        groups = oracle_groups(frame, attribute)
        got = section(result, attribute)
        between = got["between"]
        assert between["demographic_parity_difference"] == pytest.approx(
            demographic_parity_difference(y_true, y_pred, sensitive_features=groups), abs=TOL
        )
        assert between["demographic_parity_ratio"] == pytest.approx(
            demographic_parity_ratio(y_true, y_pred, sensitive_features=groups), abs=TOL
        )
        assert between["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y_true, y_pred, sensitive_features=groups), abs=TOL
        )
        assert between["four_fifths_flag"] == (between["demographic_parity_ratio"] < 0.8)
        for group in got["groups"]:
            inside = groups == group["group"]
            assert group["count"] == int(inside.sum())
            if not inside.any():
                assert group["selection_rate"] is None
                continue
            t, p = y_true[inside], y_pred[inside]
            assert group["selection_rate"] == pytest.approx(selection_rate(t, p), abs=TOL)
            assert group["mean_probability"] == pytest.approx(
                probabilities[inside, favourable].mean(), abs=TOL
            )
            assert group["true_positive_rate"] == pytest.approx(true_positive_rate(t, p), abs=TOL)
            assert group["false_positive_rate"] == pytest.approx(false_positive_rate(t, p), abs=TOL)
            assert group["precision"] == pytest.approx(precision_score(t, p, zero_division=0), abs=TOL)
            assert group["accuracy"] == pytest.approx(accuracy_score(t, p), abs=TOL)
            rest = y_pred[~inside]
            if len(rest):  # Clarify: DPPL = q_rest - q_group, DI = q_group / q_rest
                assert group["dppl"] == pytest.approx(rest.mean() - p.mean(), abs=TOL)
                if rest.mean() > 0:
                    assert group["di"] == pytest.approx(p.mean() / rest.mean(), abs=TOL)


def test_intervals_repeat_with_the_seed_and_change_with_another(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    body = {"data": "reference", "attributes": ["foreign_worker"], "resamples": 50, "seed": 3}
    first = post(client, auth, body)["results"][0]
    again = post(client, auth, body)["results"][0]
    other = post(client, auth, {**body, "seed": 4})["results"][0]
    pick = lambda r: section(r, "foreign_worker")["between"]["demographic_parity_difference_interval"]  # noqa: E731
    assert pick(first) == pick(again)
    assert pick(first) != pick(other)
    low, high = pick(first)
    assert 0.0 <= low < high <= 1.0


def test_an_interval_is_the_percentiles_of_fairlearn_on_resampled_rows(app: Flask) -> None:
    """The bootstrap's resamples, recomputed by fairlearn on the rows each draws, give its interval."""
    from explainers.fairness import group_metrics as gm
    from explainers.fairness.groups import grouped

    model = model_of(app, "loan")
    records = model.validate(rows_of(loan_frame(200)))
    attribute = grouped(model, "foreign_worker", records, None)
    probability = model.predict_encoded(model.encode(records))[:, model.class_index("good")]
    decision = probability >= 0.5
    compared = np.ones(len(attribute.labels), dtype=bool)
    draws = gm.bootstrap([attribute], gm.columns_of(decision, probability, None), [compared], 30, 11)[0]
    rng = np.random.default_rng(11)
    groups = np.asarray(attribute.labels, dtype=object)[attribute.codes]
    expected = []
    for _ in range(30):
        chosen = rng.integers(0, len(records), len(records))
        expected.append(
            demographic_parity_difference(
                decision[chosen], decision[chosen], sensitive_features=groups[chosen]
            )
        )
    np.testing.assert_allclose(draws["demographic_parity_difference"], expected, rtol=0, atol=TOL)
    assert gm.interval(draws["demographic_parity_difference"]) == pytest.approx(
        list(np.percentile(expected, [2.5, 97.5])), abs=TOL
    )


# -- the flip test -------------------------------------------------------------------------------------------
def test_flipping_rows_are_what_the_model_says_when_rescored(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    frame = loan_frame(200)
    body = {"instances": rows_of(frame), "resamples": 0, "limit": 1000}
    result = post(client, auth, body)["results"][0]
    model = model_of(app, "loan")
    records = model.validate(rows_of(frame))
    favourable = model.class_index("good")
    before = model.predict_encoded(model.encode(records))
    listed = result["flipping_rows"]["rows"]
    assert result["flipping_rows"]["total"] == len(listed) > 0
    moved = [{**records[f["row"]], f["attribute"]: f["value"]} for f in listed]
    after = model.predict_encoded(model.encode(moved))
    for flip, now in zip(listed, after, strict=True):
        assert flip["probability_before"] == pytest.approx(before[flip["row"], favourable], abs=TOL)
        assert flip["probability_after"] == pytest.approx(now[favourable], abs=TOL)
        assert (now.argmax() == favourable) != (before[flip["row"]].argmax() == favourable)
    flips = sum(
        s["flip_test"]["pairs"][i]["flips"]
        for s in result["attributes"]
        for i in range(len(s["flip_test"]["pairs"]))
    )
    assert flips == len(listed)
    page = post(client, auth, {**body, "offset": 2, "limit": 3})["results"][0]["flipping_rows"]
    assert page["rows"] == listed[2:5] and page["total"] == len(listed)


def synthetic(uses_group: bool) -> tuple[dict[str, Any], Pipeline, pd.DataFrame]:
    """Approval driven by income; with ``uses_group``, mostly by the protected group."""
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 15, n),
            "group": rng.choice(["a", "b"], n).astype(object),
            "region": rng.choice(["north", "south"], n).astype(object),
        }
    )
    score = (frame["income"] - 50) / 15 + (4 * (frame["group"] == "a") - 2 if uses_group else 0)
    label = np.where(score + rng.normal(0, 0.3, n) > 0, "approve", "deny")
    columns = ["income", "group", "region"] if uses_group else ["income", "region"]
    prep = ColumnTransformer(
        [("cat", OneHotEncoder(), [c for c in columns if c != "income"]), ("num", "passthrough", ["income"])]
    )
    pipeline = Pipeline([("prep", prep), ("model", LogisticRegression(C=100.0))])
    pipeline.fit(frame[["income", "group", "region"]], label)
    manifest = {
        "name": "approvals" if uses_group else "blind",
        "task": "binary_classification",
        "classes": ["approve", "deny"],
        "favourable_class": "approve",
        "features": [
            {"name": "income", "type": "numeric"},
            {"name": "group", "type": "categorical", "categories": ["a", "b"], "protected": True},
            {"name": "region", "type": "categorical", "categories": ["north", "south"]},
        ],
    }
    return manifest, pipeline, frame


def registered(app: Flask, uses_group: bool) -> str:
    manifest, pipeline, frame = synthetic(uses_group)
    registry = app.extensions["candor"].store.registry
    registry.register_tabular(parse_manifest(manifest), dump_skops(pipeline), to_parquet(frame))
    return str(manifest["name"])


def test_flip_rate_is_high_when_the_model_reads_the_attribute_and_zero_when_not(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    for uses_group, check in ((True, lambda rate: rate > 0.3), (False, lambda rate: rate == 0.0)):
        name = registered(app, uses_group)
        body = {"data": "reference", "resamples": 10}
        result = post(client, auth, body, f"/v1/models/{name}/versions/1/fairness")["results"][0]
        flips = section(result, "group")["flip_test"]
        assert flips["moves"] == 400
        assert check(flips["flip_rate"]), flips
        if not uses_group:
            assert result["flipping_rows"]["total"] == 0
            assert all(p["mean_change"] == 0.0 for p in flips["pairs"])


# -- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"data": "reference", "attributes": ["height"]}, "attributes.0"),
        ({"data": "reference", "attributes": ["purpose"]}, "attributes.0"),
        (
            {"data": "reference", "attributes": ["foreign_worker"], "bins": {"foreign_worker": [1.0]}},
            "bins.foreign_worker",
        ),
        ({"data": "reference", "bins": {"age_in_years": [40.0, 30.0]}}, "bins.age_in_years"),
        ({"data": "reference", "resamples": 201}, "resamples"),
        (
            {"data": "reference", "bins": {"age_in_years": [float(i) for i in range(101)]}},
            "bins.age_in_years",
        ),
    ],
)
def test_bad_requests_name_the_field(
    client: FlaskClient, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    problem = assert_problem(client.post(LOAN, json=body, headers=auth), 422)
    assert any(name.startswith(field) for name in problem["errors"]), problem


def test_outcomes_must_be_classes_and_rows_are_capped(make_app: Any) -> None:
    app = make_app(max_fairness_rows=3)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {app.extensions['candor'].store.keys.create('f', ['explain'])[0]}"}
    rows = rows_of(loan_frame(3))
    problem = assert_problem(
        client.post(LOAN, json={"instances": rows, "outcomes": ["good", "maybe", "bad"]}, headers=auth), 422
    )
    assert "outcomes.1" in problem["errors"], problem
    problem = assert_problem(client.post(LOAN, json={"instances": rows_of(loan_frame(4))}, headers=auth), 422)
    assert "instances" in problem["errors"], problem


def test_missing_bins_and_models_without_protected_features(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    manifest, pipeline, frame = synthetic(True)
    manifest = {**manifest, "name": "ages"}
    manifest["features"] = [
        {**f, "protected": f["name"] in ("income", "group")} for f in manifest["features"]
    ]
    registry = app.extensions["candor"].store.registry
    registry.register_tabular(parse_manifest(manifest), dump_skops(pipeline), to_parquet(frame))
    problem = assert_problem(
        client.post("/v1/models/ages/versions/1/fairness", json={"data": "reference"}, headers=auth), 422
    )
    assert "bins.income" in problem["errors"], problem
    fixed = post(
        client,
        auth,
        {"data": "reference", "bins": {"income": [40, 60]}, "resamples": 5},
        "/v1/models/ages/versions/1/fairness",
    )
    assert [g["group"] for g in section(fixed["results"][0], "income")["groups"]] == [
        "< 40",
        "40 to < 60",
        ">= 60",
    ]
    problem = assert_problem(
        client.post("/v1/models/clinical/versions/1/fairness", json={"data": "reference"}, headers=auth), 422
    )
    assert "attributes" in problem["errors"], problem


def test_one_row_is_a_report(client: FlaskClient, auth: dict[str, str]) -> None:
    """One row (the OpenAPI example): its groups are too small to compare, and it is answered."""
    result = post(client, auth, {"instances": rows_of(loan_frame(1)), "resamples": 5})["results"][0]
    assert result["rows"] == 1
    for s in result["attributes"]:
        assert [g["count"] for g in s["groups"] if g["count"]] == [1]
        assert s["between"]["demographic_parity_difference"] is None and not s["between"]["four_fifths_flag"]


def test_text_models_are_refused() -> None:
    from api.methods.registry import spec

    assert spec("fairness").flavour == "tabular"  # the service refuses other flavours (422 naming method)
    assert not spec("fairness").applies(type("Text", (), {"flavour": "text"})())


# -- the loan demo: record, replay, narrative, picture, job --------------------------------------------------
def test_loan_reference_report_is_recorded_replayed_narrated_and_drawn(
    client: FlaskClient, keys: dict[str, str]
) -> None:
    auth = {"Authorization": f"Bearer {keys['explain']}"}
    audit = {"Authorization": f"Bearer {keys['audit:read']}"}
    envelope = post(client, auth, {"data": "reference", "resamples": 30, "seed": 5}, LOAN + "?narrative=true")
    result = envelope["results"][0]
    assert result["rows"] == 1000 and result["with_outcomes"] is True
    assert [s["attribute"] for s in result["attributes"]] == [
        "personal_status_and_sex",
        "age_in_years",
        "foreign_worker",
    ]
    age = section(result, "age_in_years")
    assert [g["group"] for g in age["groups"]] == ["< 25", "25 to < 35", "35 to < 50", ">= 50"]
    for s in result["attributes"]:
        assert s["proxies"]["strongest"] and all(
            p["association"] is not None for p in s["proxies"]["strongest"]
        )
    assert "do not establish legal compliance" in result["summary"] and "95% interval" in result["summary"]
    replay = client.post(f"/v1/explanations/{envelope['id']}/replay", headers=audit).get_json()
    assert replay["identical"], replay
    picture = client.get(f"/v1/explanations/{envelope['id']}/plot", headers=audit)
    assert picture.status_code == 200 and picture.mimetype == "image/svg+xml"
    assert b"selection rate" in picture.data


def test_job_over_uploaded_rows(make_app: Any, dask_client: Any) -> None:  # noqa: F811
    app = make_app(job_chunk_rows=25)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("jobs", ["explain", "audit:read"])[0]
    auth = {"Authorization": f"Bearer {token}"}
    frame = loan_frame(60).drop(columns=[LOAN_TARGET])
    options = {"attributes": ["foreign_worker", "age_in_years"], "resamples": 40, "min_group_size": 1}
    job = finished_job(app, dask_client, frame.to_csv(index=False).encode(), options, token)
    lines = result_lines(client, token, job["id"])
    assert len(lines) == 60 and all(line["status"] == "ok" for line in lines)
    sync = post(
        client, auth, {"instances": json.loads(frame.to_json(orient="records")), **options, "limit": 1000}
    )["results"][0]
    summary = {s["attribute"]: s for s in job["summary"]["fairness"]["attributes"]}
    for attribute in options["attributes"]:
        want = section(sync, attribute)
        got = summary[attribute]
        by_group = {g["group"]: g for g in want["groups"]}
        for group in got["groups"]:
            assert group["count"] == by_group[group["group"]]["count"]
            assert group["selection_rate"] == pytest.approx(
                by_group[group["group"]]["selection_rate"], abs=TOL
            )
        assert got["between"]["demographic_parity_difference"] == pytest.approx(
            want["between"]["demographic_parity_difference"], abs=TOL
        )
        assert got["flip_test"]["moves"] == want["flip_test"]["moves"]
        assert got["flip_test"]["flip_rate"] == pytest.approx(want["flip_test"]["flip_rate"], abs=TOL)
    row_flips = sum(m["flipped"] for line in lines for m in line["result"]["row"]["moves"])
    assert row_flips == sync["flipping_rows"]["total"]
    replay = client.post(f"/v1/explanations/{lines[7]['explanation_id']}/replay", headers=auth).get_json()
    assert replay["identical"], replay


def test_reference_larger_than_the_row_cap_is_refused_and_a_job_takes_it(make_app: Any) -> None:
    app = make_app(max_fairness_rows=999)  # the loan reference holds 1,000 rows
    client = app.test_client()
    auth = {"Authorization": f"Bearer {app.extensions['candor'].store.keys.create('f', ['explain'])[0]}"}
    assert len(model_of(app, "loan").reference) == 1000
    problem = assert_problem(client.post(LOAN, json={"data": "reference"}, headers=auth), 422)
    assert "data" in problem["errors"] and "job" in problem["errors"]["data"][0], problem
    body = {"model": "loan", "version": "1", "kind": "fairness", "dataset": "reference", "options": {}}
    assert client.post("/v1/jobs", json=body, headers=auth).status_code == 202
    fits = make_app(max_fairness_rows=1000)
    key = fits.extensions["candor"].store.keys.create("f", ["explain"])[0]
    report = post(
        fits.test_client(), {"Authorization": f"Bearer {key}"}, {"data": "reference", "resamples": 0}
    )
    assert report["results"][0]["rows"] == 1000


def with_missing_ages() -> tuple[dict[str, Any], Any, pd.DataFrame]:
    """A HistGradientBoostingClassifier (it scores NaN natively) on a protected age that may be missing."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(3)
    n = 300
    frame = pd.DataFrame({"age": rng.uniform(18, 80, n), "income": rng.normal(50, 15, n)})
    score = (frame["income"] - 50) / 15 + (frame["age"] - 40) / 10
    label = np.where(score + rng.normal(0, 0.3, n) > 0, "approve", "deny")
    frame.loc[rng.random(n) < 0.2, "age"] = np.nan
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(frame, label)
    manifest = {
        "name": "ages_missing",
        "task": "binary_classification",
        "classes": ["approve", "deny"],
        "favourable_class": "approve",
        "features": [
            {"name": "age", "type": "numeric", "missing": True, "protected": True, "bins": [30, 50]},
            {"name": "income", "type": "numeric"},
        ],
    }
    return manifest, model, frame


def test_missing_values_of_a_numeric_attribute_are_their_own_group(
    app: Flask, client: FlaskClient, auth: dict[str, str]
) -> None:
    manifest, estimator, frame = with_missing_ages()
    registry = app.extensions["candor"].store.registry
    registry.register_tabular(parse_manifest(manifest), dump_skops(estimator), to_parquet(frame))
    instances = json.loads(frame.head(120).to_json(orient="records"))
    rows = pd.DataFrame(instances, columns=["age", "income"], dtype=float)  # the values as sent
    assert any(row["age"] is None for row in instances)
    body = {"instances": instances, "resamples": 10, "min_group_size": 1, "limit": 1000}
    result = post(client, auth, body, "/v1/models/ages_missing/versions/1/fairness")["results"][0]
    ages = section(result, "age")
    labels = ["< 30", "30 to < 50", ">= 50", "missing"]
    assert [g["group"] for g in ages["groups"]] == labels
    age = rows["age"].to_numpy()
    codes = np.where(np.isnan(age), 3, np.searchsorted([30.0, 50.0], age, side="right"))
    assert [g["count"] for g in ages["groups"]] == np.bincount(codes, minlength=4).tolist()
    reference = frame["age"].to_numpy()
    bins = np.searchsorted([30.0, 50.0], reference, side="right")
    for index, group in enumerate(ages["groups"][:3]):  # each bin's stand-in: its median, NaN left out
        inside = reference[(bins == index) & ~np.isnan(reference)]
        assert group["value"] == pytest.approx(float(np.median(inside)), abs=TOL)
    flips = ages["flip_test"]
    assert all(pair["to"] != "missing" for pair in flips["pairs"])
    missing = int(np.isnan(age).sum())
    assert flips["moves"] == 2 * (len(rows) - missing) + 3 * missing
    favourable = list(estimator.classes_).index("approve")
    before = estimator.predict_proba(rows)[:, favourable]
    for group in ages["groups"][:3]:  # the missing rows moved to each stand-in, re-scored
        pair = next(p for p in flips["pairs"] if p["from"] == "missing" and p["to"] == group["group"])
        moved = rows[np.isnan(age)].assign(age=group["value"])
        change = estimator.predict_proba(moved)[:, favourable] - before[np.isnan(age)]
        assert pair["rows"] == missing and pair["mean_change"] == pytest.approx(change.mean(), abs=TOL)


def test_bin_labels_stay_distinct_when_edges_are_close(client: FlaskClient, auth: dict[str, str]) -> None:
    from explainers.fairness.groups import bin_labels

    assert bin_labels([25.0, 35.0, 50.0]) == ["< 25", "25 to < 35", "35 to < 50", ">= 50"]
    edges = [30.0000001, 30.0000002, 30.0000003]
    body = {"data": "reference", "attributes": ["age_in_years"], "bins": {"age_in_years": edges}}
    result = post(client, auth, {**body, "resamples": 0})["results"][0]
    labels = [g["group"] for g in section(result, "age_in_years")["groups"]]
    assert labels == bin_labels(edges) and len(set(labels)) == 4, labels
    assert labels[1] == "30.0000001 to < 30.0000002", labels


def test_bins_hold_at_most_100_attributes(client: FlaskClient, auth: dict[str, str]) -> None:
    bins = {f"f{i}": [1.0] for i in range(101)}
    problem = assert_problem(client.post(LOAN, json={"data": "reference", "bins": bins}, headers=auth), 422)
    assert list(problem["errors"]) == ["bins"], problem
    within = {**dict(list(bins.items())[:99]), "age_in_years": [30.0]}
    problem = assert_problem(client.post(LOAN, json={"data": "reference", "bins": within}, headers=auth), 422)
    assert list(problem["errors"]) == ["bins.f0"], problem  # past the schema: the report's own check


def test_job_summary_lists_empty_groups_and_names_its_interval_method(
    make_app: Any,
    dask_client: Any,  # noqa: F811
) -> None:
    app = make_app(job_chunk_rows=10)
    client = app.test_client()
    token = app.extensions["candor"].store.keys.create("j", ["explain"])[0]
    auth = {"Authorization": f"Bearer {token}"}
    frame = loan_frame(200).drop(columns=[LOAN_TARGET])
    frame = frame[frame["age_in_years"] >= 25].head(30)  # no row in "< 25"
    options = {"attributes": ["age_in_years"], "resamples": 10, "min_group_size": 1}
    job = finished_job(app, dask_client, frame.to_csv(index=False).encode(), options, token)
    fairness = job["summary"]["fairness"]
    assert fairness["interval_method"] == "poisson_bootstrap"
    sync = post(client, auth, {"instances": json.loads(frame.to_json(orient="records")), **options})
    want = {g["group"]: g["count"] for g in section(sync["results"][0], "age_in_years")["groups"]}
    got = {g["group"]: g["count"] for g in fairness["attributes"][0]["groups"]}
    assert want["< 25"] == 0 and got == want, (got, want)
    empty = next(g for g in fairness["attributes"][0]["groups"] if g["group"] == "< 25")
    assert empty["too_small"] and empty["selection_rate"] is None
