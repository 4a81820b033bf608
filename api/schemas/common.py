"""Schemas shared by several resources, and the bounded fields every request schema is built from: each
list has a length cap (a set of names also refuses repeats), each string a length cap, each integer a range
and each free-form object a key cap, so a request cannot grow past what it means
(``tests/test_request_bounds.py`` walks the contract to keep it so)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from model_store.manifest import NAME_PATTERN

MAX_INT32 = 2**31 - 1
"""The largest value an INTEGER column holds (versions, positions)."""
MAX_FEATURE_NAME = 128
"""As in the manifest: a feature's name."""
MAX_FEATURES = 5000
"""As in the manifest: features per model, so keys per row and names per list."""
MAX_CATEGORIES = 10_000
"""As in the manifest: categories per feature."""
MAX_LABEL = 1024
"""A class label named by a request."""
MAX_INDEX = 4095
"""Largest layer or head index of a text model (real ones have at most a few hundred)."""
MAX_OPTIONS = 64
"""Keys of a job's free-form options (every explain method has fewer fields)."""
MAX_DATETIME_CHARS = 64
MAX_FORM_CHARS = 120_000
"""A multipart form field's text: Flask keeps at most 500,000 bytes of a form field in memory (413 past it);
this many characters fit even at four UTF-8 bytes each, so an over-long field is a 422 naming it."""
MODEL_NAME = NAME_PATTERN.removeprefix("^").removesuffix("$")
"""A model's name, as the registry takes it (the manifest's pattern, unanchored)."""
VERSION_PATTERN = r"latest|production|[0-9]{1,9}"
"""A version as a route names it (the registry takes at most nine digits)."""


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class FullMatch(validate.Regexp):
    """A pattern the whole value must match, published anchored (``^...$``) so that a client validating with
    the contract's ECMA-262 regex accepts exactly what the server does (Python's ``$`` alone would also pass a
    trailing newline)."""

    def __init__(self, pattern: str, error: str | None = None) -> None:
        super().__init__(f"^(?:{pattern})$", error=error)
        self._whole = re.compile(pattern)

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or self._whole.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def text(max_length: int, *, min_length: int | None = None, **kwargs: Any) -> fields.String:
    """A string of at most ``max_length`` characters (other validators may be passed in ``validate``)."""
    validators = [validate.Length(min=min_length, max=max_length), *_as_list(kwargs.pop("validate", None))]
    return fields.String(validate=validators, **kwargs)


def integer(minimum: int, maximum: int, **kwargs: Any) -> fields.Integer:
    """An integer within [minimum, maximum] (both always published)."""
    return fields.Integer(validate=validate.Range(min=minimum, max=maximum), **kwargs)


class BoundedList(fields.List):
    """A list of at most ``max_items`` entries (``min_items`` at least)."""

    def __init__(self, inner: fields.Field, max_items: int, min_items: int | None = None, **kwargs: Any):
        extra = kwargs.pop("validate", None)
        validators = [validate.Length(min=min_items, max=max_items), *_as_list(extra)]
        super().__init__(inner, validate=validators, **kwargs)


class UniqueList(BoundedList):
    """A set of names or values sent as a list: capped like ``BoundedList``, and a repeated entry is refused
    (``"Duplicate entries: ..."`` under the field's name), published as ``uniqueItems``."""

    def __init__(self, inner: fields.Field, max_items: int, min_items: int | None = None, **kwargs: Any):
        super().__init__(inner, max_items, min_items, **kwargs)
        self.validators.append(_no_duplicates)
        self.metadata = {"uniqueItems": True, **self.metadata}


def _no_duplicates(values: Iterable[Any]) -> None:
    seen: set[Any] = set()
    repeated: list[Any] = []
    for value in values:
        marker = (type(value), value)
        if marker in seen and value not in repeated:
            repeated.append(value)
        seen.add(marker)
    if repeated:
        shown = ", ".join(repr(v) for v in repeated[:5]) + (", ..." if len(repeated) > 5 else "")
        raise ValidationError(f"Duplicate entries: {shown}.")


class BoundedDict(fields.Dict):
    """A free-form object of at most ``max_keys`` keys (published as ``maxProperties``)."""

    def __init__(self, max_keys: int, **kwargs: Any) -> None:
        extra = kwargs.pop("validate", None)
        super().__init__(validate=[_max_keys(max_keys), *_as_list(extra)], **kwargs)
        self.metadata = {"maxProperties": max_keys, **self.metadata}


def _max_keys(limit: int) -> Any:
    def check(value: dict[str, Any]) -> None:
        if len(value) > limit:
            raise ValidationError(f"At most {limit} keys.")

    return check


class BoundedDateTime(fields.AwareDateTime):
    """An ISO 8601 date-time with a time zone, refused unread past ``MAX_DATETIME_CHARS`` characters."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("default_timezone", dt.UTC)
        super().__init__(**kwargs)
        self.metadata = {"maxLength": MAX_DATETIME_CHARS, **self.metadata}

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> dt.datetime:
        if isinstance(value, str) and len(value) > MAX_DATETIME_CHARS:
            raise ValidationError(f"At most {MAX_DATETIME_CHARS} characters.")
        return super()._deserialize(value, attr, data, **kwargs)


class JsonBoolean(fields.Boolean):
    """A JSON body's ``true`` or ``false`` only: marshmallow's Boolean would also take 0, 1, "yes" or "on",
    which the contract (``type: boolean``) refuses."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


class ProblemSchema(Schema):
    """RFC 9457 problem document."""

    type = fields.String(required=True)
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String()
    instance = fields.String()
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per field path, e.g. instances.0.age_in_years"},
    )
    request_id = fields.String(
        required=True,
        metadata={
            "description": "The request's id, also sent as the X-Request-ID header; quote it in reports"
        },
    )


class ModelRefSchema(Schema):
    name = fields.String(required=True)
    version = fields.Integer(required=True)
    sha256 = fields.String(required=True)


class HealthSchema(Schema):
    status = fields.String(required=True)
    database = fields.String()
