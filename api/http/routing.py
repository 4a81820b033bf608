"""URL rules: a path parameter called ``name`` is a model name, and a model name never holds ':' or '/'.

So ``/v1/models/<name>`` does not match ``/v1/models/loan:predict`` (a KServe verb): ``OPTIONS`` there
advertises only the verb's methods, and ``GET`` is a 405, not a lookup of a model called ``loan:predict``.
Registration accepts fewer names still (``model_store.manifest.NAME_PATTERN``); a name the route matches but
registration refuses reaches the view, which answers 404 or the registration's 422 naming ``name``. Route
templates keep their plain ``<name>`` (metric labels, logs and the contract are unchanged)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.routing import BaseConverter, Map, Rule, UnicodeConverter

MODEL_NAME = "model_name"
MODEL_PARAMETER = "name"


class ModelNameConverter(UnicodeConverter):
    """One path segment without ':' (the separator of the KServe verbs)."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, *args, **kwargs)
        self.regex = "[^/:]{1,}"


class CandorRule(Rule):
    """A rule whose ``<name>`` parameter (with no converter named) is matched as a model name."""

    def get_converter(
        self, variable_name: str, converter_name: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> BaseConverter:
        if variable_name == MODEL_PARAMETER and converter_name == "default":
            converter_name = MODEL_NAME
        return super().get_converter(variable_name, converter_name, args, kwargs)


def init_app(app: Flask) -> None:
    """Call before any route is added."""
    app.url_map.converters[MODEL_NAME] = ModelNameConverter
    app.url_rule_class = CandorRule
