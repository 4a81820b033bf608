"""The two response layouts of SHAP explanations carry the same numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from api.demo import german_credit

PATH = "/v1/models/loan/versions/1/explain/shap"


def loan_rows(n: int) -> list[dict]:
    frame = german_credit().drop(columns=["creditability"]).head(n)
    return json.loads(frame.to_json(orient="records"))


def test_columnar_layout_equals_records_layout(client, auth):
    rows = loan_rows(25)
    records = client.post(PATH, json={"instances": rows}, headers=auth).get_json()
    columnar = client.post(PATH, json={"instances": rows, "layout": "columnar"}, headers=auth).get_json()
    order = columnar["output"]["feature_order"]
    assert sorted(order) == sorted(rows[0])
    assert columnar["method"]["params"]["layout"] == "columnar"
    groups = columnar["output"]["groups"]  # the loan manifest declares groups: defined once per answer
    assert [g["group"] for g in groups] == ["applicant", "loan"]
    for by_record, by_column in zip(records["results"], columnar["results"], strict=True):
        expected = {a["feature"]: a["attribution"] for a in by_record["attributions"]}
        by_feature = dict(zip(order, by_column["attribution_values"], strict=True))
        assert by_feature == expected
        for key in ("prediction", "target", "output_value", "base_value", "additivity_residual"):
            assert by_column[key] == by_record[key]
        assert "attributions" not in by_column and "groups" not in by_column
        assert [{"group": g["group"], "features": g["features"]} for g in by_record["groups"]] == groups
        sums = by_column["group_attribution_values"]
        assert sums == [g["attribution"] for g in by_record["groups"]]
        for group, total in zip(groups, sums, strict=True):
            assert total == pytest.approx(sum(by_feature[f] for f in group["features"]), abs=1e-12)


def test_columnar_layout_refuses_top_k(client, auth):
    response = client.post(
        PATH, json={"instances": loan_rows(1), "layout": "columnar", "top_k": 3}, headers=auth
    )
    assert response.status_code == 422
    assert "top_k" in response.get_json()["errors"]


def test_reported_probabilities_are_the_models_own(client, auth, app):
    """Candor derives probabilities from the margin when it verified they are its sigmoid; they must still
    equal predict_proba."""
    rows = loan_rows(200)
    body = client.post(PATH, json={"instances": rows}, headers=auth).get_json()
    store = app.extensions["candor"].store
    pipeline = store.registry.load(store.registry.resolve("loan", "1")).estimator
    expected = pipeline.predict_proba(german_credit().drop(columns=["creditability"]).head(200))
    got = np.array([[r["prediction"]["probabilities"][c] for c in ("bad", "good")] for r in body["results"]])
    assert np.abs(got - expected).max() < 1e-12
    labels = [r["prediction"]["label"] for r in body["results"]]
    assert labels == list(pipeline.predict(german_credit().drop(columns=["creditability"]).head(200)))


def test_manifest_defaults_apply_when_the_request_leaves_options_out(client, auth, app):
    from tiny_models import tiny_frame, tiny_manifest, tiny_pipeline

    from model_store.manifest import parse_manifest
    from model_store.reference import to_parquet
    from model_store.safe_load import dump_skops

    frame = tiny_frame()
    manifest = tiny_manifest("defaults") | {
        "defaults": {"shap": {"output": "probability", "seed": 7, "top_k": 2}}
    }
    registry = app.extensions["candor"].store.registry
    registry.register_tabular(parse_manifest(manifest), dump_skops(tiny_pipeline(frame)), to_parquet(frame))
    rows = json.loads(frame[["size", "colour", "weight"]].head(2).to_json(orient="records"))
    path = "/v1/models/defaults/versions/1/explain/shap"
    body = client.post(path, json={"instances": rows}, headers=auth).get_json()
    assert body["output"]["space"] == "probability"
    assert body["method"]["params"]["seed"] == 7
    assert [len(r["attributions"]) for r in body["results"]] == [2, 2]
    overridden = client.post(
        path, json={"instances": rows, "seed": 1, "output": "raw"}, headers=auth
    ).get_json()
    assert overridden["method"]["params"]["seed"] == 1
    assert overridden["output"]["space"] == "log_odds"


def test_a_columnar_record_from_before_output_groups_replays_as_equal(client, auth):
    """Columnar records made before the groups moved to ``output.groups`` carried them per row; replay
    compares their numbers with today's answer."""
    from api.service.replay import compare

    now = client.post(PATH, json={"instances": loan_rows(3), "layout": "columnar"}, headers=auth).get_json()
    groups = now["output"]["groups"]
    before = {
        **now,
        "output": {k: v for k, v in now["output"].items() if k != "groups"},
        "results": [
            {
                **{k: v for k, v in r.items() if k != "group_attribution_values"},
                "groups": [
                    {**g, "attribution": sum_}
                    for g, sum_ in zip(groups, r["group_attribution_values"], strict=True)
                ],
            }
            for r in now["results"]
        ],
    }
    assert compare(before, now, "shap")["identical"] is True
    before["results"][1]["groups"][0]["attribution"] += 1e-3
    outcome = compare(before, now, "shap")
    assert outcome["identical"] is False and outcome["max_abs_diff"] == pytest.approx(1e-3)
