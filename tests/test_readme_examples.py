"""The README is the user's manual: every operation of ``openapi.yaml`` has a curl example in it, with the
method the operation takes. (That the examples run against a real server was checked by hand; the bodies
they send are the test data files the other tests use.)"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("get", "post", "put", "patch", "delete")


def curl_commands() -> list[str]:
    """Every curl command in the README's shell blocks, continuation lines joined, two on a line apart."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    joined = "\n".join(block.replace("\\\n", " ") for block in blocks)
    parts = (part for line in joined.splitlines() for part in re.split(r"(?=\bcurl )", line))
    return [part for part in parts if "curl " in part]


def operations() -> list[tuple[str, str]]:
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return [(path, method) for path, ops in spec["paths"].items() for method in ops if method in METHODS]


def path_pattern(path: str) -> re.Pattern[str]:
    """``/v1/jobs/{job_id}`` as a regex over a curl line: a parameter is any run of characters that cannot
    end a path segment (``$JOB`` and ``loan`` alike), the path ends where the URL does."""
    parts = re.split(r"\{[^}]+\}", path)
    body = r"[^/\s\"'?:]+".join(re.escape(part) for part in parts)
    return re.compile(r"localhost:8000" + body + r"(?=[\s\"'?]|$)")


def method_of(command: str) -> str:
    explicit = re.search(r"-X\s+([A-Z]+)", command)
    if explicit:
        return explicit.group(1).lower()
    return "post" if re.search(r"\s(-d|-F|--data\S*|--form\S*)\s", command) else "get"


def operation_of(command: str, paths: list[str]) -> tuple[str, str] | None:
    """The operation a curl command calls: of the paths its URL matches, the one with the most literal
    characters (``/v1/explanations/export`` rather than ``/v1/explanations/{record_id}``)."""
    matching = [path for path in paths if path_pattern(path).search(command)]
    if not matching:
        return None
    return max(matching, key=lambda path: len(re.sub(r"\{[^}]+\}", "", path))), method_of(command)


@functools.cache
def shown() -> frozenset[tuple[str, str] | None]:
    """The operations the README's curl commands call."""
    paths = sorted({p for p, _ in operations()})
    return frozenset(operation_of(command, paths) for command in curl_commands())


@pytest.mark.parametrize(("path", "method"), operations(), ids=lambda v: str(v))
def test_every_operation_has_a_curl_example(path: str, method: str) -> None:
    assert (path, method) in shown(), f"README.md shows no `curl` example of {method.upper()} {path}"


def test_the_pattern_tells_paths_apart() -> None:
    """An example counts for its own operation only, not a neighbour's."""
    shap = path_pattern("/v1/models/{name}/versions/{version}/explain/shap")
    version = path_pattern("/v1/models/{name}/versions/{version}")
    kserve = path_pattern("/v1/models/{name}:explain")
    line = "curl -s -H x localhost:8000/v1/models/loan/versions/production/explain/shap"
    assert shap.search(line) and not version.search(line) and not kserve.search(line)
    assert kserve.search("curl -d @f localhost:8000/v1/models/loan:explain")
    assert not path_pattern("/v1/models/{name}").search("curl localhost:8000/v1/models/loan:explain")
    assert method_of("curl -s -X DELETE -H x localhost:8000/v1/jobs/$JOB") == "delete"
    assert method_of("curl -s -H x -F model=loan localhost:8000/v1/jobs") == "post"
    assert method_of("curl -s -H x localhost:8000/v1/jobs/$JOB") == "get"
    paths = ["/v1/explanations/{record_id}", "/v1/explanations/export"]
    export = 'curl -s -H x "localhost:8000/v1/explanations/export?kind=shap&format=csv"'
    assert operation_of(export, paths) == ("/v1/explanations/export", "get")
    assert operation_of("curl -H x localhost:8000/v1/explanations/$ID", paths) == (paths[0], "get")
