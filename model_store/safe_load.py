"""Load scikit-learn artifacts with skops and a trusted-type allowlist fixed here, never read from an upload.

There is no pickle or joblib fallback: anything that is not a skops file, or that declares a type outside
skops' defaults and ``TRUSTED_TYPES``, is refused before a single object is built.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

from model_store.archive_limits import ArchiveLimits
from model_store.errors import UnsafeArtifact


class _HideTorch:
    """A meta-path finder that makes ``import torch`` fail while it is installed (see ``_import_skops``)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not needed to list scikit-learn's estimators")


@contextlib.contextmanager
def _torch_hidden() -> Iterator[None]:
    if "torch" in sys.modules:
        yield
        return
    finder = _HideTorch()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _import_skops() -> Any:
    """skops lists scikit-learn's estimators at import, walking every sklearn package; one of them wraps
    torch for the array API and would import it (~1 s, ~0.5M objects) into a tabular-only worker. The walk
    skips packages that fail to import, so torch is hidden for the duration of that import only."""
    with _torch_hidden():
        return importlib.import_module("skops.io")


sio = _import_skops()

TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # XGBoost and LightGBM scikit-learn wrappers: each Booster's state is the library's own model
        # (XGBoost's serialised buffer, LightGBM's model text), rebuilt by the library, never unpickled.
        "xgboost.sklearn.XGBClassifier",
        "xgboost.sklearn.XGBRegressor",
        "xgboost.core.Booster",
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "lightgbm.basic.Booster",
        "collections.OrderedDict",
    }
)
"""Types beyond skops' own defaults that scikit-learn tree models and the XGBoost / LightGBM wrappers
need. Extend only by code review."""


def load_skops(data: bytes, limits: ArchiveLimits | None = None) -> Any:
    """Build the estimator in ``data`` or raise ``UnsafeArtifact`` naming the refused types; with ``limits``
    (an upload), the sizes the file declares are checked first."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise UnsafeArtifact.field("artifact", "not a skops file (pickle and joblib files are never loaded)")
    if limits is not None:
        check_declared_sizes(data, limits)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises many kinds on a malformed archive
        raise UnsafeArtifact.field("artifact", "unreadable skops file") from exc
    refused = sorted(t for t in untrusted if t not in TRUSTED_TYPES)
    if refused:
        raise UnsafeArtifact(
            "The artifact declares types outside the server's allowlist: " + ", ".join(refused[:10]),
            {"artifact": [f"untrusted type: {t}" for t in refused[:10]]},
        )
    if any(t in BOOSTER_STATE for t in untrusted):
        check_booster_states(data)
    try:
        loaded = sio.loads(data, trusted=list(untrusted))
    except Exception as exc:
        raise UnsafeArtifact.field("artifact", "the skops file could not be loaded") from exc
    return loaded


BOOSTER_STATE: dict[str, tuple[str, str]] = {
    "xgboost.core.Booster": ("handle", "BytearrayNode"),
    "lightgbm.basic.Booster": ("_handle", "JsonNode"),
}
"""The attribute that carries each library's own serialised model, and the skops node it must be: a Booster
rebuilds its native handle from it; one without it (or with ``null``) would hold a null native pointer."""


def check_booster_states(data: bytes) -> None:
    """Refuse an XGBoost or LightGBM Booster whose state does not carry the library's own serialised model
    (bytes for XGBoost, the model text for LightGBM), and an XGBoost Booster with any other attribute."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (KeyError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UnsafeArtifact.field("artifact", "unreadable skops file") from exc
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = f"{node.get('__module__')}.{node.get('__class__')}"
        if kind in BOOSTER_STATE and not _carries_model(node, *BOOSTER_STATE[kind]):
            raise UnsafeArtifact.field(
                "artifact", f"a {kind} whose state is not the library's own serialised model"
            )
        stack.extend(node.values())


def _carries_model(node: dict[str, Any], key: str, loader: str) -> bool:
    state = node.get("content")
    if not isinstance(state, dict) or state.get("__loader__") != "DictNode":
        return False
    attributes = state.get("content")
    if not isinstance(attributes, dict) or not isinstance(attributes.get(key), dict):
        return False
    if node.get("__module__") == "xgboost.core" and set(attributes) != {key}:
        return False
    carried = attributes[key]
    if carried.get("__loader__") != loader:
        return False
    if loader != "JsonNode":
        return True
    try:  # a JsonNode holds JSON text: it must decode to the model's text, not to null or a number
        return carried.get("__class__") == "str" and isinstance(json.loads(carried["content"]), str)
    except (KeyError, TypeError, ValueError):
        return False


def check_declared_sizes(data: bytes, limits: ArchiveLimits) -> None:
    """Refuse a skops file whose zip central directory declares a ``schema.json`` (which skops parses whole)
    or members larger than ``limits`` allow, before skops reads any of them."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise UnsafeArtifact.field("artifact", "unreadable skops file") from exc
    if any(m.filename == "schema.json" and m.file_size > limits.max_skops_schema_bytes for m in members):
        raise UnsafeArtifact.field(
            "artifact", f"its schema.json is larger than {limits.max_skops_schema_bytes} bytes"
        )
    limits.check_expanded(sum(m.file_size for m in members), len(data))


def dump_skops(estimator: Any) -> bytes:
    """Serialise an estimator the way ``load_skops`` reads it."""
    return bytes(sio.dumps(estimator))
