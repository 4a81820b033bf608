"""Pictures of recorded explanations and of global importance: every kind renders as an SVG (XML with an <svg>
root of the stated size whose text elements carry the expected labels: display names, values, tokens) and as a
PNG (the signature, and the stated pixel size in its IHDR chunk); bad requests are RFC 9457 problems."""

from __future__ import annotations

import json
import shutil
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from text_oracles import tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload

from api.http.app import create_app
from explainers.narratives import Names, fixed, ranked_options, signed
from explainers.plots import DPI, SIZES, pixel_size

DATA = Path(__file__).parent / "data"
DECLINED = json.loads((DATA / "loan_declined.json").read_text())
SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PROBLEM = "application/problem+json"
TEXT = "Crushing chest pain and sweating since this morning."


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Served:
    def __init__(self, app: Flask, tokens: dict[str, str]) -> None:
        self.app, self.tokens, self.client = app, tokens, app.test_client()
        self.store = app.extensions["candor"].store

    def record(self, name: str, route: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post(
            f"/v1/models/{name}/versions/1/explain/{route}", json=body, headers=bearer(self.tokens["explain"])
        )
        assert response.status_code == 200, response.get_data(as_text=True)[:2000]
        return response.get_json()  # type: ignore[no-any-return]

    def plot(self, url: str, token: str = "audit:read") -> Any:
        return self.client.get(url, headers=bearer(self.tokens[token]))

    def names(self, name: str) -> Names:
        return Names(self.store.registry.resolve(name, 1).manifest)


@pytest.fixture(scope="module")
def loan(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = tmp_path_factory.mktemp("plots") / "data"
    shutil.copytree(demo_dir, data)
    app = create_app({"data_dir": data, "database_url": f"sqlite:///{data / 'candor.db'}"})
    store = app.extensions["candor"].store
    tokens = {s: store.keys.create(f"plots-{s}", [s])[0] for s in ("explain", "audit:read")}
    tokens["clinical-only"] = store.keys.create("clinical-only", ["audit:read"], models=["clinical"])[0]
    yield Served(app, tokens)
    store.close()


@pytest.fixture(scope="module")
def text(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app = text_app(tmp_path_factory.mktemp("plots-text") / "data")
    tokens = tokens_for(app)
    uploaded = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(tmp_path_factory)))
    assert uploaded.status_code == 201, uploaded.get_json()
    yield Served(app, tokens)
    app.extensions["candor"].store.close()


def svg_text(response: Any, picture: str) -> str:
    """The SVG's text content after checking it is one: XML, an <svg> root, the stated width and height."""
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.mimetype == "image/svg+xml"
    root = ET.fromstring(response.data)
    assert root.tag == f"{SVG}svg"
    width, height = SIZES[picture]
    assert (root.get("width"), root.get("height")) == (f"{width * 72:g}pt", f"{height * 72:g}pt")
    return " ".join("".join(node.itertext()) for node in root.iter(f"{SVG}text"))


def assert_png(response: Any, picture: str) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)[:1000]
    assert response.mimetype == "image/png"
    data = response.data
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == pixel_size(picture)
    assert pixel_size(picture) == (SIZES[picture][0] * DPI, SIZES[picture][1] * DPI)


def assert_problem(response: Any, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:1000]
    assert response.mimetype == PROBLEM
    if field is not None:
        assert field in response.get_json()["errors"], response.get_json()


# -- tabular records -----------------------------------------------------------------------------------------
def test_shap_waterfall(loan: Served) -> None:
    envelope = loan.record("loan", "shap", DECLINED)
    result = envelope["results"][0]
    url = f"/v1/explanations/{envelope['id']}/plot"
    labels = svg_text(loan.plot(url), "waterfall")
    for item in result["attributions"][:3]:
        assert signed(item["attribution"], "attribution") in labels
    assert "duration in month = 48 months" in labels
    assert "age in years = 22 years" in labels
    assert f"{len(result['attributions']) - 9} other features" in labels
    assert f"base value {fixed(result['base_value'], 'attribution')}" in labels
    assert "log-odds of 'good'" in labels
    assert_png(loan.plot(url + "?format=png"), "waterfall")
    assert loan.plot(url).data == loan.plot(url).data  # the same record draws the same SVG


def test_columnar_waterfall_takes_values_from_the_recorded_request(loan: Served) -> None:
    envelope = loan.record("loan", "shap", {**DECLINED, "layout": "columnar"})
    labels = svg_text(loan.plot(f"/v1/explanations/{envelope['id']}/plot"), "waterfall")
    assert "duration in month = 48 months" in labels


def test_counterfactual_table(loan: Served) -> None:
    envelope = loan.record("loan", "counterfactuals", DECLINED)
    result = envelope["results"][0]
    names = loan.names("loan")
    url = f"/v1/explanations/{envelope['id']}/plot"
    labels = svg_text(loan.plot(url), "counterfactual")
    model = loan.store.registry.load(loan.store.registry.resolve("loan", 1))
    from explainers.narratives import effort_scales

    for number, (effort, counterfactual, changes) in enumerate(
        ranked_options(result, effort_scales(model)), 1
    ):
        assert f"option {number}" in labels
        assert f"effort {fixed(effort, 'effort')}" in labels
        for _, change in changes:
            assert names.display(change["feature"]) in labels
            assert names.value(change["feature"], change["to"]) in labels
    assert "this case" in labels
    assert_png(loan.plot(url + "?format=png"), "counterfactual")


def test_reasons_bars(loan: Served) -> None:
    envelope = loan.record("loan", "reasons", DECLINED)
    url = f"/v1/explanations/{envelope['id']}/plot"
    labels = svg_text(loan.plot(url), "reasons")
    for reason in envelope["results"][0]["reasons"]:
        assert f"{reason['rank']}. {reason['text']}" in labels
        assert signed(reason["attribution"], "attribution") in labels
    assert "age in years (would rank 3)" in labels
    assert_png(loan.plot(url + "?format=png"), "reasons")


@pytest.mark.parametrize("kind", ["bar", "beeswarm"])
def test_importance_pictures(loan: Served, kind: str) -> None:
    url = f"/v1/models/loan/versions/1/importance/plot?kind={kind}"
    labels = svg_text(loan.plot(url, "explain"), "importance" if kind == "bar" else "beeswarm")
    importance = loan.client.get(
        "/v1/models/loan/versions/1/importance", headers=bearer(loan.tokens["explain"])
    )
    top = importance.get_json()["features"][0]
    names = loan.names("loan")
    assert names.display(top["feature"]) in labels
    assert "log-odds of 'good'" in labels
    if kind == "bar":
        assert fixed(top["importance"], "attribution") in labels
    else:
        assert "200 reference rows" in labels
    assert_png(loan.plot(url + "&format=png", "explain"), "importance" if kind == "bar" else "beeswarm")


# -- text records --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "query", "title"),
    [
        ({"rollout": True}, "", "the attention rollout over layers 0 and 1"),
        ({"rollout": True}, "?view=head&layer=0&head=1", "layer 0, head 1"),
        ({}, "?view=layer_mean&layer=0", "layer 0 (mean over heads 0 and 1)"),
        ({"aggregate": "max"}, "", "layer 1 (max over heads 0 and 1, rows renormalised)"),
        ({"encoding": "base64", "dtype": "float16"}, "?view=head", "layer 1, head 0"),
        ({"format": "bertviz"}, "?view=layer_mean", "layer 1 (mean over heads 0 and 1)"),
    ],
)
def test_attention_heatmap(text: Served, options: dict[str, Any], query: str, title: str) -> None:
    envelope = text.record("triage", "attention", {"instances": [{"text": TEXT}], **options})
    url = f"/v1/explanations/{envelope['id']}/plot{query}"
    labels = svg_text(text.plot(url), "attention")
    assert title in labels
    for token in ("[CLS]", "chest", "pain", "[SEP]"):
        assert token in labels
    assert_png(text.plot(url + ("&" if query else "?") + "format=png"), "attention")


def test_highlighted_words(text: Served) -> None:
    envelope = text.record(
        "triage", "attributions", {"instances": [{"text": TEXT}, {"text": "Routine follow-up."}]}
    )
    url = f"/v1/explanations/{envelope['id']}/plot?instance=1"
    labels = svg_text(text.plot(url), "text")
    result = envelope["results"][1]
    for word in result["words"]:
        assert word["word"] in labels
    top = max(result["words"], key=lambda w: abs(w["attribution"]))
    assert f"'{top['word']}' {signed(top['attribution'], 'token_attribution')}" in labels
    assert_png(text.plot(url + "&format=png"), "text")


def test_a_long_text_still_fits_the_stated_size(text: Served) -> None:
    body = {
        "instances": [{"text": " ".join(["chest pain radiating to the left arm"] * 12)}],
        "truncate": True,
    }
    envelope = text.record("triage", "attributions", body)
    url = f"/v1/explanations/{envelope['id']}/plot"
    assert "chest" in svg_text(text.plot(url), "text")
    assert_png(text.plot(url + "?format=png"), "text")


# -- refusals ------------------------------------------------------------------------------------------------
def test_attention_views_the_record_does_not_hold(text: Served) -> None:
    envelope = text.record(
        "triage", "attention", {"instances": [{"text": TEXT}], "layers": [1], "aggregate": "mean"}
    )
    base = f"/v1/explanations/{envelope['id']}/plot"
    assert_problem(text.plot(base + "?view=rollout"), 422, "view")
    assert_problem(text.plot(base + "?view=head"), 422, "head")
    assert_problem(text.plot(base + "?view=layer_mean&layer=0"), 422, "layer")
    assert_problem(text.plot(base + "?view=everything"), 422, "view")


def test_bad_requests_are_problems(loan: Served) -> None:
    envelope = loan.record("loan", "shap", DECLINED)
    base = f"/v1/explanations/{envelope['id']}/plot"
    assert_problem(loan.plot("/v1/explanations/no-such-record/plot"), 404)
    assert_problem(loan.plot(base + "?format=gif"), 422, "format")
    assert_problem(loan.plot(base + "?instance=1"), 422, "instance")
    assert_problem(loan.plot(base + "?instance=-1"), 422, "instance")
    assert_problem(loan.plot(base + "?view=rollout"), 422, "view")
    assert_problem(loan.plot(base, "clinical-only"), 404)  # a record of a model the key may not see
    assert_problem(loan.plot(base, "explain"), 403)
    importance = "/v1/models/loan/versions/1/importance/plot"
    assert_problem(loan.plot(importance + "?kind=pie", "explain"), 422, "kind")
    assert_problem(loan.plot(importance + "?format=jpeg", "explain"), 422, "format")
    assert_problem(loan.plot("/v1/models/nope/versions/1/importance/plot", "explain"), 404)


def test_text_models_have_no_importance_picture(text: Served) -> None:
    assert_problem(text.plot("/v1/models/triage/versions/1/importance/plot", "explain"), 422, "method")


@pytest.mark.parametrize("method", ["pearson", "spearman", "cramers_v"])
def test_profile_correlation_heatmap(loan: Served, method: str) -> None:
    """The profile's matrix as a heatmap: every feature's display name and (small matrices) every value."""
    url = f"/v1/models/loan/versions/1/profile/plot?method={method}"
    labels = svg_text(loan.plot(url, "explain"), "correlations")
    profile = loan.client.get("/v1/models/loan/versions/1/profile", headers=bearer(loan.tokens["explain"]))
    correlations = profile.get_json()["correlations"]
    features = correlations["numeric_features" if method != "cramers_v" else "categorical_features"]
    names = loan.names("loan")
    assert all(names.display(f)[:20] in labels for f in features)
    if len(features) <= 12:
        values = [v for row in correlations[method] for v in row if v is not None]
        assert all(f"{v:.2f}" in labels for v in values)
    assert_png(loan.plot(url + "&format=png", "explain"), "correlations")
    assert_problem(
        loan.plot("/v1/models/loan/versions/1/profile/plot?method=kendall", "explain"), 422, "method"
    )


def test_text_models_have_no_profile_picture(text: Served) -> None:
    assert_problem(text.plot("/v1/models/triage/versions/1/profile/plot", "explain"), 422)
