"""The array codec (``model_store.array_codec``): every encoding of weights arrays round-trips, checked
against independent readers (the README's base64 recipe, ``safetensors.numpy``, hashlib over numpy's own
little-endian bytes, torch's float16 rounding), and malformed forms are refused as before. The reference
objects and base64 objects are compared with their exact JSON as the code before the codec wrote it, so
existing records read back the same."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
from typing import Any

import numpy as np
import orjson
import pytest
import safetensors.numpy
import torch

from api.service.jsonbytes import dumps_bytes
from api.service.replay import compare
from explainers.attention import torch_half
from model_store import array_codec as codec
from model_store.errors import InvalidInput

RNG = np.random.default_rng(11)
WEIGHTS = RNG.random((4, 4)).astype(np.float32)
SHAPES = [(4, 4), (2, 3, 5), (0,), (0, 3), ()]
"""Matrices, a stack, empty arrays and a 0-d array."""
FIXED = np.arange(6, dtype=np.float32).reshape(2, 3) / 7


def sample(shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    return RNG.random(shape).astype(dtype)


def readme_base64(value: dict[str, Any]) -> np.ndarray:
    """How the README tells a client to read a base64 object (independent of the codec)."""
    dtype = np.dtype(value["dtype"]).newbyteorder("<")
    return np.frombuffer(base64.b64decode(value["data"]), dtype).reshape(value["shape"])


def sent(value: Any) -> Any:
    """``value`` as a client receives it (the API's own JSON writer), read back."""
    return orjson.loads(dumps_bytes(value))


def envelope(encoding: str, dtype: str, arrays: list[np.ndarray]) -> dict[str, Any]:
    entries = [{"layer": 0, "head": i, "weights": a} for i, a in enumerate(arrays)]
    return {
        "id": "x",
        "kind": "attention",
        "method": {"params": {"encoding": encoding, "dtype": dtype}},
        "results": [{"tokens": [{"token": "a"}], "attention": entries}],
    }


# -- JSON numbers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 5), (0,)], ids=str)
def test_json_numbers_round_trip_to_the_very_float32(shape: tuple[int, ...]) -> None:
    """(Nested numbers hold no shape for an empty (0, 3) array, and orjson writes no 0-d array: attention
    maps are never either; the binary encodings below carry both.)"""
    array = sample(shape)
    encoded = codec.WeightsCodec("json").encode(array)
    assert encoded is array  # orjson writes the array itself
    decoded = codec.decode(sent(encoded))
    assert decoded.dtype == np.float32 and decoded.shape == shape
    np.testing.assert_array_equal(decoded, array)  # shortest float32 text reads back bit for bit


def test_json_numbers_carry_non_finite_values_as_null_which_reads_back_as_nan() -> None:
    array = np.array([np.nan, np.inf, -np.inf, 0.5], dtype=np.float32)
    assert dumps_bytes(codec.WeightsCodec("json").encode(array)) == b"[null,null,null,0.5]"
    np.testing.assert_array_equal(codec.decode(sent(array)), [np.nan, np.nan, np.nan, 0.5])


def test_json_numbers_read_in_the_dtype_asked() -> None:
    """float64 reads parse the decimal text (narratives), as before the codec; not the float32 widened."""
    decoded = codec.decode([[0.1, 0.2]], np.float64)
    assert decoded.dtype == np.float64 and decoded[0, 0] == 0.1


# -- base64 objects -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", codec.DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_base64_round_trips_and_reads_as_the_readme_says(shape: tuple[int, ...], dtype: str) -> None:
    wire = codec.WeightsCodec("base64", dtype)
    array = wire.cast(sample(shape))
    value = sent(wire.encode(array))
    assert set(value) == codec.BASE64_KEYS and value["dtype"] == dtype and value["shape"] == list(shape)
    assert value["byte_order"] == "little"
    for decoded in (codec.from_base64(value), codec.decode(value), readme_base64(value)):
        assert decoded.dtype == np.dtype(dtype) and decoded.shape == shape
        np.testing.assert_array_equal(decoded, array)


def test_base64_object_is_byte_identical_to_what_was_sent_before() -> None:
    value = codec.WeightsCodec("base64", "float16").encode(FIXED.astype(np.float16))
    expected = b'{"dtype":"float16","shape":[2,3],"byte_order":"little","data":"AACSMJI02zaSOLc5"}'
    assert dumps_bytes(value) == expected
    assert codec.decode(value) is value.array  # the answer's own array: nothing decoded


def test_big_endian_input_is_sent_little_endian() -> None:
    big = WEIGHTS.astype(">f4")
    value = codec.base64_object(big)
    assert value["data"] == base64.b64encode(WEIGHTS.astype("<f4").tobytes()).decode()
    np.testing.assert_array_equal(readme_base64(sent(value)), WEIGHTS)
    assert codec.little_endian(WEIGHTS) is WEIGHTS  # no copy when already little-endian and contiguous
    strided = WEIGHTS.T
    assert codec.little_endian(strided).flags.c_contiguous


def test_a_big_endian_object_decodes_by_its_byte_order() -> None:
    value = {"dtype": "float32", "shape": [4, 4], "byte_order": "big", "data": ""}
    value["data"] = base64.b64encode(WEIGHTS.astype(">f4").tobytes()).decode()
    np.testing.assert_array_equal(codec.from_base64(value), WEIGHTS)


def test_base64_keeps_non_finite_values_bit_for_bit() -> None:
    array = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=np.float32)
    decoded = codec.from_base64(sent(codec.base64_object(array)))
    assert decoded.tobytes() == array.tobytes()


GOOD = {"dtype": "float32", "shape": [2], "byte_order": "little", "data": "AACAPwAAAEA="}


@pytest.mark.parametrize(
    "change",
    [
        {"data": "AACAPwAAAEA"},  # bad padding
        {"data": "AACAPw!!AAEA="},  # not base64
        {"data": "AACAPw\nAAAEA="},  # a character outside the alphabet (a lenient reader would skip it)
        {"shape": [3]},  # the bytes do not fill the shape
        {"shape": "2"},
        {"dtype": "float99"},
        {"dtype": "object"},
        {"byte_order": "middle"},
        {"data": 12},
        {"extra": 1},
    ],
    ids=repr,
)
def test_malformed_base64_objects_are_refused(change: dict[str, Any]) -> None:
    assert codec.from_base64(GOOD).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        codec.from_base64({**GOOD, **change})


def test_replay_compares_a_malformed_base64_object_as_json() -> None:
    """A recorded object that does not decode is compared as it is: a difference, not a failure."""
    bad = {**GOOD, "data": "AACAPw!!AAEA="}
    outcome = compare(
        envelope("base64", "float32", [bad]), envelope("base64", "float32", [WEIGHTS]), "attention"
    )
    assert outcome["differences"] == ["/results/0/attention/0/weights"]


# -- float16 ------------------------------------------------------------------------------------------------
HALF_CASES = np.array(
    [
        1 + 2**-11,  # a tie: to even (1.0)
        1 + 3 * 2**-11,  # a tie: to even (1 + 2**-9)
        2**-24,  # the smallest subnormal
        2**-26,  # below half of it: zero
        65504,
        65519.99,  # rounds down to the largest float16
        65520,  # overflows to infinity
        -1e6,
        np.nan,
        np.inf,
        -0.0,
    ],
    dtype=np.float32,
)


def test_float16_rounds_to_nearest_even_like_torch() -> None:
    """numpy's cast and the torch one the attention adapter passes agree bit for bit; ties go to even and
    past the range is infinity (no warning)."""
    values = np.concatenate([HALF_CASES, RNG.standard_normal(10_000).astype(np.float32)])
    ours, theirs = codec.numpy_half(values), torch_half(values)
    assert ours.dtype == theirs.dtype == np.float16
    assert ours.view(np.uint16).tolist() == theirs.view(np.uint16).tolist()
    assert ours[:8].tolist() == [1.0, 1 + 2**-9, 2**-24, 0.0, 65504, 65504, np.inf, -np.inf]
    assert torch.from_numpy(values).half().numpy().view(np.uint16).tolist() == ours.view(np.uint16).tolist()


def test_float16_error_is_within_half_an_ulp() -> None:
    wire = codec.WeightsCodec("base64", "float16")
    sent_values = wire.cast(WEIGHTS)  # weights in [0, 1): |error| <= 2^-12
    assert sent_values.dtype == np.float16 and sent_values.flags.c_contiguous
    assert np.abs(sent_values.astype(np.float64) - WEIGHTS).max() <= 2.0**-12


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"encoding": "xml"}, "encoding"),
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": "float16"}, "dtype"),  # JSON numbers are float32
        ({"encoding": "json", "dtype": "float16"}, "dtype"),
    ],
)
def test_bad_encodings_and_dtypes_are_422_naming_the_field(options: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        codec.WeightsCodec.from_options(options)
    assert refused.value.status == 422 and list(refused.value.errors) == [field]


def test_options_default_to_json_float32() -> None:
    assert codec.WeightsCodec.from_options({}) == codec.WeightsCodec("json", "float32")
    chosen = codec.WeightsCodec.from_options({"encoding": "safetensors", "dtype": "float16"})
    assert (chosen.encoding, chosen.dtype) == ("safetensors", "float16")


# -- safetensors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", codec.DTYPES)
def test_safetensors_body_is_read_by_safetensors(dtype: str) -> None:
    wire = codec.WeightsCodec("safetensors", dtype)
    arrays = [wire.cast(sample(shape)) for shape in [(3, 3), (0, 2), ()]]
    arrays.append(wire.cast(sample((2, 2))).astype(np.dtype(dtype).newbyteorder(">")))  # big-endian input
    body = codec.safetensors_body(envelope("safetensors", dtype, arrays), dumps_bytes)
    tensors = safetensors.numpy.load(body)
    size = int.from_bytes(body[:8], "little")
    assert (8 + size) % 8 == 0  # the data starts 8-byte aligned
    meta = orjson.loads(body[8 : 8 + size])["__metadata__"]
    described = orjson.loads(meta["explanation"])
    names = [e["weights"] for e in described["results"][0]["attention"]]
    assert names == [f"results.0.attention.{i}.weights" for i in range(4)] and sorted(tensors) == sorted(
        names
    )
    for name, array in zip(names, arrays, strict=True):
        assert tensors[name].dtype == np.dtype(dtype) and tensors[name].shape == array.shape
        np.testing.assert_array_equal(tensors[name], array)
    assert described["results"][0]["tokens"] == [{"token": "a"}]


# -- blob references ----------------------------------------------------------------------------------------
def test_a_reference_is_byte_identical_to_what_records_held_before() -> None:
    """The reference's JSON (key order too) and the blob's sha256, as the code before the codec wrote them."""
    blob, ref = codec.blob_of(FIXED, "base64")
    sha = "6b54b8e41082fe0c1cddb0d5c888964250f3eea075a895705d5d7ca0df7aacea"
    assert sha == hashlib.sha256(FIXED.astype("<f4").tobytes()).hexdigest()
    assert orjson.dumps(ref) == (
        b'{"blob_sha256":"' + sha.encode() + b'","dtype":"float32","shape":[2,3],"byte_order":"little",'
        b'"bytes":24,"encoding":"base64"}'
    )
    assert blob.sha256 == sha and bytes(blob.data) == FIXED.tobytes()


@pytest.mark.parametrize("dtype", codec.DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_references_round_trip_through_the_blobs(shape: tuple[int, ...], dtype: str) -> None:
    array = sample(shape, dtype)
    results, blobs = codec.referenced([{"weights": array, "tokens": [{"token": "a"}]}], "json")
    ref = results[0]["weights"]
    assert codec.is_reference(ref) and list(codec.references(results)) == [ref]
    assert ref["shape"] == list(shape) and ref["dtype"] == dtype and ref["bytes"] == array.nbytes
    stored = {blob.sha256: bytes(blob.data) for blob in blobs}
    assert hashlib.sha256(array.astype(np.dtype(dtype).newbyteorder("<")).tobytes()).hexdigest() in stored
    read = codec.with_arrays(sent(results), stored.__getitem__)
    np.testing.assert_array_equal(read[0]["weights"], array)
    assert read[0]["weights"].dtype == np.dtype(dtype) and read[0]["tokens"] == [{"token": "a"}]
    assert codec.reference_problem(ref, array.nbytes) is None


def test_a_big_endian_array_is_the_same_blob() -> None:
    little = codec.blob_of(WEIGHTS, "json")
    big = codec.blob_of(WEIGHTS.astype(">f4"), "json")
    assert big[0].sha256 == little[0].sha256 and big[1] == little[1]


def test_many_big_arrays_hash_on_two_threads_in_order() -> None:
    arrays = [sample((300, 300)) for _ in range(4)]  # 1.4 MB: past PARALLEL_BYTES
    assert sum(a.nbytes for a in arrays) > codec.PARALLEL_BYTES
    hashed = codec.blobs_of(arrays, "json")
    assert [blob.sha256 for blob, _ in hashed] == [hashlib.sha256(a.tobytes()).hexdigest() for a in arrays]


@pytest.mark.parametrize(
    ("change", "size", "reason"),
    [
        ({"dtype": "float99"}, 24, "names no valid dtype and shape"),
        ({"shape": None}, 24, "names no valid dtype and shape"),
        ({"shape": [2, 2]}, 24, "does not have the size its reference states"),
        ({"bytes": 20}, 24, "does not have the size its reference states"),
        ({}, 20, "does not have the size its reference states"),
    ],
)
def test_a_reference_that_does_not_fit_its_blob_says_why(
    change: dict[str, Any], size: int, reason: str
) -> None:
    _, ref = codec.blob_of(FIXED, "json")
    problem = codec.reference_problem({**ref, **change}, size)
    assert problem is not None and reason in problem and ref["blob_sha256"] in problem


def test_only_reference_objects_are_references() -> None:
    assert not codec.is_reference({"blob_sha256": 3}) and not codec.is_reference(["blob_sha256"])
    value = {"a": [{"b": {"blob_sha256": "x"}}, {"blob_sha256": "x"}], "c": {"blob_sha256": "y", "d": 1}}
    assert list(codec.references(value)) == [{"blob_sha256": "x"}] * 2 + [value["c"]]
    assert codec.digests(value) == {"x", "y"}


# -- a recorded answer sent again ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "dtype"), [("json", "float32"), ("base64", "float32"), ("base64", "float16")]
)
def test_a_recorded_envelope_is_sent_again_as_it_was_sent(encoding: str, dtype: str) -> None:
    wire = codec.WeightsCodec(encoding, dtype)
    shapes = SHAPES[:-1] if encoding == "json" else SHAPES  # no 0-d array as JSON numbers (see above)
    answer = envelope(encoding, dtype, [wire.encode(wire.cast(sample(shape))) for shape in shapes])
    first = dumps_bytes(answer)
    results, blobs = codec.referenced(answer["results"], encoding)
    record = sent({**answer, "results": results})  # the record's JSON
    stored = {blob.sha256: bytes(blob.data) for blob in blobs}
    assert dumps_bytes(codec.as_sent(codec.with_arrays(record, stored.__getitem__))) == first


def test_the_codec_imports_no_torch_flask_or_database() -> None:
    script = (
        "import sys, model_store.array_codec; "
        "print(sorted(m for m in ('torch', 'flask', 'sqlalchemy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
