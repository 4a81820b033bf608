"""Check a Candor audit export, or a proof, against signed checkpoints, with nothing but the verifier key.

An export is read as a stream of JSON lines (one leaf, purged leaf or shared part each). Every leaf hash is
recomputed from the record's stored bytes where they are present (a purged record keeps only its hash),
leaf indexes must run 0, 1, 2, ... without a gap, a repeat or a swap, every part must hash to its digest,
and the root of the first ``size`` leaves, built with a stack of complete-subtree hashes, must equal the
checkpoint's root; the same for an older checkpoint, which catches a log rewritten and re-signed.

Nothing here raises on bad input: every function returns a report dict with ``ok`` and ``first_problem``
(``{"line", "leaf_index", "reason"}``, or None).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from candor_verify import merkle
from candor_verify.checkpoint import Checkpoint, open_checkpoint
from candor_verify.note import NoteError, Verifier

__all__ = ["check_export_file", "check_proof_file", "read_key", "verify_export", "verify_proof"]

Report = dict[str, Any]


class Problem(Exception):
    """The first thing wrong with the input: a reason and, where known, the leaf index."""

    def __init__(self, reason: str, leaf_index: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.leaf_index = leaf_index


def read_key(key: str) -> Verifier:
    """The verifier for ``key``: a verifier key string, or the path of a file holding one."""
    path = Path(key)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # too long or otherwise impossible as a path: a key string
        is_file = False
    try:
        text = path.read_text(encoding="utf-8") if is_file else key
    except (OSError, UnicodeDecodeError) as exc:
        raise Problem(f"cannot read the key file {key}: {exc}") from None
    try:
        return Verifier.from_key(text)
    except NoteError as exc:
        raise Problem(f"the verifier key: {exc}") from None


def _open(note: str | bytes, verifier: Verifier, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier)
    except NoteError as exc:
        raise Problem(f"the {what}: {exc}") from None


def _b64(value: object, what: str, size: int | None = None) -> bytes:
    """``value`` decoded from base64 (exactly ``size`` bytes if given), or a Problem naming ``what``."""
    if not isinstance(value, str):
        raise Problem(f"{what} is missing or not a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise Problem(f"{what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise Problem(f"{what} is {len(raw)} bytes, not {size}")
    return raw


def _json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise Problem(f"{what} is not JSON") from None
    if not isinstance(obj, dict):
        raise Problem(f"{what} is not a JSON object")
    return obj


def _index(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise Problem(f"{what} must be a non-negative integer")
    return value


class _ExportCheck:
    """Consumes an export line by line; raises Problem at the first thing wrong."""

    def __init__(self, checkpoints: list[tuple[str, Checkpoint]]) -> None:
        self.checkpoints = checkpoints
        self.tree = merkle.RootBuilder()
        self.counts = {"lines": 0, "leaves": 0, "records": 0, "purged": 0, "parts": 0, "unsequenced": 0}
        self._check_roots()

    def _check_roots(self) -> None:
        for what, cp in self.checkpoints:
            if cp.size == self.tree.size and self.tree.root() != cp.root:
                last = cp.size - 1 if cp.size else None
                raise Problem(
                    f"the root of the first {cp.size} leaves does not match the {what}'s root", last
                )

    def line(self, raw: bytes | str) -> None:
        self.counts["lines"] += 1
        if not raw or raw.isspace():
            return
        obj = _json_object(raw, "the line")
        if "error" in obj:
            raise Problem(f"the export stream ended with an error: {json.dumps(obj['error'])[:500]}")
        if "part" in obj:
            self._part(obj)
        elif "leaf_hash" in obj:
            self._leaf(obj)
        else:
            raise Problem("the line is neither a record, a purged record nor a part")

    def _part(self, obj: dict[str, Any]) -> None:
        digest, stored = obj["part"], _b64(obj.get("stored"), "a part's stored bytes")
        if not isinstance(digest, str) or hashlib.sha256(stored).hexdigest() != digest:
            raise Problem(f"the part {str(digest)[:64]} does not hash to its digest")
        self.counts["parts"] += 1

    def _leaf(self, obj: dict[str, Any]) -> None:
        index = obj.get("leaf_index")
        where = self.tree.size if index is None else index
        try:
            leaf = self._leaf_hash(obj)
        except Problem as exc:
            raise Problem(exc.reason, where if type(where) is int else None) from None
        if index is None:
            self.counts["unsequenced"] += 1
            return
        index = _index(index, "leaf_index")
        if index != self.tree.size:
            kind = "missing" if index > self.tree.size else "duplicated or out of order"
            raise Problem(
                f"expected leaf {self.tree.size} but found leaf {index} (a record is {kind})", index
            )
        self.tree.append(leaf)
        self.counts["leaves"] += 1
        self._check_roots()

    def _leaf_hash(self, obj: dict[str, Any]) -> bytes:
        leaf = _b64(obj["leaf_hash"], "leaf_hash", merkle.HASH_SIZE)
        if obj.get("purged") is True:
            if obj.get("leaf_index") is None:
                raise Problem("a purged record has no leaf_index")
            self.counts["purged"] += 1
            return leaf
        stored = _b64(obj.get("stored"), "the record's stored bytes")
        if merkle.leaf_hash(stored) != leaf:
            raise Problem("the record's stored bytes do not hash to its leaf_hash")
        self.counts["records"] += 1
        return leaf

    def finish(self) -> None:
        for what, cp in self.checkpoints:
            if self.tree.size < cp.size:
                raise Problem(
                    f"the export has {self.tree.size} leaves, fewer than the {what}'s size {cp.size}"
                )


def _report(checks: _ExportCheck | None, cps: dict[str, Any], problem: Problem | None) -> Report:
    counts = checks.counts if checks else {}
    first = None
    if problem is not None:
        line = counts.get("lines") or None
        first = {"line": line, "leaf_index": problem.leaf_index, "reason": problem.reason}
    return {"ok": problem is None, **cps, **counts, "first_problem": first}


def verify_export(
    lines: Iterable[bytes | str],
    checkpoint: str | bytes,
    key: Verifier | str,
    old_checkpoint: str | bytes | None = None,
) -> Report:
    """Check an export's ``lines`` against a signed ``checkpoint`` (and an older one) with ``key``."""
    cps: dict[str, Any] = {"checkpoint": None, "old_checkpoint": None}
    checks = None
    try:
        verifier = key if isinstance(key, Verifier) else read_key(key)
        cp = _open(checkpoint, verifier, "checkpoint")
        cps["checkpoint"] = cp.as_dict()
        named = [("checkpoint", cp)]
        if old_checkpoint is not None:
            old = _open(old_checkpoint, verifier, "older checkpoint")
            cps["old_checkpoint"] = old.as_dict()
            if old.size > cp.size:
                raise Problem(f"the older checkpoint's size {old.size} is above the checkpoint's {cp.size}")
            named.append(("older checkpoint", old))
        checks = _ExportCheck(named)
        for raw in lines:
            checks.line(raw)
        checks.finish()
    except Problem as problem:
        return _report(checks, cps, problem)
    return _report(checks, cps, None)


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Problem(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def check_export_file(
    export: str | Path, checkpoint: str | Path, key: str, old_checkpoint: str | Path | None = None
) -> Report:
    """``verify_export`` on files (the key may be a string or a file); unreadable files are problems."""
    try:
        note = _read(checkpoint, "checkpoint")
        old = _read(old_checkpoint, "older checkpoint") if old_checkpoint is not None else None
        with open(export, "rb") as lines:
            return verify_export(lines, note, key, old)
    except Problem as problem:
        return _report(None, {"checkpoint": None, "old_checkpoint": None}, problem)
    except OSError as exc:
        unreadable = Problem(f"cannot read the export {export}: {exc.strerror or exc}")
        return _report(None, {"checkpoint": None, "old_checkpoint": None}, unreadable)


def _inclusion(proof: dict[str, Any], verifier: Verifier) -> Report:
    cp = _open(_str(proof, "checkpoint"), verifier, "proof's checkpoint")
    index = _index(proof.get("leaf_index"), "leaf_index")
    size = _index(proof.get("tree_size"), "tree_size")
    if cp.size != size:
        raise Problem(f"tree_size {size} is not the checkpoint's size {cp.size}", index)
    leaf = _b64(proof.get("leaf_hash"), "leaf_hash", merkle.HASH_SIZE)
    path = _path(proof, "inclusion_path")
    if not merkle.verify_inclusion(index, size, leaf, path, cp.root):
        raise Problem(f"the inclusion path does not lead from leaf {index} to the checkpoint's root", index)
    return {"kind": "inclusion", "leaf_index": index, "checkpoint": cp.as_dict()}


def _consistency(proof: dict[str, Any], verifier: Verifier, old_note: str | bytes | None) -> Report:
    cp = _open(_str(proof, "checkpoint"), verifier, "proof's checkpoint")
    old_size, new_size = _index(proof.get("from"), "from"), _index(proof.get("to"), "to")
    if old_size == 0:
        raise Problem("a consistency proof from size 0 proves nothing and is refused")
    if cp.size != new_size:
        raise Problem(f"'to' {new_size} is not the checkpoint's size {cp.size}")
    path = _path(proof, "consistency_path")
    if old_note is None:
        raise Problem("a consistency proof needs the older checkpoint (--old-checkpoint) of size 'from'")
    old = _open(old_note, verifier, "older checkpoint")
    if old.size != old_size:
        raise Problem(f"'from' {old_size} is not the older checkpoint's size {old.size}")
    if not merkle.verify_consistency(old_size, new_size, old.root, cp.root, path):
        raise Problem(f"the consistency path does not show the tree of {old_size} leaves is a prefix")
    return {"kind": "consistency", "checkpoint": cp.as_dict(), "old_checkpoint": old.as_dict()}


def _str(obj: dict[str, Any], field: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise Problem(f"{field} is missing or not a string")
    return value


def _path(obj: dict[str, Any], field: str) -> list[bytes]:
    value = obj.get(field)
    if not isinstance(value, list):
        raise Problem(f"{field} is missing or not a list")
    return [_b64(h, f"{field}[{i}]", merkle.HASH_SIZE) for i, h in enumerate(value)]


def verify_proof(
    proof_json: str | bytes, key: Verifier | str, old_checkpoint: str | bytes | None = None
) -> Report:
    """Check an inclusion proof, or a consistency proof from ``old_checkpoint``, with ``key``."""
    try:
        verifier = key if isinstance(key, Verifier) else read_key(key)
        proof = _json_object(proof_json, "the proof")
        if "inclusion_path" in proof:
            found = _inclusion(proof, verifier)
        elif "consistency_path" in proof:
            found = _consistency(proof, verifier, old_checkpoint)
        else:
            raise Problem("the proof has neither an inclusion_path nor a consistency_path")
    except Problem as problem:
        first = {"line": None, "leaf_index": problem.leaf_index, "reason": problem.reason}
        return {"ok": False, "first_problem": first}
    return {"ok": True, **found, "first_problem": None}


def check_proof_file(proof: str | Path, key: str, old_checkpoint: str | Path | None = None) -> Report:
    """``verify_proof`` on files; unreadable files are problems."""
    try:
        old = _read(old_checkpoint, "older checkpoint") if old_checkpoint is not None else None
        return verify_proof(_read(proof, "proof"), key, old)
    except Problem as problem:
        return {"ok": False, "first_problem": {"line": None, "leaf_index": None, "reason": problem.reason}}
