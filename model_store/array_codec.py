"""Every encoding of weights arrays (attention maps), each with its decoding beside it. numpy only.

How an array leaves the server (``WeightsCodec``, from a request's ``encoding`` and ``dtype``):

- ``json``: nested JSON numbers, float32 in their shortest form (the array itself: orjson writes it;
  a non-finite value is written as ``null``, which ``decode`` reads back as NaN).
- ``base64``: ``{"dtype", "shape", "byte_order": "little", "data"}``, ``data`` the base64 of the array's
  little-endian bytes in C order (``numpy.frombuffer(base64.b64decode(data), dtype).reshape(shape)``).
- ``safetensors``: a tensor of a safetensors file (``safetensors_body``): the envelope goes in its
  ``__metadata__``, each array replaced by its tensor's name.

How an audit record keeps it: out of line, as a reference ``{"blob_sha256", "dtype", "shape", "byte_order":
"little", "bytes", "encoding"}`` to a blob of the same little-endian bytes (``referenced``, ``with_arrays``),
or by digest only: the same reference with ``"kept": false`` and no blob (``referenced(..., keep=False)``).
The blob store (``model_store.audit_blobs``) only stores and returns the bytes.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import math
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from model_store.errors import InvalidInput

ENCODINGS = ("json", "base64", "safetensors")
JSON_ENCODINGS = ("json", "base64")
"""The encodings a JSON answer (a job's result lines) can carry."""
DTYPES = ("float32", "float16")
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16"}
BASE64_KEYS = frozenset({"dtype", "shape", "byte_order", "data"})
"""The keys of a base64 weights object."""
REF_KEY = "blob_sha256"
KEPT_KEY = "kept"
"""In a reference: ``false`` when the record keeps the array's sha256 only (no blob was stored)."""
BIG_ENDIAN = sys.byteorder == "big"
PARALLEL_BYTES = 1 << 20
WITHOUT_ARRAYS = frozenset({"tokens", "words", "prediction", "params", "library_versions"})
"""Envelope keys whose values never hold arrays: ``arrays_replaced`` keeps them as they are (a note's 128
token objects would otherwise be walked and copied twice per answer)."""

HalfCast = Callable[[np.ndarray], np.ndarray]
"""A C-contiguous float32 array to float16, rounded to nearest even (overflow to infinity)."""


class EncodedArray(dict[str, Any]):
    """An array's JSON form as sent (e.g. its base64 object; a plain JSON object to orjson) that still holds
    the array, so a record stores the array's bytes without decoding what was sent."""

    def __init__(self, array: np.ndarray, **fields: Any) -> None:
        super().__init__(**fields)
        self.array = array


@dataclasses.dataclass(frozen=True)
class Blob:
    sha256: str
    data: memoryview
    """The array's bytes, without a copy (the array stays alive as long as the blob)."""


def arrays_replaced(value: Any, replace: Callable[[np.ndarray, str], Any], path: str = "") -> Any:
    """``value`` (an envelope or a part of it) with every numpy array and ``EncodedArray`` replaced by
    ``replace(array, path)``; ``path`` names its place (``results.0.attention.5.weights``). The containers
    on the way are copied; ``value`` is left as it is."""
    if isinstance(value, EncodedArray):
        return replace(value.array, path)
    if isinstance(value, np.ndarray):
        return replace(value, path)
    if isinstance(value, dict):
        return {
            k: v if k in WITHOUT_ARRAYS else arrays_replaced(v, replace, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [arrays_replaced(v, replace, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` C-contiguous in little-endian byte order (no copy when it already is, as on x86 and ARM)."""
    if not array.flags.c_contiguous:
        array = np.asarray(array, order="C")
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and BIG_ENDIAN):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array


def raw_bytes(array: np.ndarray) -> memoryview:
    """The bytes of a C-contiguous array, without a copy (empty arrays of any shape included)."""
    return array.reshape(-1).data.cast("B")


def numpy_half(array: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # past float16's range is infinity, as the wire dtype says
        return array.astype(np.float16)


# -- the encodings a client receives ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class WeightsCodec:
    """How weights leave the server: ``json`` numbers (float32), or float32 or float16 bytes as ``base64``
    objects or ``safetensors`` tensors. ``half`` converts to float16 (an equal, faster one may be given)."""

    encoding: str = "json"
    dtype: str = "float32"
    half: HalfCast = dataclasses.field(default=numpy_half, compare=False, repr=False)

    @classmethod
    def from_options(cls, options: dict[str, Any], half: HalfCast = numpy_half) -> WeightsCodec:
        """The request's ``encoding`` and ``dtype`` (defaults json, float32); a 422 naming the field for an
        unknown one or for float16 as JSON numbers."""
        encoding = options.get("encoding") or "json"
        dtype = options.get("dtype") or "float32"
        if encoding not in ENCODINGS:
            raise InvalidInput.field("encoding", f"One of {', '.join(ENCODINGS)}.")
        if dtype not in DTYPES:
            raise InvalidInput.field("dtype", f"One of {', '.join(DTYPES)}.")
        if encoding == "json" and dtype != "float32":
            raise InvalidInput.field(
                "dtype", f"{dtype} needs encoding base64 or safetensors; JSON numbers are float32."
            )
        return cls(encoding, dtype, half)

    def cast(self, array: np.ndarray) -> np.ndarray:
        """The values as they will be sent: a C-contiguous array of the wire dtype (native byte order)."""
        array = np.asarray(array, dtype=np.float32, order="C")  # a 0-d array stays 0-d
        return self.half(array) if self.dtype == "float16" else array

    def encode(self, array: np.ndarray) -> Any:
        """One array from ``cast`` as the client receives it: the array itself for JSON numbers (orjson
        writes float32 arrays natively) and for safetensors (written by ``safetensors_body``)."""
        return base64_object(array) if self.encoding == "base64" else array


def base64_object(array: np.ndarray) -> EncodedArray:
    """``array`` as a base64 weights object (holding the little-endian array it encodes)."""
    little = little_endian(array)
    return EncodedArray(
        little,
        dtype=little.dtype.name,
        shape=list(little.shape),
        byte_order="little",
        data=binascii.b2a_base64(raw_bytes(little), newline=False).decode("ascii"),
    )


def is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == BASE64_KEYS and isinstance(value["data"], str)


def from_base64(value: Any) -> np.ndarray:
    """The array a base64 weights object holds (read-only, its stated byte order kept); ``ValueError``
    when ``value`` is not one or does not hold what it states (bad base64, dtype, byte order or size)."""
    if isinstance(value, EncodedArray):
        return value.array
    if not is_base64_object(value):
        raise ValueError("Not a base64 weights object.")
    orders = {"little": "<", "big": ">"}
    try:
        dtype = np.dtype(value["dtype"]).newbyteorder(orders[value["byte_order"]])
        data = base64.b64decode(value["data"], validate=True)
        return np.frombuffer(data, dtype=dtype).reshape(value["shape"])
    except (binascii.Error, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"A malformed base64 weights object: {error}") from None


def decode(value: Any, dtype: Any = None) -> np.ndarray:
    """A weights array in any form the API sends or records it (after ``with_arrays``): an array, a base64
    object, or nested JSON numbers (read in ``dtype``, default float32, the wire dtype of JSON numbers);
    converted to ``dtype`` when one is given."""
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, dict):
        array = from_base64(value)
    else:
        return np.asarray(value, dtype=dtype or np.float32)
    return array if dtype is None else array.astype(dtype, copy=False)


def as_sent(envelope: dict[str, Any]) -> dict[str, Any]:
    """A recorded envelope whose weights were read back as arrays, with each array encoded as its request
    asked (``encoding``, ``dtype``), so it is sent again as it was sent first."""
    params = envelope["method"]["params"]
    codec = WeightsCodec(params.get("encoding") or "json", params.get("dtype") or "float32")
    return arrays_replaced(envelope, lambda array, _path: codec.encode(array))


def safetensors_body(envelope: dict[str, Any], dumps: Callable[[Any], bytes]) -> bytes:
    """The envelope as one safetensors file: each weights array a tensor named by its place, the envelope
    (arrays replaced by those names, serialised with ``dumps``) in ``__metadata__["explanation"]``. Written
    here rather than by ``safetensors.numpy.save``, which copies every array twice."""
    header: dict[str, Any] = {}
    buffers: list[memoryview] = []
    offset = 0

    def name(array: np.ndarray, path: str) -> str:
        nonlocal offset
        little = little_endian(array)
        data = raw_bytes(little)
        header[path] = {
            "dtype": SAFETENSORS_DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        buffers.append(data)
        offset += data.nbytes
        return path

    described = arrays_replaced(envelope, name)
    header["__metadata__"] = {"format": "candor-explanation", "explanation": dumps(described).decode()}
    text = dumps(header)
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return b"".join([struct.pack("<Q", len(text)), text, *buffers])


# -- blob references in audit records -----------------------------------------------------------------------
def blob_of(array: np.ndarray, encoding: str) -> tuple[Blob, dict[str, Any]]:
    """The blob of ``array`` and the reference a record keeps in its place (``encoding``: how the client
    received the values: json numbers, base64 or safetensors, all of these very bytes)."""
    little = little_endian(array)
    data = raw_bytes(little)
    sha = hashlib.sha256(data).hexdigest()
    ref: dict[str, Any] = {REF_KEY: sha, "dtype": little.dtype.name, "shape": list(little.shape)}
    ref.update(byte_order="little", bytes=data.nbytes, encoding=encoding)
    return Blob(sha, data), ref


def blobs_of(arrays: Sequence[np.ndarray], encoding: str) -> list[tuple[Blob, dict[str, Any]]]:
    """``blob_of`` each array; past ``PARALLEL_BYTES`` in total, half of them on a second thread (sha256
    releases the GIL, so a full attention map hashes in about half the time when a core is free)."""
    if sum(a.nbytes for a in arrays) < PARALLEL_BYTES or len(arrays) < 2:
        return [blob_of(a, encoding) for a in arrays]
    half = len(arrays) // 2
    second = _hasher().submit(lambda: [blob_of(a, encoding) for a in arrays[half:]])
    first = [blob_of(a, encoding) for a in arrays[:half]]
    return first + second.result()


@functools.cache
def _hasher() -> ThreadPoolExecutor:
    """One helper thread per process, made on first use (after a server's fork, never at import)."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="candor-blob-hash")


def referenced(value: Any, encoding: str, keep: bool = True) -> tuple[Any, list[Blob]]:
    """``value`` (a part of an envelope) with every array replaced by a reference to its blob, and the blobs
    (one per array, in order). With ``keep`` false the references say ``"kept": false`` and no blob is
    returned: the record keeps each array's sha256, dtype and shape only."""
    arrays: list[np.ndarray] = []
    refs: list[dict[str, Any]] = []

    def reference(array: np.ndarray, _path: str) -> dict[str, Any]:
        arrays.append(array)
        refs.append({})  # filled below, once every array is hashed
        return refs[-1]

    replaced = arrays_replaced(value, reference)
    hashed = blobs_of(arrays, encoding)
    for ref, (_, filled) in zip(refs, hashed, strict=True):
        ref.update(filled)
        if not keep:
            ref[KEPT_KEY] = False
    return replaced, [blob for blob, _ in hashed] if keep else []


def matches(ref: dict[str, Any], array: np.ndarray) -> bool:
    """Whether ``array`` is the one ``ref`` names: its dtype, shape and the sha256 of its bytes."""
    little = little_endian(array)
    if little.dtype.name != ref.get("dtype") or list(little.shape) != ref.get("shape"):
        return False
    return hashlib.sha256(raw_bytes(little)).hexdigest() == ref[REF_KEY]


def arrays_at(value: Any) -> dict[str, np.ndarray]:
    """Every array of ``value`` (an envelope as computed) by its place, as ``arrays_replaced`` names it."""
    found: dict[str, np.ndarray] = {}

    def note(array: np.ndarray, path: str) -> None:
        found[path] = array

    arrays_replaced(value, note)
    return found


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(REF_KEY), str)


def is_kept(ref: dict[str, Any]) -> bool:
    """Whether a reference's blob was stored (every reference but a digest-only one)."""
    return ref.get(KEPT_KEY) is not False


def references(value: Any) -> Iterator[dict[str, Any]]:
    """Every blob reference inside ``value`` (a recorded explanation), depth first. Only the explanation
    holds references: a request's instances and options are the client's JSON and are never read as one."""
    if isinstance(value, dict):
        if is_reference(value):
            yield value
            return
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)


def digests(value: Any) -> set[str]:
    """The sha256 of every blob ``value`` (a recorded explanation) refers to."""
    return {ref[REF_KEY] for ref in references(value)}


def kept_digests(value: Any) -> set[str]:
    """The sha256 of every blob ``value`` refers to whose bytes were stored (digest-only ones left out)."""
    return {ref[REF_KEY] for ref in references(value) if is_kept(ref)}


def array_of(ref: dict[str, Any], data: bytes) -> np.ndarray:
    """The array a reference names, from its blob's bytes."""
    return np.frombuffer(data, dtype=np.dtype(ref["dtype"]).newbyteorder("<")).reshape(ref["shape"])


def references_replaced(value: Any, replace: Callable[[dict[str, Any], str], Any], path: str = "") -> Any:
    """``value`` (a recorded explanation) with every blob reference replaced by ``replace(ref, path)``;
    ``path`` names its place as ``arrays_replaced`` names the array's."""
    if is_reference(value):
        return replace(value, path)
    if isinstance(value, dict):
        return {
            k: references_replaced(v, replace, f"{path}.{k}" if path else str(k)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [references_replaced(v, replace, f"{path}.{i}") for i, v in enumerate(value)]
    return value


def with_arrays(value: Any, load: Callable[[str], bytes]) -> Any:
    """``value`` (a recorded explanation) with every blob reference replaced by its array, its bytes read
    with ``load`` (e.g. ``AuditBlobs.checked``)."""
    return references_replaced(value, lambda ref, _path: array_of(ref, load(ref[REF_KEY])))


def reference_problem(ref: dict[str, Any], size: int) -> str | None:
    """Why a reference does not fit its blob of ``size`` bytes (None: it does): the size it states and
    the size its dtype and shape make must both be the blob's."""
    sha = ref[REF_KEY]
    try:
        expected = math.prod(ref["shape"]) * np.dtype(ref["dtype"]).itemsize
    except (KeyError, TypeError, ValueError):
        return f"the reference to blob {sha} names no valid dtype and shape"
    if not size == ref.get("bytes") == expected:
        return f"the blob {sha} does not have the size its reference states"
    return None
