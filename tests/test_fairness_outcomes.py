"""True outcomes in a fairness report sent as a column of the rows (``outcome_column``): in a request, and in
a job's uploaded file, whose summary then has the outcome figures; the job's intervals checked against
fairlearn on the Poisson-weighted rows, and the same for any split of the job into chunks."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from flask import Flask
from remote_fixtures import (  # noqa: F401 (fixtures)
    fitted_fixture,
    register,
    remote_manifest,
    v1_server_fixture,
)
from remote_fixtures import rows as remote_rows
from sklearn.metrics import accuracy_score, precision_score
from test_api_auth import assert_problem
from test_fairness import (
    LOAN,
    TOL,
    finished_job,
    loan_frame,
    model_of,
    oracle_groups,
    post,
    rows_of,
    submit_job,
)
from test_jobs import dask_client, result_lines, run_jobs  # noqa: F401 (a fixture)

from api.demo import LOAN_TARGET
from explainers.fairness import poisson
from explainers.fairness import summary as job_summary
from model_store.manifest import parse_manifest
from model_store.reference import to_parquet
from model_store.safe_load import dump_skops

ATTRIBUTE = "age_in_years"
OPTIONS = {"attributes": [ATTRIBUTE], "resamples": 30, "seed": 5, "min_group_size": 1}


def token_of(app: Flask) -> str:
    return app.extensions["candor"].store.keys.create("f", ["explain", "audit:read"])[0]  # type: ignore[no-any-return]


def test_a_job_with_an_outcome_column_has_fairlearns_figures_and_a_poisson_bootstrap(
    make_app: Any,
    dask_client: Any,  # noqa: F811
) -> None:
    frame = loan_frame(200)
    csv = frame.to_csv(index=False).encode()  # the true outcome is the file's LOAN_TARGET column
    options = {**OPTIONS, "outcome_column": LOAN_TARGET}
    app = make_app(job_chunk_rows=25)
    token = token_of(app)
    job = finished_job(app, dask_client, csv, options, token)
    fairness = job["summary"]["fairness"]
    assert fairness["with_outcomes"] and fairness["interval_method"] == "poisson_bootstrap"
    got = fairness["attributes"][0]

    model = model_of(app, "loan")
    probabilities = model.predict_encoded(model.encode(model.validate(rows_of(frame))))
    y_pred = (probabilities.argmax(axis=1) == model.class_index("good")).astype(int)
    y_true = (frame[LOAN_TARGET] == "good").astype(int).to_numpy()
    groups = oracle_groups(frame, ATTRIBUTE)
    assert got["between"]["equalized_odds_difference"] == pytest.approx(
        equalized_odds_difference(y_true, y_pred, sensitive_features=groups), abs=TOL
    )
    for group in got["groups"]:
        inside = groups == group["group"]
        t, p = y_true[inside], y_pred[inside]
        assert group["count"] == int(inside.sum()) > 10
        assert group["true_positive_rate"] == pytest.approx(true_positive_rate(t, p), abs=TOL)
        assert group["false_positive_rate"] == pytest.approx(false_positive_rate(t, p), abs=TOL)
        assert group["precision"] == pytest.approx(precision_score(t, p, zero_division=0), abs=TOL)
        assert group["accuracy"] == pytest.approx(accuracy_score(t, p), abs=TOL)

    # each resample is the rows weighted by their Poisson counts: fairlearn given those weights
    weights = poisson.weights(5, np.arange(len(frame)), 30)
    parity, rates = [], []
    for b in range(30):
        w = weights[:, b]
        parity.append(
            demographic_parity_difference(y_true, y_pred, sensitive_features=groups, sample_weight=w)
        )
        frame_b = MetricFrame(
            metrics={"tpr": true_positive_rate, "rate": selection_rate},
            y_true=y_true,
            y_pred=y_pred,
            sensitive_features=groups,
            sample_params={"tpr": {"sample_weight": w}, "rate": {"sample_weight": w}},
        )
        rates.append(frame_b.by_group)
    assert got["between"]["demographic_parity_difference_interval"] == pytest.approx(
        list(np.percentile(parity, [2.5, 97.5])), abs=TOL
    )
    for group in got["groups"]:
        for figure, column in (("true_positive_rate", "tpr"), ("selection_rate", "rate")):
            drawn = [r.loc[group["group"], column] for r in rates]
            assert group[f"{figure}_interval"] == pytest.approx(
                list(np.percentile(drawn, [2.5, 97.5])), abs=TOL
            )

    lines = result_lines(app.test_client(), token, job["id"])
    assert [line["result"]["row"]["outcome"] for line in lines] == frame[LOAN_TARGET].tolist()
    auth = {"Authorization": f"Bearer {token}"}
    replay = app.test_client().post(f"/v1/explanations/{lines[30]['explanation_id']}/replay", headers=auth)
    assert replay.get_json()["identical"], replay.get_json()

    # another split into chunks: the same figures and intervals
    split = make_app(job_chunk_rows=7)
    other = finished_job(split, dask_client, csv, options, token_of(split))["summary"]["fairness"]
    assert other["attributes"][0] == _approx(got)


def _approx(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, abs=TOL)
    return value


def test_a_request_may_send_outcomes_as_a_column(app: Flask, client: Any, auth: dict[str, str]) -> None:
    frame = loan_frame(80)
    listed = post(
        client, auth, {"instances": rows_of(frame), "outcomes": frame[LOAN_TARGET].tolist(), **OPTIONS}
    )
    rows = json.loads(frame.to_json(orient="records"))
    column = post(client, auth, {"instances": rows, "outcome_column": LOAN_TARGET, **OPTIONS})
    assert column["results"][0]["attributes"] == listed["results"][0]["attributes"]
    assert column["results"][0]["with_outcomes"]
    rows[3][LOAN_TARGET] = "maybe"
    bad = client.post(LOAN, json={"instances": rows, "outcome_column": LOAN_TARGET, **OPTIONS}, headers=auth)
    assert list(assert_problem(bad, 422)["errors"]) == [f"instances.3.{LOAN_TARGET}"]
    del rows[3][LOAN_TARGET]
    bad = client.post(LOAN, json={"instances": rows, "outcome_column": LOAN_TARGET, **OPTIONS}, headers=auth)
    assert list(assert_problem(bad, 422)["errors"]) == [f"instances.3.{LOAN_TARGET}"]
    both = {"instances": rows_of(frame), "outcomes": ["good"] * 80, "outcome_column": LOAN_TARGET}
    assert list(assert_problem(client.post(LOAN, json=both, headers=auth), 422)["errors"]) == ["outcomes"]


def test_a_jobs_outcome_column_is_checked_before_the_job_is_queued(make_app: Any) -> None:
    app = make_app()
    token = token_of(app)
    frame = loan_frame(40)
    options = {**OPTIONS, "outcome_column": LOAN_TARGET}
    unknown = frame.assign(**{LOAN_TARGET: frame[LOAN_TARGET].where(frame.index != 5, "maybe")})
    problem = assert_problem(submit_job(app, unknown.to_csv(index=False).encode(), options, token), 422)
    assert list(problem["errors"]) == ["options.outcome_column"] and "'maybe'" in problem["detail"], problem
    empty = frame.assign(**{LOAN_TARGET: frame[LOAN_TARGET].where(frame.index != 5, None)})
    problem = assert_problem(submit_job(app, empty.to_csv(index=False).encode(), options, token), 422)
    assert list(problem["errors"]) == ["options.outcome_column"], problem
    missing = frame.drop(columns=[LOAN_TARGET]).to_csv(index=False).encode()
    problem = assert_problem(submit_job(app, missing, options, token), 422)
    assert list(problem["errors"]) == ["file"] and LOAN_TARGET in problem["detail"], problem
    feature = {**OPTIONS, "outcome_column": ATTRIBUTE}
    problem = assert_problem(submit_job(app, frame.to_csv(index=False).encode(), feature, token), 422)
    assert list(problem["errors"]) == ["options.outcome_column"], problem
    without = frame.to_csv(index=False).encode()  # an extra column and no outcome_column: refused as before
    problem = assert_problem(submit_job(app, without, OPTIONS, token), 422)
    assert list(problem["errors"]) == ["file"], problem


def test_an_outcome_column_that_is_a_feature_is_named(client: Any, auth: dict[str, str]) -> None:
    rows = json.loads(loan_frame(40).to_json(orient="records"))
    body = {"instances": rows, "outcome_column": "foreign_worker", **OPTIONS}
    assert list(assert_problem(client.post(LOAN, json=body, headers=auth), 422)["errors"]) == [
        "outcome_column"
    ]


def test_a_remote_model_takes_an_outcome_column(
    monkeypatch: pytest.MonkeyPatch,
    client: Any,
    keys: dict[str, str],
    fitted: Any,
    v1_server: str,
) -> None:
    """The predictor's answer, stated in the record, is asked for the model's rows (the column moved out)."""
    frame, _ = fitted
    monkeypatch.setenv("CANDOR_PREDICTOR_TINY_URL", v1_server)
    manifest = remote_manifest("remote-fair", "v1")
    manifest["features"][1]["protected"] = True  # colour
    assert register(client, keys["models:write"], manifest, frame).status_code == 201
    sent, labels = remote_rows(frame, 30), frame["label"].astype(str).tolist()[:30]
    options = {"resamples": 5, "min_group_size": 1}
    url = "/v1/models/remote-fair/versions/1/fairness"
    auth = {"Authorization": f"Bearer {keys['explain']}"}
    listed = post(client, auth, {"instances": sent, "outcomes": labels, **options}, url)
    column = [{**row, "truth": label} for row, label in zip(sent, labels, strict=True)]
    carried = post(client, auth, {"instances": column, "outcome_column": "truth", **options}, url)
    assert carried["results"][0]["attributes"] == listed["results"][0]["attributes"]


def test_a_job_reads_a_bool_target_as_the_manifest_names_its_classes(
    make_app: Any,
    dask_client: Any,  # noqa: F811
) -> None:
    """Label columns are text as Python writes the values (``True``), as the manifest's classes are."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "g": rng.integers(0, 2, 200).astype(float)})
    target = (frame["x"] + rng.normal(0, 0.5, 200)) > 0
    manifest = {
        "name": "booly",
        "task": "binary_classification",
        "target": "y",
        "classes": ["False", "True"],
        "favourable_class": "True",
        "features": [
            {"name": "x", "type": "numeric"},
            {"name": "g", "type": "numeric", "protected": True, "bins": [0.5]},
        ],
    }
    app = make_app(job_chunk_rows=50)
    registry = app.extensions["candor"].store.registry
    model = LogisticRegression().fit(frame[["x", "g"]], target)
    registry.register_tabular(parse_manifest(manifest), dump_skops(model), to_parquet(frame.assign(y=target)))
    token = token_of(app)
    auth = {"Authorization": f"Bearer {token}"}
    options = {"resamples": 0, "min_group_size": 1}
    body = {"model": "booly", "version": "1", "kind": "fairness", "dataset": "reference"}
    submitted = app.test_client().post(
        "/v1/jobs", json={**body, "options": {**options, "outcome_column": "y"}}, headers=auth
    )
    assert submitted.status_code == 202, submitted.get_json()
    assert run_jobs(app, dask_client) == 1
    job = app.test_client().get(f"/v1/jobs/{submitted.get_json()['id']}", headers=auth).get_json()
    want = post(
        app.test_client(), auth, {"data": "reference", **options}, "/v1/models/booly/versions/1/fairness"
    )
    assert job["summary"]["fairness"]["with_outcomes"] and want["results"][0]["with_outcomes"]
    got = {g["group"]: g for g in job["summary"]["fairness"]["attributes"][0]["groups"]}
    for group in want["results"][0]["attributes"][0]["groups"]:
        for figure in ("count", "selection_rate", "true_positive_rate", "false_positive_rate", "accuracy"):
            assert got[group["group"]][figure] == pytest.approx(group[figure], abs=TOL), figure


def test_a_summary_stored_before_the_poisson_bootstrap_keeps_its_figures() -> None:
    """Group sums kept by decision (before the Poisson bootstrap), alone or with later chunks' sums: the same
    counts and rates, and no intervals (the resamples would cover only some rows)."""
    settings = {"seed": {"0": 5.0}, "resamples": {"20": 5.0}, "min_group_size": {"1": 5.0}}
    earlier = {
        "a": {"positive_n": 2.0, "positive_probability": 1.5, "negative_n": 1.0, "negative_probability": 0.2},
        "b": {"positive_n": 1.0, "positive_probability": 0.9, "negative_n": 1.0, "negative_probability": 0.4},
    }
    acc = {"fairness": {"groups": {"sex": earlier}, "settings": settings}}
    fairness = job_summary.finalize(acc)["fairness"]
    groups = {g["group"]: g for g in fairness["attributes"][0]["groups"]}
    assert (groups["a"]["count"], groups["b"]["count"]) == (3, 2)
    assert groups["a"]["selection_rate"] == pytest.approx(2 / 3) and groups["b"]["mean_probability"] == 0.65
    assert groups["a"]["selection_rate_interval"] == [None, None]
    assert fairness["interval_method"].startswith("none")
    later = {"groups": {"sex": "a"}, "probability": 0.8, "decision": True, "moves": [], "settings": {}}
    later["settings"] = {"seed": 0, "resamples": 20, "min_group_size": 1}
    job_summary.accumulate_rows(acc, [(5, {"row": later})])
    groups = {g["group"]: g for g in job_summary.finalize(acc)["fairness"]["attributes"][0]["groups"]}
    assert groups["a"]["count"] == 4 and groups["a"]["selection_rate"] == pytest.approx(3 / 4)
    assert groups["a"]["mean_probability"] == pytest.approx((1.5 + 0.2 + 0.8) / 4)


def test_poisson_weights_are_poisson_1_and_fixed_by_seed_row_and_resample() -> None:
    rows = np.arange(50_000)
    drawn = poisson.weights(7, rows, 40)
    counts = np.bincount(drawn.astype(int).ravel(), minlength=6)[:6] / drawn.size
    expected = [np.exp(-1.0) / np.prod(np.arange(1, k + 1)) for k in range(6)]
    np.testing.assert_allclose(counts, expected, atol=2e-3)
    assert abs(np.corrcoef(drawn[:, 0], drawn[:, 1])[0, 1]) < 0.02
    assert abs(np.corrcoef(drawn[:-1, 0], drawn[1:, 0])[0, 1]) < 0.02
    np.testing.assert_array_equal(poisson.weights(7, rows[100:200], 40), drawn[100:200])  # any chunk
    np.testing.assert_array_equal(poisson.weights(7, rows[:100], 10), drawn[:100, :10])  # any resample count
    assert not np.array_equal(poisson.weights(8, rows[:100], 40), drawn[:100])


def test_parquet_outcome_columns_of_other_types_read_as_their_labels(make_app: Any) -> None:
    """A binary, dictionary or string outcome column holds the labels as they are; a float32 0/1 column reads
    as ``0.0``/``1.0`` (not classes of the loan model: named in the 422)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    app = make_app()
    token = token_of(app)
    frame = loan_frame(40)
    options = {**OPTIONS, "outcome_column": LOAN_TARGET}
    labels = frame[LOAN_TARGET].tolist()
    table = pa.Table.from_pandas(frame.drop(columns=[LOAN_TARGET]), preserve_index=False)

    def submitted(column: Any) -> Any:
        sink = io.BytesIO()
        pq.write_table(table.append_column(LOAN_TARGET, column), sink)
        return submit_job(app, sink.getvalue(), options, token, "rows.parquet")

    for column in (
        pa.array([label.encode() for label in labels], pa.binary()),
        pa.array(labels, pa.string()).dictionary_encode(),
        pa.array(labels, pa.large_string()),
    ):
        answer = submitted(column)
        assert answer.status_code == 202, (column.type, answer.get_json())
    floats = pa.array([1.0 if label == "good" else 0.0 for label in labels], pa.float32())
    problem = assert_problem(submitted(floats), 422)
    assert "'0.0', '1.0'" in problem["detail"], problem
