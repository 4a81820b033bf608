"""Uploads built to cost far more than their size before they are refused (issue 18): manifests of nested YAML
aliases ("billion laughs") or thousands of nested brackets, values YAML cannot build. Each is a 422 naming
``manifest``, from the REST route and from ``candor models register`` alike, found before the document is
walked. (Archive bombs and hostile member names: test_hostile_archives.py.)"""

from __future__ import annotations

import io
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import bearer
from flask import Flask
from test_store_safety import _REFERENCE, safe_manifest
from tiny_models import tiny_frame, tiny_pipeline

from api.ops.cli import main
from model_store.safe_load import dump_skops

PROBLEM = "application/problem+json"
_ARTIFACT = dump_skops(tiny_pipeline(tiny_frame(40, seed=1, weight=False)))


def billion_laughs(levels: int = 6, fan: int = 10) -> str:
    """A valid manifest plus a key whose value names the one before it ``fan`` times, ``levels`` deep: a few
    hundred bytes that stand for ``fan ** levels`` strings once anything walks them."""
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * fan)}]")
    body = "".join(f"    {line}\n" for line in lines)
    return yaml.safe_dump(safe_manifest()) + "defaults:\n  shap:\n" + body


def nested(depth: int) -> str:
    """A JSON manifest whose description is ``depth`` nested lists."""
    return json.dumps(safe_manifest())[:-1] + ', "description": ' + "[" * depth + "]" * depth + "}"


def register(app: Flask, manifest: str) -> Any:
    token = app.extensions["candor"].store.keys.create("writer", ["models:write"])[0]
    return app.test_client().post(
        "/v1/models/safe/versions",
        data={
            "manifest": manifest,
            "artifact": (io.BytesIO(_ARTIFACT), "model.skops"),
            "reference": (io.BytesIO(_REFERENCE), "reference.parquet"),
        },
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def assert_refused(response: Any, field: str, words: str) -> None:
    """A 422 problem naming ``field`` whose message says ``words``."""
    assert response.status_code == 422, response.get_data(as_text=True)[:500]
    assert response.mimetype == PROBLEM
    messages = response.get_json()["errors"][field]
    assert any(words in m for m in messages), messages


def assert_manifest_refused(response: Any, words: str) -> None:
    assert_refused(response, "manifest", words)


def test_billion_laughs_is_refused_before_anything_walks_it(app: Flask) -> None:
    manifest = billion_laughs()
    assert len(manifest) < 1_000
    tracemalloc.start()
    started = time.perf_counter()
    try:
        response = register(app, manifest)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_manifest_refused(response, "anchors and aliases")
    assert time.perf_counter() - started < 5
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB traced for a {len(manifest)}-byte manifest"


def test_an_alias_of_a_valid_value_is_refused_too(app: Flask) -> None:
    """Aliases are refused as such, not only when they expand: ``*s`` names a feature in a valid group."""
    text = json.dumps(safe_manifest()).replace('"name": "size"', '"name": &s "size"')
    text = text[:-1] + ', "groups": {"g": [*s]}}'
    assert_manifest_refused(register(app, text), "anchors and aliases")


@pytest.mark.parametrize("depth", [21, 2_000, 50_000])  # 50,000 pairs: past libyaml's own 1,000 levels
def test_deeply_nested_manifests_are_a_422_naming_manifest(app: Flask, depth: int) -> None:
    assert_manifest_refused(register(app, nested(depth)), "nested deeper than 20")


def test_a_manifest_past_the_form_field_cap_is_refused_before_parsing(app: Flask) -> None:
    assert_manifest_refused(register(app, nested(100_000)), "Longer than maximum length")


def test_block_style_nesting_is_bounded_too(app: Flask) -> None:
    yaml_text = "name: safe\ndescription:\n" + "".join("  " * i + "- \n" for i in range(1, 200))
    assert_manifest_refused(register(app, yaml_text), "nested deeper than 20")


def test_nesting_within_the_bound_is_judged_by_the_schema(app: Flask) -> None:
    response = register(app, nested(19))
    assert response.status_code == 422
    assert "manifest.description" in response.get_json()["errors"]


@pytest.mark.parametrize("value", ["2001-13-45", "9" * 5_000])
def test_values_yaml_cannot_build_are_a_422(app: Flask, value: str) -> None:
    text = json.dumps(safe_manifest())[:-1] + f', "description": {value}' + "}"
    assert_manifest_refused(register(app, text), "cannot represent")


@pytest.fixture
def cli_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("CANDOR_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("CANDOR_DATABASE_URL", raising=False)
    frame = tiny_frame(40, seed=1, weight=False)
    paths = {n: tmp_path / n for n in ("manifest.json", "model.skops", "reference.csv")}
    paths["model.skops"].write_bytes(_ARTIFACT)
    frame.to_csv(paths["reference.csv"], index=False)
    return paths


def _cli_register(paths: dict[str, Path]) -> int:
    argv = ["models", "register", "--manifest", str(paths["manifest.json"]), "--artifact"]
    return main([*argv, str(paths["model.skops"]), "--reference", str(paths["reference.csv"])])


@pytest.mark.parametrize("text", [nested(2_000), billion_laughs()], ids=["brackets", "aliases"])
def test_the_cli_prints_one_line_and_exits_2(
    cli_files: dict[str, Path], capsys: pytest.CaptureFixture[str], text: str
) -> None:
    cli_files["manifest.json"].write_text(text)
    assert _cli_register(cli_files) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: manifest: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_the_cli_reports_a_missing_file_in_one_line(
    cli_files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """No manifest file at all: an OSError, one line too."""
    assert _cli_register(cli_files) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "manifest.json" in err and err.count("\n") == 1, err
