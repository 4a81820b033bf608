"""flask-smorest Blueprint whose JSON bodies are parsed strictly (orjson)."""

from __future__ import annotations

from flask_smorest import Blueprint as SmorestBlueprint

from api.http.parser import StrictJsonParser


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = StrictJsonParser()
