"""Every ``pattern`` of the published contract is anchored (``^...$``: JSON Schema patterns are unanchored
ECMA-262 searches), and the server refuses exactly what the pattern refuses: schema fields by their validator
(a 422), path parameters by answering 404 (no such resource)."""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from flask.testing import FlaskClient
from marshmallow import Schema, ValidationError, fields

import api.schemas

CONTRACT = Path(__file__).parents[1] / "openapi.yaml"
UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
PROBES = [
    "", "a", "loan", "loan\n", "\nloan", "loan ", " loan", "lo an", "-loan", "loan:2", "a.b", "x" * 64,
    "x" * 65, "1", "1\n", "0123456789", "123456789", "latest", "latest\n", "production", "productions",
    "\uff11", "\u0663",
    UUID, UUID + "\n", UUID.upper(), "ab" * 32, "ab" * 32 + "\n", "0" * 12, "0" * 33,
]  # fmt: skip


def patterns(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield where, value
            else:
                yield from patterns(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from patterns(value, f"{where}/{index}")


def ecma_accepts(pattern: str, value: str) -> bool:
    """What a client validating against the contract accepts: an ECMA-262 search, where ``$`` (without the
    multiline flag) matches only at the very end; ``\\Z`` is Python's spelling of that."""
    python = pattern[:-1] + r"\Z" if pattern.endswith("$") and not pattern.endswith(r"\$") else pattern
    return re.search(python, value) is not None


@pytest.mark.parametrize("source", ["file", "served"])
def test_every_pattern_of_the_contract_is_anchored(source: str, client: FlaskClient) -> None:
    document = (
        yaml.safe_load(CONTRACT.read_text())
        if source == "file"
        else client.get("/v1/openapi.json").get_json()
    )
    found = list(patterns(document))
    assert len(found) > 10
    assert [(where, p) for where, p in found if not (p.startswith("^") and p.endswith("$"))] == []


def schema_classes() -> Iterator[type[Schema]]:
    for module in pkgutil.iter_modules(api.schemas.__path__, "api.schemas."):
        loaded = importlib.import_module(module.name)
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, Schema) and value.__module__ == module.name:
                yield value


def patterned_fields(field: fields.Field, where: str) -> Iterator[tuple[str, fields.Field, str]]:
    for validator in field.validators:
        regex = getattr(validator, "regex", None)
        if isinstance(regex, re.Pattern):
            yield where, field, regex.pattern
    if isinstance(field, fields.List):
        yield from patterned_fields(field.inner, f"{where}[]")
    if isinstance(field, fields.Dict):
        for part, inner in (("key", field.key_field), ("value", field.value_field)):
            if inner is not None:
                yield from patterned_fields(inner, f"{where}.<{part}>")


def all_patterned_fields() -> list[tuple[str, fields.Field, str]]:
    return [
        found
        for cls in schema_classes()
        for name, field in cls._declared_fields.items()
        for found in patterned_fields(field, f"{cls.__name__}.{name}")
    ]


def test_the_server_refuses_what_each_schema_pattern_refuses() -> None:
    found = all_patterned_fields()
    assert {"KeyCreateSchema.name", "KeyCreateSchema.models[]"} <= {where for where, _, _ in found}
    disagreements = []
    for where, field, pattern in found:
        assert pattern.startswith("^") and pattern.endswith("$"), where
        for probe in PROBES:
            try:
                field.deserialize(probe)
                server = True
            except ValidationError:
                server = False
            if server != ecma_accepts(pattern, probe):
                disagreements.append((where, probe, server))
    assert disagreements == []


@pytest.mark.parametrize(
    "name,version",
    [
        ("loan\n", "1"), ("loan ", "1"), ("-loan", "1"), ("x" * 65, "1"), ("lo.an", "1"),
        ("loan", "1\n"), ("loan", " 1"), ("loan", "+1"), ("loan", "1.0"), ("loan", "\u0661"),
        ("loan", "\uff11"),
        ("loan", "0123456789"), ("loan", "latest\n"), ("loan", "9223372036854775808"),
    ],
)  # fmt: skip
def test_path_values_the_pattern_refuses_are_404(
    client: FlaskClient, auth: Any, name: str, version: str
) -> None:
    document = client.get("/v1/openapi.json").get_json()
    rules = {
        p["name"]: p["schema"]["pattern"]
        for p in document["paths"]["/v1/models/{name}/versions/{version}"]["parameters"]
    }
    assert not (ecma_accepts(rules["name"], name) and ecma_accepts(rules["version"], version))
    assert client.get("/v1/models/loan/versions/1", headers=auth).status_code == 200
    response = client.get(
        f"/v1/models/{quote(name, safe='')}/versions/{quote(version, safe='')}", headers=auth
    )
    assert response.status_code == 404, response.data
