"""Independent oracles and builders for the text-model tests.

The tiny BERT of ``tiny_text`` is built once per test session and loaded here with transformers directly
(from the build directory, not from the store), so every number the API returns can be checked against
the model's own forward pass, its own ``output_attentions``, Captum called directly, and an attention
rollout written from Abnar & Zuidema (2020). Archive builders make the uploads the REST tests send,
including the hostile ones (escaping paths, links, too many members).

A plain module (not a conftest), importable because pyproject puts ``tests`` on pytest's pythonpath.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import LayerIntegratedGradients
from flask import Flask
from stored_files import artifact_entries
from tiny_text import build_tiny_bert, tiny_manifest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from api.http.app import create_app

PROBLEM = "application/problem+json"
TEXTS = [
    "Patient wheezing with chest pain since this morning.",
    "Routine follow up, medication refill requested.",
]
WHEEZING = "patient wheezing with chest pain"
_BUILT: dict[str, Path] = {}


# -- the tiny model, built once per session -----------------------------------------------------------------
def tiny_bert_dir(factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT directory, built on first use and shared by every module of the session."""
    if "dir" not in _BUILT:
        torch.set_num_threads(1)
        _BUILT["dir"] = build_tiny_bert(factory.mktemp("tiny-bert") / "tiny")
    return _BUILT["dir"]


def model_files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*"))}


def manifest_text(**changes: Any) -> str:
    manifest = {**tiny_manifest(), **changes}
    return json.dumps({k: v for k, v in manifest.items() if v is not None})


# -- apps ---------------------------------------------------------------------------------------------------
def text_app(data_dir: Path, database_url: str | None = None, **overrides: Any) -> Flask:
    """An app over ``data_dir`` (SQLite inside it unless ``database_url``), with settings ``overrides``."""
    url = database_url or f"sqlite:///{data_dir / 'candor.db'}"
    return create_app({"data_dir": data_dir, "database_url": url, **overrides})


def tokens_for(app: Flask) -> dict[str, str]:
    store = app.extensions["candor"].store
    return {
        scope: store.keys.create(f"text-{scope}", [scope])[0]
        for scope in ("explain", "models:write", "audit:read")
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def upload(app: Flask, token: str, artifact: bytes, manifest: str | None = None, name: str = "triage"):
    """POST a text model version as multipart: ``manifest`` text and the ``artifact`` archive."""
    return app.test_client().post(
        f"/v1/models/{name}/versions",
        data={
            "manifest": manifest if manifest is not None else manifest_text(name=name),
            "artifact": (io.BytesIO(artifact), "model.tar.gz"),
        },
        headers=bearer(token),
        content_type="multipart/form-data",
    )


def artifact_dirs(app: Flask) -> list[str]:
    """Every entry under ``<data_dir>/artifacts`` and ``<data_dir>/artifact-cache`` (staging directories
    included)."""
    return artifact_entries(Path(app.extensions["candor"].settings.data_dir))


def assert_problem(
    response: Any, status: int, field: str | None = None, *, nested: bool = False
) -> dict[str, Any]:
    """A problem+json document; ``field`` must be among its errors (or, if ``nested``, prefix one)."""
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert {"type", "title", "status", "instance"} <= body.keys()
    assert body["status"] == status
    assert body["instance"] == response.request.path
    if field is not None:
        errors = body.get("errors", {})
        named = [k for k in errors if k == field or (nested and k.startswith(field + "."))]
        assert named, body
        assert all(isinstance(m, str) and m for k in named for m in errors[k])
    return body


# -- archives -----------------------------------------------------------------------------------------------
def tar_bytes(
    files: Mapping[str, bytes],
    *,
    prefix: str = "tiny/",
    compression: str = "gz",
    symlinks: Mapping[str, str] | None = None,
    hardlinks: Mapping[str, str] | None = None,
) -> bytes:
    """A tar of ``files`` under ``prefix``, plus symbolic or hard link members (name -> target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        for kind, links in ((tarfile.SYMTYPE, symlinks), (tarfile.LNKTYPE, hardlinks)):
            for name, target in (links or {}).items():
                info = tarfile.TarInfo(prefix + name)
                info.type, info.linkname = kind, target
                archive.addfile(info)
    return buffer.getvalue()


def tar_of_directory(directory: Path) -> bytes:
    """What ``tar czf model.tar.gz tiny/`` makes: the folder itself, with its real file modes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=directory.name)
    return buffer.getvalue()


def zip_of_directory(directory: Path) -> bytes:
    """What ``shutil.make_archive(..., "zip", directory)`` makes: members at the root, real file modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(directory.rglob("*")):
            archive.write(path, path.relative_to(directory).as_posix())
    return buffer.getvalue()


def zip_bytes(
    files: Mapping[str, bytes],
    *,
    unix_mode: int | None = stat.S_IFREG | 0o644,
    symlinks: Mapping[str, str] | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
) -> bytes:
    """A zip of ``files`` (``unix_mode`` None leaves ``writestr``'s default attributes) plus symbolic link
    members as Info-ZIP stores them (the mode says S_IFLNK, the data is the target)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in files.items():
            if unix_mode is None:
                archive.writestr(name, data)
                continue
            info = zipfile.ZipInfo(name)
            info.external_attr = unix_mode << 16
            info.compress_type = compression
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target.encode())
    return buffer.getvalue()


def copy_model(directory: Path, target: Path, edit: Callable[[Path], None] | None = None) -> Path:
    shutil.copytree(directory, target)
    if edit is not None:
        edit(target)
    return target


# -- the model loaded with transformers directly ------------------------------------------------------------
@functools.cache
def reference(directory: str) -> tuple[Any, Any]:
    """(tokenizer, model) loaded from the build directory with transformers itself, eager attention."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForSequenceClassification.from_pretrained(directory, attn_implementation="eager")
    model.eval()
    return tokenizer, model


def encode(tokenizer: Any, text: str, max_length: int | None = None) -> torch.Tensor:
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {}
    return torch.tensor([tokenizer(text, **kwargs)["input_ids"]], dtype=torch.long)


def softmax(directory: Path, text: str, max_length: int | None = None) -> np.ndarray:
    tokenizer, model = reference(str(directory))
    ids = encode(tokenizer, text, max_length)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return torch.softmax(logits, dim=-1)[0].double().numpy()


def token_strings(directory: Path, text: str, max_length: int | None = None) -> list[str]:
    tokenizer, _ = reference(str(directory))
    return list(tokenizer.convert_ids_to_tokens(encode(tokenizer, text, max_length)[0].tolist()))


def attentions(directory: Path, text: str, max_length: int | None = None) -> np.ndarray:
    """(layers, heads, T, T): the model's own ``output_attentions`` for one unpadded text."""
    tokenizer, model = reference(str(directory))
    ids = encode(tokenizer, text, max_length)
    with torch.no_grad():
        output = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    return np.stack([layer[0].double().numpy() for layer in output.attentions])


def abnar_zuidema_rollout(weights: np.ndarray) -> np.ndarray:
    """Attention rollout written from the paper (Abnar & Zuidema 2020, eq. for joint attention): the raw
    attention of a layer is the mean over heads; residual connections are modelled as A = 0.5 W + 0.5 I,
    re-normalised so rows sum to 1; the joint attention of layer i is A_i times the joint attention of
    layer i - 1, starting from A_1."""
    layers = [0.5 * w.mean(axis=0) + 0.5 * np.identity(w.shape[-1]) for w in weights]
    layers = [a / a.sum(axis=1)[:, None] for a in layers]
    joint = layers[0]
    for a in layers[1:]:
        joint = np.matmul(a, joint)
    return joint


def baseline(tokenizer: Any, ids: torch.Tensor, kind: str) -> torch.Tensor:
    """Non-special tokens replaced by the pad (or mask) token id, special tokens kept."""
    fill = tokenizer.pad_token_id if kind == "pad" else tokenizer.mask_token_id
    special = set(tokenizer.all_special_ids)
    return torch.tensor([[i if i in special else fill for i in ids[0].tolist()]], dtype=torch.long)


def captum_integrated_gradients(
    directory: Path,
    text: str,
    *,
    target: int | None = None,
    n_steps: int = 50,
    kind: str = "pad",
    internal_batch_size: int | None = None,
) -> tuple[np.ndarray, float, int]:
    """Per-token attributions (summed over the embedding dimension), |convergence delta| and the target
    index, from Captum's LayerIntegratedGradients on the input embeddings of softmax(logits)."""
    tokenizer, model = reference(str(directory))
    ids = encode(tokenizer, text)
    mask = torch.ones_like(ids)

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(input_ids=input_ids, attention_mask=attention_mask).logits, dim=-1)

    if target is None:
        with torch.no_grad():
            target = int(forward(ids, mask)[0].argmax())
    explainer = LayerIntegratedGradients(forward, model.get_input_embeddings())
    values, delta = explainer.attribute(
        inputs=ids,
        baselines=baseline(tokenizer, ids, kind),
        additional_forward_args=(mask,),
        target=target,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    return values.sum(dim=-1)[0].detach().double().numpy(), float(delta.abs().max()), target


def probability_at(directory: Path, ids: torch.Tensor, target: int) -> float:
    _, model = reference(str(directory))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    return float(torch.softmax(logits, dim=-1)[0, target])


def rows_sum_to_one(matrix: Any, tolerance: float = 1e-5) -> bool:
    array = np.asarray(matrix, dtype=float)
    return bool(np.all(np.abs(array.sum(axis=-1) - 1.0) <= tolerance))


FLOAT16_UNIT_ROUNDOFF = 2.0**-11
"""float16 rounds to nearest: |fl(x) - x| <= 2^-11 |x| for normal x, and <= 2^-25 below 2^-14."""


def float16_tolerance(expected: np.ndarray) -> np.ndarray:
    """How far a float16-encoded weight may be from the float64 reference: rounding, plus float32 noise."""
    return FLOAT16_UNIT_ROUNDOFF * np.abs(expected) + 2.0**-25 + 1e-6


def decode_weights(value: Any) -> np.ndarray:
    """A weights array as the API sent it, as float64: nested JSON numbers, or a binary tensor object decoded
    the way the README tells clients to (base64, then numpy.frombuffer with its little-endian dtype)."""
    if not isinstance(value, dict):
        return np.asarray(value, dtype=float)
    assert set(value) == {"dtype", "shape", "byte_order", "data"}, value.keys()
    assert value["byte_order"] == "little"
    assert value["dtype"] in ("float32", "float16")
    raw = base64.b64decode(value["data"], validate=True)
    dtype = np.dtype(value["dtype"]).newbyteorder("<")
    assert len(raw) == dtype.itemsize * math.prod(value["shape"])
    return np.frombuffer(raw, dtype=dtype).reshape(value["shape"]).astype(float)


def walk_matrices(result: dict[str, Any]) -> Iterator[np.ndarray]:
    """Every attention matrix in one attention result (per head, aggregated, rollout, bertviz), decoded."""
    for entry in result.get("attention", []):
        yield decode_weights(entry["weights"])
    if "rollout" in result:
        yield decode_weights(result["rollout"]["weights"])
    if "bertviz" in result:
        attn = np.asarray(result["bertviz"]["attention"][0]["attn"])
        yield from attn.reshape(-1, *attn.shape[-2:])
