"""Finishing touches on the generated OpenAPI document, so it states what the server really does: security
per operation, errors as `application/problem+json`, form fields inside the multipart request body, the
patterns and lengths of path parameters, and the row caps of this server's settings."""

from __future__ import annotations

import copy
from typing import Any

from flask_smorest import Api

from api.http.errors import is_kserve_path
from api.http.openapi_examples import add_request_examples, path_example
from api.methods.registry import specs
from api.schemas.common import MODEL_NAME, VERSION_PATTERN
from api.schemas.models import CAP_KEY
from api.settings import Settings

PUBLIC_PATHS = ("/v1/health", "/v1/ready", "/v2/health/live", "/v2/health/ready")
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}
PROBLEM = "application/problem+json"
PROBLEM_RESPONSE = {"$ref": "#/components/responses/Problem"}
OIP_PROBLEM_RESPONSE = {"$ref": "#/components/responses/OipProblem"}
OIP_PROBLEM_SCHEMA = {"schema": {"$ref": "#/components/schemas/OipProblem"}}
OIP_PROBLEM_CONTENT = {"application/json": OIP_PROBLEM_SCHEMA, "application/problem+json": OIP_PROBLEM_SCHEMA}
URI_TOO_LONG = {
    "description": "Request line over CANDOR_MAX_REQUEST_LINE bytes (8190 by default), refused by gunicorn",
    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


MODEL_PATH = "/v1/models/{name}/versions/{version}"
TABULAR_SPECS = [spec for spec in specs() if spec.flavour == "tabular"]
TABULAR_METHODS = [spec.name for spec in TABULAR_SPECS]
"""The methods a registered tabular version links to (and whose answers link to their record)."""
EXPLAIN_PATHS = [f"{MODEL_PATH}{spec.path}" for spec in TABULAR_SPECS]
RECORD = "/v1/explanations/{record_id}"
PATH_EXAMPLES = {"name": "loan", "version": "production"}
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "name": {"pattern": MODEL_NAME, "maxLength": 64},
    "version": {"pattern": VERSION_PATTERN, "maxLength": 10},
    "record_id": {"pattern": UUID, "maxLength": 36},
    "job_id": {"pattern": UUID, "maxLength": 36},
    "digest": {"pattern": "[0-9a-f]{64}", "maxLength": 64},
    "key_id": {"pattern": "[0-9a-f]{1,32}", "maxLength": 32},
}
"""What each path parameter can be; the server answers 404 to anything else (no such resource)."""


def _ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    (MODEL_PATH.rsplit("/", 1)[0], "post", "201"): {
        f"Explain{spec.name.capitalize()}": {
            "operationRef": _ref(f"{MODEL_PATH}{spec.path}", "post"),
            "parameters": {"name": "$response.body#/name", "version": "$response.body#/version"},
        }
        for spec in TABULAR_SPECS
    }
    | {
        "GetVersion": {
            "operationRef": _ref(MODEL_PATH, "get"),
            "parameters": {"name": "$response.body#/name", "version": "$response.body#/version"},
        }
    },
    **{
        (path, "post", "200"): {
            "GetRecord": {
                "operationRef": _ref(RECORD, "get"),
                "parameters": {"record_id": "$response.body#/id"},
            },
            "ReplayRecord": {
                "operationRef": _ref(f"{RECORD}/replay", "post"),
                "parameters": {"record_id": "$response.body#/id"},
            },
        }
        for path in EXPLAIN_PATHS
    },
    ("/v1/jobs", "post", "202"): {
        "GetJob": {
            "operationRef": _ref("/v1/jobs/{job_id}", "get"),
            "parameters": {"job_id": "$response.body#/id"},
        },
        "GetJobResult": {
            "operationRef": _ref("/v1/jobs/{job_id}/result", "get"),
            "parameters": {"job_id": "$response.body#/id"},
        },
    },
    ("/v1/keys", "post", "201"): {
        "GetKey": {
            "operationRef": _ref("/v1/keys/{key_id}", "get"),
            "parameters": {"key_id": "$response.body#/key_id"},
        },
        "RotateKey": {
            "operationRef": _ref("/v1/keys/{key_id}/rotate", "post"),
            "parameters": {"key_id": "$response.body#/key_id"},
        },
    },
}
"""OpenAPI links, so clients (and stateful fuzzers) can chain register -> explain -> fetch the record."""


def finish(api: Api, settings: Settings) -> None:
    spec = api.spec
    assert spec is not None
    _publish_caps(spec.components.schemas, settings)
    spec.components.response(
        "Problem",
        {
            "description": "An RFC 9457 problem document",
            "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    )
    spec.components.response(
        "OipProblem",
        {
            "description": "An RFC 9457 problem document with the error member KServe clients read, "
            "as application/json unless Accept names application/problem+json",
            "content": OIP_PROBLEM_CONTENT,
        },
    )
    for path, operations in spec._paths.items():
        for parameter in operations.get("parameters", []):
            _describe_path_parameter(path, parameter)
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue  # path-level "parameters"
            _errors_as_problems(operation)
            add_request_examples(path, operation)
            _form_fields_into_body(operation, spec.components.schemas)
            for (link_path, link_method, status), links in LINKS.items():
                if (link_path, link_method) == (path, method):
                    operation["responses"][status]["links"] = links
            if path in PUBLIC_PATHS:
                operation["security"] = []
                continue
            for status in ("401", "403", "429"):
                operation.setdefault("responses", {}).setdefault(status, PROBLEM_RESPONSE)
            operation["responses"].setdefault("414", URI_TOO_LONG)
        if is_kserve_path(path):
            for method, operation in operations.items():
                if method in HTTP_METHODS:
                    _errors_as_oip_problems(operation)


def _errors_as_oip_problems(operation: dict[str, Any]) -> None:
    for status, response in operation.get("responses", {}).items():
        if status == "414" or not (status[0] in "45" or status == "default"):
            continue
        if response == PROBLEM_RESPONSE:
            operation["responses"][status] = OIP_PROBLEM_RESPONSE
        elif isinstance(response, dict) and response.get("content"):
            response["content"] = copy.deepcopy(OIP_PROBLEM_CONTENT)


def _errors_as_problems(operation: dict[str, Any]) -> None:
    """Every documented error response is a problem document, whatever content type the decorator assumed."""
    for status, response in operation.get("responses", {}).items():
        content = response.get("content") if isinstance(response, dict) else None
        if status[0] in "45" and content and "application/json" in content:
            content[PROBLEM] = content.pop("application/json")


def _form_fields_into_body(operation: dict[str, Any], components: dict[str, Any]) -> None:
    """flask-smorest documents ``location="form"`` arguments as OpenAPI 2 ``formData`` parameters; in
    OpenAPI 3 they are properties of the multipart request body beside the files."""
    form = [p for p in operation.get("parameters", []) if p.get("in") == "formData"]
    if not form:
        return
    operation["parameters"] = [p for p in operation["parameters"] if p.get("in") != "formData"]
    if not operation["parameters"]:
        del operation["parameters"]
    body = operation.setdefault("requestBody", {"required": True, "content": {}})
    media = body["content"].setdefault("multipart/form-data", {"schema": {"type": "object"}})
    if "$ref" in media["schema"]:  # inline the files' component: one object with every part as a property
        component = components[media["schema"]["$ref"].rsplit("/", 1)[1]]
        media["schema"] = copy.deepcopy(component if isinstance(component, dict) else component.fields_schema)
    target = media["schema"]
    for parameter in form:
        target.setdefault("properties", {})[parameter["name"]] = {
            **parameter.get("schema", {}),
            **({"description": parameter["description"]} if "description" in parameter else {}),
        }
        if parameter.get("required"):
            target.setdefault("required", []).append(parameter["name"])


def _describe_path_parameter(path: str, parameter: dict[str, Any]) -> None:
    if parameter.get("in") != "path" or parameter["name"] not in PATH_SCHEMAS:
        return
    rule = PATH_SCHEMAS[parameter["name"]]
    parameter["schema"] = {
        **parameter.get("schema", {"type": "string"}),
        "minLength": 1,
        "maxLength": rule["maxLength"],
        "pattern": f"^(?:{rule['pattern']})$",
    }
    if parameter["name"] in PATH_EXAMPLES:
        parameter["example"] = path_example(path, parameter["name"], PATH_EXAMPLES[parameter["name"]])


def _publish_caps(schemas: dict[str, Any], settings: Settings) -> None:
    """Lists of rows name the setting that caps them (``CAP_KEY``): publish its value as ``maxItems``."""
    for schema in schemas.values():
        if not isinstance(schema, dict):
            continue
        for prop in schema.get("properties", {}).values():
            setting = prop.pop(CAP_KEY, None)
            if setting is not None:
                prop["maxItems"] = int(getattr(settings, setting))
