"""Replay's comparison of weights arrays, whatever form each side has them in: JSON numbers and base64 objects
(records made before weights moved to blobs), blob references (read through a loader), and the replayed
explanation's numpy arrays and base64 objects. Checked against numpy's own difference of the two arrays."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import orjson
import pytest

from api.service.replay import compare
from model_store.array_codec import EncodedArray, blob_of
from model_store.errors import NotFound

RNG = np.random.default_rng(7)
SENT = RNG.random((5, 5)).astype(np.float32)
NOISE = (RNG.random((5, 5)) * 1e-7).astype(np.float32)


def envelope(weights: Any) -> dict[str, Any]:
    return {
        "id": "x",
        "kind": "attention",
        "results": [{"tokens": [{"token": "a"}], "attention": [{"layer": 0, "head": 0, "weights": weights}]}],
    }


def base64_object(array: np.ndarray) -> dict[str, Any]:
    data = base64.b64encode(array.astype(array.dtype.newbyteorder("<")).tobytes()).decode()
    return {"dtype": array.dtype.name, "shape": list(array.shape), "byte_order": "little", "data": data}


def recorded_forms(array: np.ndarray) -> dict[str, tuple[Any, dict[str, bytes]]]:
    """Each form a record may hold the array in, with the blobs it needs."""
    blob, ref = blob_of(array, "json")
    return {
        "json": (orjson.loads(orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY)), {}),
        "base64": (base64_object(array), {}),
        "blob": (ref, {blob.sha256: bytes(blob.data)}),
    }


@pytest.mark.parametrize("recorded_form", ["json", "base64", "blob"])
@pytest.mark.parametrize("replayed_form", ["array", "base64"])
@pytest.mark.parametrize("noise", [False, True], ids=["identical", "noisy"])
def test_weights_compare_numerically_in_every_form(
    recorded_form: str, replayed_form: str, noise: bool
) -> None:
    replayed_array = SENT + NOISE if noise else SENT.copy()
    recorded, blobs = recorded_forms(SENT)[recorded_form]
    replayed = (
        replayed_array
        if replayed_form == "array"
        else EncodedArray(replayed_array, **base64_object(replayed_array))
    )
    outcome = compare(envelope(recorded), envelope(replayed), "attention", blobs.get)
    expected = float(np.abs(SENT.astype(float) - replayed_array.astype(float)).max())
    assert outcome["differences"] == []
    assert outcome["max_abs_diff"] == pytest.approx(expected, rel=1e-12, abs=0)
    assert outcome["identical"] is (not noise)
    assert outcome["within_tolerance"] is True


def test_a_shape_change_is_a_difference_and_a_missing_blob_is_not_found() -> None:
    recorded, blobs = recorded_forms(SENT)["blob"]
    outcome = compare(envelope(recorded), envelope(SENT[:4]), "attention", blobs.get)
    assert (
        outcome["differences"] == ["/results/0/attention/0/weights"] and outcome["within_tolerance"] is False
    )
    with pytest.raises(NotFound):
        compare(envelope(recorded), envelope(SENT), "attention", {}.get)
