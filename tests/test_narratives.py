"""Plain-language summaries (``?narrative=true``): every number in a sentence is parsed back and compared with
the number it describes in the same envelope (at the stated rounding), lists come in the stated order
(|attribution|, rank, effort), display names and units come from the manifest, the same explanation gives the
same words, and the audit record holds exactly the summaries the client got."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from text_oracles import tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload

from api.http.app import create_app
from api.methods.narration import summaries
from explainers.narratives import (
    ATTENTION_CAVEAT,
    ATTRIBUTION_CAVEAT,
    COUNTERFACTUAL_CAVEAT,
    DECIMALS,
    EFFORT_RULE,
    counterfactual_effort,
    effort_scales,
)
from model_store.manifest import parse_manifest

DATA = Path(__file__).parent / "data"
DECLINED = json.loads((DATA / "loan_declined.json").read_text())
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
TEXT = "Crushing chest pain and sweating since this morning."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Served:
    def __init__(self, app: Flask, tokens: dict[str, str]) -> None:
        self.app, self.tokens, self.client = app, tokens, app.test_client()
        self.store = app.extensions["candor"].store

    def explain(self, name: str, route: str, body: dict[str, Any], query: str = "?narrative=true") -> Any:
        response = self.client.post(
            f"/v1/models/{name}/versions/1/explain/{route}{query}",
            json=body,
            headers=bearer(self.tokens["explain"]),
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        return response.get_json()

    def manifest(self, name: str) -> Any:
        return self.store.registry.resolve(name, 1).manifest

    def model(self, name: str) -> Any:
        return self.store.registry.load(self.store.registry.resolve(name, 1))


@pytest.fixture(scope="module")
def loan(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One app over a copy of the demo data for the module's read-mostly requests."""
    data = tmp_path_factory.mktemp("narratives") / "data"
    shutil.copytree(demo_dir, data)
    app = create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}"})
    store = app.extensions["candor"].store
    yield Served(app, {"explain": store.keys.create("n", ["explain", "audit:read"])[0]})
    store.close()


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app = text_app(tmp_path_factory.mktemp("narratives-text") / "data")
    tokens = tokens_for(app)
    uploaded = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(tmp_path_factory)))
    assert uploaded.status_code == 201, uploaded.get_json()
    yield Served(app, tokens)
    app.extensions["candor"].store.close()


# -- parsing numbers back ------------------------------------------------------------------------------------
def numbers(summary: str, manifest: Any, *known: str) -> list[str]:
    """The numbers of a summary in order, once quoted values, units, display names, caveats and the
    ``known`` strings (reason texts) are taken out (the effort rule states a constant 1)."""
    text = summary
    for caveat in (ATTRIBUTION_CAVEAT, COUNTERFACTUAL_CAVEAT, ATTENTION_CAVEAT, EFFORT_RULE, *known):
        text = text.replace(caveat, " ")
    text = re.sub(r"'[^']*'", " ", text)
    units = sorted({f.unit for f in manifest.features if f.unit}, key=len, reverse=True)
    for word in units + [f.display_name or f.name for f in manifest.features]:
        text = text.replace(word, " ")
    return NUMBER.findall(text)


def same(parsed: list[str], expected: list[tuple[float, str | None]]) -> None:
    """Each parsed number equals its expected value rounded as stated (exactly for a value shown as sent)."""
    assert len(parsed) == len(expected), (parsed, expected)
    for got, (value, quantity) in zip(parsed, expected, strict=True):
        if quantity is None:
            assert float(got) == float(value), (got, value)
        else:
            decimals = DECIMALS[quantity]
            assert got == f"{value:.{decimals}f}" or got == f"{value:+.{decimals}f}", (got, value)
            assert abs(float(got) - value) <= 0.5 * 10**-decimals + 1e-12


def shown_value(value: Any) -> list[tuple[float, str | None]]:
    """A feature value as a summary shows it: numbers as sent, categories quoted (not parsed)."""
    return [(value, None)] if isinstance(value, int | float) and not isinstance(value, bool) else []


# -- SHAP ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options", [{}, {"top_k": 2}, {"layout": "columnar", "output": "probability"}, {"output": "log_odds"}]
)
def test_shap_summary_states_the_envelopes_numbers_in_order(loan: Served, options: dict[str, Any]) -> None:
    body = {"instances": DECLINED["instances"] + [dict(DECLINED["instances"][0], duration_in_month=6)]}
    envelope = loan.explain("loan", "shap", {**body, **options})
    manifest = loan.manifest("loan")
    space = {"log_odds": "log-odds", "probability": "probability"}[envelope["output"]["space"]]
    for result in envelope["results"]:
        summary = result["summary"]
        label = result["prediction"]["label"]
        if "attributions" in result:
            items = [(a["feature"], a["value"], a["attribution"]) for a in result["attributions"]]
        else:
            order = envelope["output"]["feature_order"]
            items = [(f, None, v) for f, v in zip(order, result["attribution_values"], strict=True)]
        ranked = sorted(items, key=lambda item: -abs(item[2]))
        expected: list[tuple[float, str | None]] = [
            (result["prediction"]["probabilities"][label], "probability"),
            (result["base_value"], "attribution"),
            (result["output_value"], "attribution"),
        ]
        for _, value, attribution in ranked[:3]:
            expected += [*shown_value(value), (attribution, "attribution")]
        rest = sum(a for *_, a in ranked[3:]) + result.get("other_attribution", 0.0)
        expected += [(len(manifest.features) - len(ranked[:3]), None), (rest, "attribution")]
        same(numbers(summary, manifest), expected)
        positions = [
            summary.index(manifest.feature(f).display_name + (" =" if value is not None else " ("))
            for f, value, _ in ranked[:3]
        ]
        assert positions == sorted(positions)  # largest |attribution| first
        assert f"The model rates this case '{label}' with probability" in summary
        assert f"Attributions are in {space} of '{result['target']}'" in summary
        assert ATTRIBUTION_CAVEAT in summary


def test_display_names_and_units_come_from_the_manifest(loan: Served) -> None:
    result = loan.explain("loan", "shap", DECLINED)["results"][0]
    assert "duration in month = 48 months" in result["summary"]
    assert "age in years = 22 years" in result["summary"]
    assert "duration_in_month" not in result["summary"]
    manifest = parse_manifest(
        {
            "name": "m",
            "task": "regression",
            "target": "price",
            "features": [
                {"name": "sqm", "type": "numeric", "unit": "m²", "display_name": "Floor area"},
                {"name": "zone", "type": "categorical", "categories": ["A", "B"], "display_name": "Zone"},
                {"name": "lift", "type": "boolean"},
            ],
        }
    )
    envelope = {
        "kind": "attribution",
        "output": {"space": "raw", "target": None, "target_rule": "regression_value"},
        "results": [
            {
                "prediction": {"value": 312.456},
                "target": None,
                "base_value": 250.0,
                "output_value": 312.456,
                "attributions": [
                    {"feature": "sqm", "value": 81.5, "attribution": 70.004},
                    {"feature": "zone", "value": "B", "attribution": -9.0},
                    {"feature": "lift", "value": True, "attribution": 1.452},
                ],
                "other_attribution": 0.0,
            }
        ],
    }
    (summary,) = summaries(envelope, manifest)
    assert summary.startswith("The model predicts 312.46 for this case.")
    assert "in the output units of the model" in summary
    assert "Floor area = 81.5 m² (+70.00), Zone = 'B' (-9.00) and lift = yes (+1.45)." in summary
    assert "Positive values raise the prediction" in summary
    assert summaries(envelope, manifest) == [summary]  # a pure function: same envelope, same words


# -- counterfactuals -----------------------------------------------------------------------------------------
def independent_effort(change: dict[str, Any], reference: Any, manifest: Any) -> float:
    """|to - from| / MAD of the reference column (std if 0) for numbers, 1 otherwise (written from the
    definition, not from the module)."""
    spec = manifest.feature(change["feature"])
    if spec.type != "numeric":
        return 1.0
    column = reference[spec.name].to_numpy(dtype=float)
    scale = float(np.median(np.abs(column - np.median(column)))) or float(np.std(column)) or 1.0
    return abs(change["to"] - change["from"]) / scale


def test_counterfactual_summary_lists_options_and_changes_by_effort(loan: Served) -> None:
    envelope = loan.explain("loan", "counterfactuals", {**DECLINED, "total_cfs": 6, "seed": 3})
    result = envelope["results"][0]
    manifest, model = loan.manifest("loan"), loan.model("loan")
    options = []
    for index, cf in enumerate(result["counterfactuals"]):
        efforts = [independent_effort(c, model.reference, manifest) for c in cf["changes"]]
        changes = sorted(zip(efforts, range(len(efforts)), cf["changes"]), key=lambda c: (c[0], c[1]))
        options.append((sum(e for e, _, _ in changes), index, changes))
    options.sort(key=lambda o: (o[0], o[1]))
    assert len(options) >= 3
    label = result["prediction"]["label"]
    expected: list[tuple[float, str | None]] = [(result["prediction"]["probabilities"][label], "probability")]
    expected.append((len(options), None))
    for number, (total, index, changes) in enumerate(options, start=1):
        expected += [(number, None), (total, "effort")]
        for effort, _, change in changes:
            expected += shown_value(change["from"]) + shown_value(change["to"]) + [(effort, "effort")]
        cf = result["counterfactuals"][index]
        expected.append((cf["prediction"]["probabilities"][cf["prediction"]["label"]], "probability"))
    same(numbers(result["summary"], manifest), expected)
    stated = [float(x) for x in re.findall(r"Option \d+, effort (\d+\.\d+)", result["summary"])]
    assert stated == sorted(stated)
    assert COUNTERFACTUAL_CAVEAT in result["summary"]
    # the effort is the search's own distance: mean effort / features = the reported proximity
    scales = effort_scales(model)
    mean = np.mean([counterfactual_effort(cf, scales) for cf in result["counterfactuals"]])
    assert mean / len(manifest.features) == pytest.approx(result["metrics"]["proximity"], rel=1e-12)


def test_counterfactual_summary_without_counterfactuals(loan: Served) -> None:
    approved = dict(
        DECLINED["instances"][0],
        duration_in_month=6,
        status_of_existing_checking_account="no checking account",
    )
    body = {"instances": [approved], "features_to_vary": ["telephone"]}
    result = loan.explain("loan", "counterfactuals", body)["results"][0]
    assert result["status"] in ("already_desired", "no_counterfactual")
    if result["status"] == "already_desired":
        assert "That already is the desired outcome 'good': nothing needs to change." in result["summary"]
    else:
        assert f"No counterfactual reaching 'good' was found ({result['reason']})." in result["summary"]


# -- reasons -------------------------------------------------------------------------------------------------
def test_reasons_summary_lists_the_ranked_reasons(loan: Served) -> None:
    envelope = loan.explain("loan", "reasons", {**DECLINED, "with_counterfactual": True})
    result = envelope["results"][0]
    manifest = loan.manifest("loan")
    summary = result["summary"]
    reasons = result["reasons"]
    label = result["prediction"]["label"]
    expected: list[tuple[float, str | None]] = [(result["prediction"]["probabilities"][label], "probability")]
    for reason in reasons:
        expected += [
            (reason["rank"], None),
            *shown_value(reason["value"]),
            (reason["attribution"], "attribution"),
        ]
        for change in (reason["address"] or {}).get("changes", []):
            expected += shown_value(change["from"]) + shown_value(change["to"])
    expected += [(p["would_rank"], None) for p in result["protected_excluded"]]
    same(numbers(summary, manifest, *(r["text"] for r in reasons)), expected)
    positions = [summary.index(f"{r['rank']}. {r['text']} (") for r in reasons]
    assert positions == sorted(positions)
    assert [r["rank"] for r in reasons] == list(range(1, len(reasons) + 1))
    assert "age in years (rank 3)" in summary  # a protected feature is named, never given as a reason
    assert "log-odds of 'good'" in summary
    assert ATTRIBUTION_CAVEAT in summary


# -- text models ---------------------------------------------------------------------------------------------
def test_token_attribution_summary_names_the_top_words(text: Served) -> None:
    envelope = text.explain("triage", "attributions", {"instances": [{"text": TEXT}]})
    result = envelope["results"][0]
    top = sorted(result["words"], key=lambda w: -abs(w["attribution"]))[:3]
    quoted = re.findall(r"'([^']*)' \(([+-]\d+\.\d+)\)", result["summary"])
    assert [w for w, _ in quoted] == [w["word"] for w in top]
    same([v for _, v in quoted], [(w["attribution"], "token_attribution") for w in top])
    total = re.search(r"add up to ([+-]\d+\.\d+)", result["summary"])
    assert total is not None
    same([total.group(1)], [(result["total_attribution"], "token_attribution")])
    assert f"in probability of '{result['target']}'" in result["summary"]
    assert ATTRIBUTION_CAVEAT in result["summary"]


@pytest.mark.parametrize(
    ("options", "described"),
    [
        ({"rollout": True}, "the attention rollout over layers 0 and 1"),
        ({"aggregate": "mean", "layers": [0]}, "layer 0 (mean over heads 0 and 1)"),
        ({"encoding": "base64", "dtype": "float16"}, "layer 1 (mean over heads 0 and 1)"),
    ],
)
def test_attention_summary_names_the_most_attended_tokens(
    text: Served, options: dict[str, Any], described: str
) -> None:
    envelope = text.explain("triage", "attention", {"instances": [{"text": TEXT}], **options})
    result = envelope["results"][0]
    if "rollout" in result:
        matrix = np.asarray(result["rollout"]["weights"], dtype=float)
    elif options.get("aggregate") == "mean":
        matrix = np.asarray(result["attention"][0]["weights"], dtype=float)
    else:
        from text_oracles import decode_weights

        matrix = np.mean(
            [decode_weights(e["weights"]) for e in result["attention"] if e["layer"] == 1], axis=0
        )
    received = matrix.mean(axis=0)
    ranked = sorted(
        (i for i, t in enumerate(result["tokens"]) if not t["special"]), key=lambda i: -received[i]
    )[:3]
    quoted = re.findall(r"'([^']*)' \((\d+\.\d+)\)", result["summary"])
    assert [t for t, _ in quoted] == [result["tokens"][i]["token"] for i in ranked]
    same([v for _, v in quoted], [(float(received[i]), "attention") for i in ranked])
    assert f"In {described}," in result["summary"]
    assert ATTENTION_CAVEAT in result["summary"]


# -- determinism, records, replay ----------------------------------------------------------------------------
def test_same_explanation_same_words_and_recomputable_from_the_record(loan: Served) -> None:
    first = loan.explain("loan", "counterfactuals", DECLINED)
    second = loan.explain("loan", "counterfactuals", DECLINED)
    assert [r["summary"] for r in first["results"]] == [r["summary"] for r in second["results"]]
    record = loan.store.audit.get(first["id"])
    scales = effort_scales(loan.model("loan"))
    assert summaries(record["explanation"], loan.manifest("loan"), scales) == [
        r["summary"] for r in first["results"]
    ]


def test_no_summary_unless_asked(loan: Served) -> None:
    envelope = loan.explain("loan", "shap", DECLINED, query="")
    assert "summary" not in envelope["results"][0]
    assert loan.store.audit.get(envelope["id"])["request"]["options"] == {}
    response = loan.client.post(
        "/v1/models/loan/versions/1/explain/shap?narrative=maybe",
        json=DECLINED,
        headers=bearer(loan.tokens["explain"]),
    )
    assert response.status_code == 422
    assert "narrative" in response.get_json()["errors"]


@pytest.mark.parametrize("route", ["explain/shap", "explain/counterfactuals", "explain/reasons", ":explain"])
def test_the_record_holds_exactly_the_summaries_the_client_got(
    client: FlaskClient, keys: dict[str, str], route: str
) -> None:
    url = "/v1/models/loan:explain" if route == ":explain" else f"/v1/models/loan/versions/1/{route}"
    response = client.post(url + "?narrative=true", json=DECLINED, headers=bearer(keys["explain"]))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert all(r["summary"] for r in body["results"])
    record = client.get(f"/v1/explanations/{body['id']}", headers=bearer(keys["audit:read"])).get_json()
    assert record["explanation"] == body
    assert record["request"]["options"]["narrative"] is True
    replay = client.post(
        f"/v1/explanations/{body['id']}/replay", headers=bearer(keys["audit:read"])
    ).get_json()
    assert replay["within_tolerance"], replay
