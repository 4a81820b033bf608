"""The rules every explanation method keeps, checked over the registry (``api.methods.registry.specs()``),
so a method added later is covered by the same tests and a method that forgets a part fails.

Structurally (no model): unique names, an adapter that imports, request and job schemas that load a minimal
request and the method's ``example`` options, a picture drawer that exists, caps, limits and settings that
run on default settings, an OpenAPI route. End to end, on a model of the spec's flavour (the demo ``loan``
model for tabular methods, the tiny BERT of ``text_oracles`` for text ones): the explain route answers an
envelope of the spec's kind valid against its response schema, with a summary per result; the audit record
holds it; replay is within the spec's tolerance; the record's picture is an SVG of its drawer's size; a
3-row job gives 3 result lines, each with a record, and a summary with the spec's own figures. A part a
method lacks must be declared in ``spec.lacks`` (and then is checked to be refused cleanly).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_audit_text import resolved
from test_jobs import csv_bytes, dask_client, result_lines, run_jobs, submit_file  # noqa: F401 (dask_client: a fixture)
from text_oracles import TEXTS, tar_of_directory, text_app, tiny_bert_dir, tokens_for, upload

from api.demo import LOAN_TARGET, german_credit
from api.http.app import create_app
from api.methods.registry import MODULES, NAMES, specs
from api.methods.spec import MethodSpec
from api.settings import Settings
from explainers.base import Explainer
from explainers.plots import DRAWERS, Drawer

DATA = Path(__file__).parent / "data"
SPECS = specs()
IDS = [s.name for s in SPECS]
PARTS = {"narrative", "picture", "summary"}
"""The parts a spec may declare it lacks (``MethodSpec.lacks``)."""
SVG = "{http://www.w3.org/2000/svg}"
PROBLEM = "application/problem+json"
JOB_CHUNK_ROWS = 2
"""A 3-row job runs in two chunks, so its summary is merged from two accumulators."""


def _tabular_rows() -> list[dict[str, Any]]:
    declined = json.loads((DATA / "loan_declined.json").read_text())["instances"]
    frame = german_credit().drop(columns=[LOAN_TARGET]).head(2)
    return declined + json.loads(frame.to_json(orient="records"))  # type: ignore[no-any-return]


ROWS: dict[str, list[dict[str, Any]]] = {
    "tabular": _tabular_rows(),
    "text": [{"text": t} for t in [*TEXTS, "Sudden shortness of breath at rest."]],
}
"""Three rows per flavour: the explain request sends the first two, the job all three."""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rows_for(spec: MethodSpec) -> list[dict[str, Any]]:
    assert spec.flavour in ROWS, f"{spec.name}: no model of flavour {spec.flavour!r} in the rule test"
    return ROWS[spec.flavour]


def drawer_of(spec: MethodSpec) -> Drawer:
    assert spec.picture is not None
    drawer = spec.picture.drawer
    return DRAWERS[drawer] if isinstance(drawer, str) else drawer


# -- structure (no model) ---------------------------------------------------------------------------------
def test_names_are_unique_and_registered() -> None:
    names = [s.name for s in SPECS]
    kinds = [s.envelope_kind for s in SPECS]
    assert len(set(names)) == len(names), names
    assert len(set(kinds)) == len(kinds), kinds
    assert names == list(NAMES) == list(MODULES)
    assert all(s.name == s.name.strip().lower() and "/" not in s.name for s in SPECS)


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_spec_parts_load(spec: MethodSpec) -> None:
    module_name, _, class_name = spec.adapter.partition(":")
    adapter = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(adapter, type) and issubclass(adapter, Explainer), spec.adapter

    rows = rows_for(spec)[:1]
    loaded = spec.request_schema().load(
        {"instances": rows, **spec.example}
    )  # the example holds what is required
    assert loaded["instances"] == rows
    assert {k: v for k, v in loaded.items() if k in spec.example} == dict(spec.example)
    options = spec.options_schema(exclude=("instances",))
    probe = {**spec.example, **spec.probe_options}
    assert {k: v for k, v in options.load(probe).items() if k in probe} == probe

    settings = Settings.load({}, environ={})
    assert all(isinstance(settings.method_setting(name), int) for name in spec.settings)
    most = spec.max_instances(settings)
    assert most is None or most >= 1
    caps, limits = spec.caps(settings), spec.limits(settings)
    assert all(isinstance(v, int) and v > 0 for v in caps.values()), caps
    assert set(caps) <= set(spec.request_schema().fields), "a cap bounds a client option"
    assert isinstance(limits, dict) and not set(limits) & set(options.fields), "limits are not options"
    assert spec.replay_tolerance >= 0

    assert spec.lacks <= PARTS, f"{spec.name}: lacks names no known part: {spec.lacks - PARTS}"
    declared(spec, "narrative", spec.narrative is not None)
    declared(spec, "picture", spec.picture is not None)
    if spec.picture is not None:
        drawer = drawer_of(spec)
        module_name, _, function = drawer.target.partition(":")
        assert callable(getattr(importlib.import_module(module_name), function)), drawer.target
        assert len(drawer.size) == 2 and min(drawer.size) > 0


def declared(spec: MethodSpec, part: str, present: bool) -> None:
    """A part is present, or declared in ``spec.lacks`` (never both, never neither)."""
    if present:
        assert part not in spec.lacks, f"{spec.name} has a {part} but declares it lacks one"
    else:
        assert part in spec.lacks, f"{spec.name} has no {part}: give it one, or declare lacks={{{part!r}}}"


def test_openapi_has_a_route_per_spec(tmp_path: Path) -> None:
    app = create_app({"data_dir": tmp_path, "database_url": f"sqlite:///{tmp_path / 'candor.db'}"})
    try:
        document = app.test_client().get("/v1/openapi.json").get_json()
    finally:
        app.extensions["candor"].store.close()
    for spec in SPECS:
        path = "/v1/models/{name}/versions/{version}" + spec.path
        assert "post" in document["paths"].get(path, {}), f"{path} is not in the OpenAPI document"
        operation = document["paths"][path]["post"]
        assert {"200", "404", "422"} <= set(operation["responses"]), operation["responses"].keys()
        assert operation["summary"].split() == spec.summary.split("\n\n")[0].split()


# -- end to end ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Served:
    app: Flask
    tokens: dict[str, str]
    model: str
    version: str = "1"

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()

    def headers(self, scope: str) -> dict[str, str]:
        return bearer(self.tokens[scope])


class Models:
    """One app per flavour, built on first use and closed at the end of the module."""

    def __init__(self, demo_dir: Path, factory: pytest.TempPathFactory) -> None:
        self.demo_dir, self.factory = demo_dir, factory
        self.served: dict[str, Served] = {}

    def get(self, spec: MethodSpec) -> Served:
        rows_for(spec)  # a flavour the rule test has no model for fails here
        if spec.flavour not in self.served:
            self.served[spec.flavour] = getattr(self, spec.flavour)()
        return self.served[spec.flavour]

    def tabular(self) -> Served:
        data = self.factory.mktemp("rules-tabular") / "data"
        shutil.copytree(self.demo_dir, data)
        url = f"sqlite:///{data / 'candor.db'}"
        app = create_app({"data_dir": data, "database_url": url, "job_chunk_rows": JOB_CHUNK_ROWS})
        store = app.extensions["candor"].store
        tokens = {s: store.keys.create(f"rules-{s}", [s])[0] for s in ("explain", "audit:read")}
        return Served(app, tokens, "loan")

    def text(self) -> Served:
        app = text_app(  # records keep attention weights as blobs: ``recorded`` reads them back
            self.factory.mktemp("rules-text") / "data", job_chunk_rows=JOB_CHUNK_ROWS, audit_attention="full"
        )
        tokens = tokens_for(app)
        uploaded = upload(app, tokens["models:write"], tar_of_directory(tiny_bert_dir(self.factory)))
        assert uploaded.status_code == 201, uploaded.get_json()
        return Served(app, tokens, "triage")

    def close(self) -> None:
        for served in self.served.values():
            served.app.extensions["candor"].store.close()


@pytest.fixture(scope="module")
def models(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Models]:
    built = Models(demo_dir, tmp_path_factory)
    yield built
    built.close()


def explain(served: Served, spec: MethodSpec, narrative: bool) -> Any:
    url = f"/v1/models/{served.model}/versions/{served.version}{spec.path}"
    body = {"instances": rows_for(spec)[:2], **spec.example}
    query = "?narrative=true" if narrative else ""
    return served.client.post(url + query, json=body, headers=served.headers("explain"))


def problem_naming(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == PROBLEM
    assert field in response.get_json()["errors"], response.get_json()


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_explain_record_replay_narrative_and_picture(spec: MethodSpec, models: Models) -> None:
    served = models.get(spec)
    if spec.narrative is None:
        declared(spec, "narrative", False)
        problem_naming(explain(served, spec, narrative=True), 422, "narrative")
    response = explain(served, spec, narrative=spec.narrative is not None)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "application/json"
    envelope = response.get_json()
    assert envelope["kind"] == spec.envelope_kind
    assert spec.response_schema().validate(envelope) == {}
    assert envelope["results"]
    if spec.narrative is not None:
        summaries = [result.get("summary") for result in envelope["results"]]
        assert all(isinstance(s, str) and s.strip() for s in summaries), summaries

    record = recorded(served, spec, envelope["id"])
    assert record["request"]["instances"] == rows_for(spec)[:2]
    assert record["explanation"] == envelope
    assert_replays(served, spec, envelope["id"])
    plot = served.client.get(
        f"/v1/explanations/{envelope['id']}/plot?format=svg", headers=served.headers("audit:read")
    )
    if spec.picture is None:
        declared(spec, "picture", False)
        problem_naming(plot, 422, "record_id")
    else:
        assert_svg(plot, drawer_of(spec))


def recorded(served: Served, spec: MethodSpec, record_id: str) -> dict[str, Any]:
    """The audit record of ``record_id`` as an auditor reads it, its arrays kept as blobs read back in."""
    response = served.client.get(f"/v1/explanations/{record_id}", headers=served.headers("audit:read"))
    assert response.status_code == 200, response.get_json()
    record: dict[str, Any] = response.get_json()
    assert record["id"] == record_id and record["kind"] == spec.name
    record["explanation"] = resolved(
        served.client, served.tokens["audit:read"], record_id, record["explanation"]
    )
    return record


def assert_replays(served: Served, spec: MethodSpec, record_id: str) -> None:
    response = served.client.post(
        f"/v1/explanations/{record_id}/replay", headers=served.headers("audit:read")
    )
    assert response.status_code == 200, response.get_json()
    outcome = response.get_json()
    assert outcome["tolerance"] == spec.replay_tolerance
    assert outcome["within_tolerance"] is True and outcome["differences"] == [], outcome
    assert outcome["max_abs_diff"] <= spec.replay_tolerance


def assert_svg(response: Any, drawer: Drawer) -> None:
    """XML with an <svg> root of the drawer's size in points, holding some text."""
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "image/svg+xml"
    root = ET.fromstring(response.data)
    assert root.tag == f"{SVG}svg"
    width, height = drawer.size
    assert (root.get("width"), root.get("height")) == (f"{width * 72:g}pt", f"{height * 72:g}pt")
    assert any("".join(node.itertext()).strip() for node in root.iter(f"{SVG}text"))


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_three_row_job(spec: MethodSpec, models: Models, dask_client: Any) -> None:  # noqa: F811
    """Three rows in two chunks: three ok lines, each with its record, and a summary whose method figures
    are what the spec's ``accumulate`` and ``finalize`` make of the lines in one pass."""
    served = models.get(spec)
    client, token = served.client, served.tokens["explain"]
    frame = pd.DataFrame(rows_for(spec))
    options = dict(spec.example)
    submitted = submit_file(client, token, csv_bytes(frame), spec.name, options, served.model, served.version)
    assert submitted.status_code == 202, submitted.get_json()
    assert submitted.get_json()["progress"]["chunks_total"] == 2
    assert run_jobs(served.app, dask_client) == 1
    job = client.get(f"/v1/jobs/{submitted.get_json()['id']}", headers=bearer(token)).get_json()
    assert job["status"] == "succeeded" and job["kind"] == spec.name, job

    lines = result_lines(client, token, job["id"])
    assert [line["row"] for line in lines] == [0, 1, 2]
    assert all(line["status"] == "ok" for line in lines), [line.get("error") for line in lines]
    for line in lines:
        record = recorded(served, spec, line["explanation_id"])
        assert (record["source"]["job_id"], record["source"]["row"]) == (job["id"], line["row"])
        assert record["explanation"]["results"] == [line["result"]]

    feature_order = (job.get("explanation") or {}).get("output", {}).get("feature_order")
    figures = own_figures(spec, lines, feature_order)
    declared(spec, "summary", bool(figures))
    summary = job["summary"]
    assert summary["rows_ok"] == 3 and summary["rows_error"] == 0
    for name, value in figures.items():
        assert close(summary.get(name), value), (name, summary.get(name), value)


def own_figures(spec: MethodSpec, lines: list[dict[str, Any]], feature_order: list[str] | None) -> dict:
    """The spec's job summary figures computed from the result lines by its own accumulate and finalize, in
    one pass (the runner merges one accumulator per chunk)."""
    acc: dict[str, Any] = {}
    if spec.accumulate_rows is not None:
        spec.accumulate_rows(acc, [(line["row"], line["result"]) for line in lines])
    for line in lines:
        spec.accumulate(acc, line["result"], feature_order)
    return spec.finalize(acc)


def close(got: Any, want: Any) -> bool:
    """Equal, numbers within 1e-12 relative (the runner sums chunk by chunk)."""
    if isinstance(want, dict):
        return (
            isinstance(got, dict) and got.keys() == want.keys() and all(close(got[k], want[k]) for k in want)
        )
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(close, got, want))
    if isinstance(want, float) and not isinstance(got, bool) and isinstance(got, int | float):
        return got == pytest.approx(want, rel=1e-12, abs=1e-15)
    return bool(got == want and type(got) is type(want))
