"""The picture of one result of a record, as its method declares it (``MethodSpec.picture``)."""

from __future__ import annotations

from typing import Any

from api.methods.registry import MODULES, spec, specs
from explainers.narratives import Names, effort_scales
from explainers.plots import SIZES, Drawer, record_result
from model_store.errors import InvalidInput
from model_store.registry import ModelRegistry

QUERY = ("view", "layer", "head")
"""The plot route's query parameters that only some pictures take."""


def sizes() -> dict[str, tuple[float, float]]:
    """The size of every picture in inches: the service's own and those methods draw themselves."""
    own = {
        s.name: s.picture.drawer.size for s in specs() if s.picture and isinstance(s.picture.drawer, Drawer)
    }
    return {**SIZES, **own}


def record_picture(
    record: dict[str, Any], query: dict[str, Any], registry: ModelRegistry
) -> tuple[str | Drawer, dict[str, Any]]:
    """The drawer of result ``query["instance"]`` of ``record`` and what it is drawn from: the result, its
    envelope, the query parameters the picture takes and, as the picture asks, the manifest's display names,
    the effort scales and the instance's values (422 naming the field otherwise)."""
    kind = record["kind"]
    picture = spec(kind).picture if kind in MODULES else None
    if picture is None:
        raise InvalidInput.field("record_id", f"A {kind} record has no picture.")
    result = record_result(record, query["instance"])
    if any(query.get(name) is not None for name in QUERY if name not in picture.query):
        takers = " and ".join(s.name for s in specs() if s.picture is not None and s.picture.query)
        raise InvalidInput.field("view", f"view, layer and head apply to {takers} records only.")
    data: dict[str, Any] = {
        "result": result,
        "envelope": record["explanation"],
        **{name: query.get(name) for name in picture.query},
    }
    if picture.names or picture.scales:
        info = registry.resolve(record["model"]["name"], record["model"]["version"])
        if picture.names:
            data["names"] = Names(info.manifest)
        if picture.scales:
            data["scales"] = effort_scales(registry.load(info))
    if picture.values:
        instances = record.get("request", {}).get("instances") or []
        data["values"] = instances[query["instance"]] if query["instance"] < len(instances) else None
    return picture.drawer, data
