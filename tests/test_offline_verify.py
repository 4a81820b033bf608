"""The offline verifier on exports and proofs built here from design20.md's formats: a good log verifies, and
every tampering the issue names is caught; plus the command line, and a clean venv with only cryptography."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from candor_verify import merkle, note, offline
from candor_verify.checkpoint import Checkpoint, signed

ROOT = Path(__file__).resolve().parents[1]
WHEELHOUSE = ROOT / ".cache" / "wheels"
ORIGIN = "candor.local/audit/0badc0de"
SKEY, VKEY = note.generate(ORIGIN)
SIGNER = note.Signer.from_key(SKEY)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _stored(i: int) -> bytes:
    return json.dumps({"id": f"rec-{i}", "model": "loan", "values": [i, i * 0.5]}).encode()


def _record(i: int, stored: bytes) -> dict[str, Any]:
    return {
        "leaf_index": i,
        "leaf_hash": _b64(merkle.leaf_hash(stored)),
        "stored": _b64(stored),
        "record": {},
    }


def build(n: int, purged: Sequence[int] = ()) -> list[dict[str, Any]]:
    """An export of ``n`` records (every third preceded by a shared part), ``purged`` ones kept as hashes."""
    lines: list[dict[str, Any]] = []
    for i in range(n):
        if i % 3 == 0:
            part = f"params {i}".encode()
            lines.append({"part": hashlib.sha256(part).hexdigest(), "stored": _b64(part)})
        line = _record(i, _stored(i))
        if i in purged:
            line = {"leaf_index": i, "leaf_hash": line["leaf_hash"], "purged": True}
        lines.append(line)
    return lines


def leaves(lines: list[dict[str, Any]]) -> list[bytes]:
    return [base64.b64decode(x["leaf_hash"]) for x in lines if x.get("leaf_index") is not None]


def checkpoint_of(lines: list[dict[str, Any]], size: int | None = None, signer: note.Signer = SIGNER) -> str:
    """A checkpoint signed over the first ``size`` leaves; the root computed by merkle.root (the oracle)."""
    hashes = leaves(lines)
    size = len(hashes) if size is None else size
    return signed(Checkpoint(signer.name, size, merkle.root(hashes[:size])), signer)


def verify(lines: list[dict[str, Any]], cp: str, old: str | None = None, key: str = VKEY) -> dict[str, Any]:
    return offline.verify_export((json.dumps(x).encode() + b"\n" for x in lines), cp, key, old)


def problem(report: dict[str, Any]) -> dict[str, Any]:
    assert report["ok"] is False, report
    first: dict[str, Any] = report["first_problem"]
    return first


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 8, 9, 33])
def test_good_export_verifies_at_every_checkpoint_size(n: int) -> None:
    lines = build(n, purged=[1] if n > 1 else [])
    for size in range(n + 1):
        report = verify(lines, checkpoint_of(lines, size), checkpoint_of(lines, size // 2))
        assert report["ok"], report
        assert report["leaves"] == n and report["checkpoint"]["size"] == size
    report = verify(lines, checkpoint_of(lines))
    assert report["purged"] == (1 if n > 1 else 0) and report["records"] == n - report["purged"]
    assert report["parts"] == (n + 2) // 3 and report["first_problem"] is None


def test_root_check_is_not_vacuous() -> None:
    lines = build(9)
    wrong = signed(Checkpoint(ORIGIN, 9, merkle.root(leaves(lines)[:8])), SIGNER)
    assert "does not match the checkpoint's root" in problem(verify(lines, wrong))["reason"]


def test_flipped_byte_in_any_record_is_caught() -> None:
    lines = build(10)
    for at, line in enumerate(lines):
        if "leaf_index" not in line:
            continue
        stored = bytearray(base64.b64decode(line["stored"]))
        for pos in (0, len(stored) // 2, len(stored) - 1):
            stored[pos] ^= 0x01
            bad = [*lines[:at], {**line, "stored": _b64(bytes(stored))}, *lines[at + 1 :]]
            first = problem(verify(bad, checkpoint_of(lines)))
            assert first["leaf_index"] == line["leaf_index"]
            assert "do not hash to its leaf_hash" in first["reason"]
            stored[pos] ^= 0x01


def test_rewritten_record_with_its_own_leaf_hash_breaks_the_root() -> None:
    lines = build(10)
    lines[5] = _record(lines[5]["leaf_index"], b'{"id": "forged"}')
    assert (
        "does not match the checkpoint's root" in problem(verify(lines, checkpoint_of(build(10))))["reason"]
    )


def _records_at(lines: list[dict[str, Any]]) -> list[int]:
    return [k for k, x in enumerate(lines) if "leaf_index" in x]


def test_deleted_duplicated_and_reordered_records_are_caught() -> None:
    lines, cp = build(10), checkpoint_of(build(10))
    at = _records_at(lines)
    deleted = [x for k, x in enumerate(lines) if k != at[4]]
    assert "a record is missing" in problem(verify(deleted, cp))["reason"]
    duplicated = [*lines[: at[4] + 1], lines[at[4]], *lines[at[4] + 1 :]]
    assert "duplicated or out of order" in problem(verify(duplicated, cp))["reason"]
    swapped = list(lines)
    swapped[at[4]], swapped[at[5]] = swapped[at[5]], swapped[at[4]]
    assert problem(verify(swapped, cp))["reason"].startswith("expected leaf 4 but found leaf 5")
    renumbered = [dict(x) for x in deleted]  # deleted, then the indexes closed up again
    for i, k in enumerate(_records_at(renumbered)):
        renumbered[k]["leaf_index"] = i
    assert "fewer than the checkpoint's size" in problem(verify(renumbered, cp))["reason"]
    cp9 = checkpoint_of(lines, 9)
    assert "does not match the checkpoint's root" in problem(verify(renumbered, cp9))["reason"]
    relabelled = [dict(x) for x in swapped]  # swapped, indexes relabelled to look in order
    relabelled[at[4]]["leaf_index"], relabelled[at[5]]["leaf_index"] = 4, 5
    assert "does not match the checkpoint's root" in problem(verify(relabelled, cp))["reason"]


def test_log_rewritten_and_resigned_with_the_same_key_is_caught_by_the_older_checkpoint() -> None:
    original = build(12)
    old = checkpoint_of(original, 8)  # an auditor kept this one
    rewritten = [dict(x) for x in original]
    k = _records_at(rewritten)[3]
    rewritten[k] = _record(3, b'{"id": "rec-3", "decision": "approved"}')
    resigned = checkpoint_of(rewritten)  # the same key signs the rewritten log
    assert verify(rewritten, resigned)["ok"]  # on its own the new checkpoint cannot tell
    first = problem(verify(rewritten, resigned, old))
    assert "older checkpoint's root" in first["reason"] and first["leaf_index"] == 7
    hashes = leaves(rewritten)
    proof = {"from": 8, "to": 12, "checkpoint": resigned, "consistency_path": _consistency(hashes, 8)}
    assert "consistency path" in problem(offline.verify_proof(json.dumps(proof), VKEY, old))["reason"]


def test_purged_record_keeps_the_tree_but_not_a_forged_hash() -> None:
    lines = build(9, purged=[2, 3])
    assert verify(lines, checkpoint_of(build(9)))["ok"]
    at = _records_at(lines)[2]
    lines[at] = {**lines[at], "leaf_hash": _b64(merkle.leaf_hash(b"other"))}
    assert "root" in problem(verify(lines, checkpoint_of(build(9))))["reason"]


def test_part_must_hash_to_its_digest() -> None:
    lines = build(4)
    lines[0] = {**lines[0], "stored": _b64(b"params tampered")}
    assert "does not hash to its digest" in problem(verify(lines, checkpoint_of(build(4))))["reason"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"error": {"status": 500, "title": "stream failed"}}', "ended with an error"),
        (b'{"something": 1}', "neither a record"),
        (b'{"leaf_index": 3, "leaf_hash": "AAAA", "purged": true}', "leaf_hash is 3 bytes, not 32"),
        (
            b'{"leaf_index": "3", "leaf_hash": "' + _b64(bytes(32)).encode() + b'", "purged": true}',
            "leaf_index",
        ),
        (b'{"leaf_index": 3, "leaf_hash": "' + _b64(bytes(32)).encode() + b'", "stored": "%%"}', "not valid"),
        (b'{"part": "00", "stored": "AA=="}', "does not hash to its digest"),
    ],
)
def test_bad_lines_are_problems_not_exceptions(line: bytes, reason: str) -> None:
    lines = [json.dumps(x).encode() for x in build(3)] + [line]
    report = offline.verify_export(lines, checkpoint_of(build(3)), VKEY)
    assert report["ok"] is False and reason in report["first_problem"]["reason"]
    assert report["first_problem"]["line"] == len(lines)


def test_unsequenced_records_and_a_longer_export_are_fine() -> None:
    lines = build(5)
    extra = {**_record(0, b'{"late": true}'), "leaf_index": None}
    assert verify([*lines, extra], checkpoint_of(lines, 4))["unsequenced"] == 1


def test_wrong_key_and_note_signed_by_another_key() -> None:
    lines = build(4)
    other_skey, other_vkey = note.generate(ORIGIN)
    assert (
        "no signature by a known key"
        in problem(verify(lines, checkpoint_of(lines), key=other_vkey))["reason"]
    )
    forged = checkpoint_of(lines, signer=note.Signer.from_key(other_skey))
    assert "no signature by a known key" in problem(verify(lines, forged))["reason"]
    assert "verifier key" in problem(verify(lines, checkpoint_of(lines), key="nonsense"))["reason"]
    assert "older checkpoint" in problem(verify(lines, checkpoint_of(lines), forged))["reason"]


# Proofs


class Store:
    def __init__(self, hashes: Sequence[bytes]) -> None:
        self.stored: list[bytes] = []
        for i, leaf in enumerate(hashes):
            self.stored += merkle.stored_hashes_for_leaf(i, leaf, self.read)

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        return [self.stored[i] for i in indexes]


def _consistency(hashes: list[bytes], old: int) -> list[str]:
    return [_b64(h) for h in merkle.prove_consistency(old, len(hashes), Store(hashes).read)]


def _inclusion(lines: list[dict[str, Any]], index: int) -> dict[str, Any]:
    hashes = leaves(lines)
    path = merkle.prove_inclusion(index, len(hashes), Store(hashes).read)
    return {
        "leaf_index": index,
        "tree_size": len(hashes),
        "leaf_hash": _b64(hashes[index]),
        "inclusion_path": [_b64(h) for h in path],
        "checkpoint": checkpoint_of(lines),
    }


def test_inclusion_proofs() -> None:
    lines = build(11)
    for index in range(11):
        proof = _inclusion(lines, index)
        assert offline.verify_proof(json.dumps(proof), VKEY)["ok"]
        other = {**proof, "leaf_hash": _b64(leaves(lines)[(index + 1) % 11])}
        assert "does not lead" in problem(offline.verify_proof(json.dumps(other), VKEY))["reason"]
    proof = _inclusion(lines, 4)
    short = {**proof, "inclusion_path": [proof["inclusion_path"][0][:-4] + "AA=="]}
    assert "is 31 bytes, not 32" in problem(offline.verify_proof(json.dumps(short), VKEY))["reason"]
    long_leaf = {**proof, "leaf_hash": _b64(bytes(33))}
    assert "leaf_hash is 33 bytes" in problem(offline.verify_proof(json.dumps(long_leaf), VKEY))["reason"]
    bigger = {**proof, "tree_size": 12}
    assert "not the checkpoint's size" in problem(offline.verify_proof(json.dumps(bigger), VKEY))["reason"]


def test_consistency_proofs() -> None:
    lines = build(13)
    hashes, new = leaves(lines), checkpoint_of(lines)
    for old_size in range(1, 14):
        proof = {
            "from": old_size,
            "to": 13,
            "consistency_path": _consistency(hashes, old_size),
            "checkpoint": new,
        }
        old = checkpoint_of(lines, old_size)
        assert offline.verify_proof(json.dumps(proof), VKEY, old)["ok"], old_size
    proof = {"from": 5, "to": 13, "consistency_path": _consistency(hashes, 5), "checkpoint": new}
    assert "needs the older checkpoint" in problem(offline.verify_proof(json.dumps(proof), VKEY))["reason"]
    assert (
        "not the older checkpoint's size"
        in problem(offline.verify_proof(json.dumps(proof), VKEY, checkpoint_of(lines, 6)))["reason"]
    )
    from_zero = {"from": 0, "to": 13, "consistency_path": [], "checkpoint": new}
    empty = checkpoint_of(lines, 0)
    assert "from size 0" in problem(offline.verify_proof(json.dumps(from_zero), VKEY, empty))["reason"]
    bad_len = {**proof, "consistency_path": [*proof["consistency_path"][:-1], _b64(bytes(16))]}
    old5 = checkpoint_of(lines, 5)
    assert "16 bytes, not 32" in problem(offline.verify_proof(json.dumps(bad_len), VKEY, old5))["reason"]
    assert "not JSON" in problem(offline.verify_proof(b"{", VKEY))["reason"]


# The command line and a clean environment


def _files(tmp: Path, lines: list[dict[str, Any]], cp: str, old: str | None = None) -> list[str]:
    (tmp / "export.jsonl").write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    (tmp / "cp.txt").write_text(cp)
    (tmp / "key.txt").write_text(VKEY + "\n")
    args = ["export", str(tmp / "export.jsonl"), "--checkpoint", str(tmp / "cp.txt")]
    if old is not None:
        (tmp / "old.txt").write_text(old)
        args += ["--old-checkpoint", str(tmp / "old.txt")]
    return args


def _run(
    python: str, args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [python, "-m", "candor_verify", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}


def test_command_line_exit_codes(tmp_path: Path) -> None:
    lines = build(6)
    args = _files(tmp_path, lines, checkpoint_of(lines), checkpoint_of(lines, 3))
    code, report = _run(sys.executable, [*args, "--key", str(tmp_path / "key.txt")], ROOT)
    assert code == 0 and report["ok"] and report["leaves"] == 6
    code, report = _run(sys.executable, [*args, "--key", VKEY], ROOT)
    assert code == 0 and report["ok"]
    (tmp_path / "export.jsonl").write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines[:-1]))
    code, report = _run(sys.executable, [*args, "--key", VKEY], ROOT)
    assert code == 1 and "fewer than" in report["first_problem"]["reason"]
    code, report = _run(
        sys.executable, [*args, "--key", VKEY, "--checkpoint", str(tmp_path / "absent")], ROOT
    )
    assert code == 1 and "cannot read the checkpoint" in report["first_problem"]["reason"]
    code, _ = _run(sys.executable, ["export", str(tmp_path / "export.jsonl")], ROOT)
    assert code == 2
    (tmp_path / "proof.json").write_text(json.dumps(_inclusion(lines, 2)))
    code, report = _run(sys.executable, ["proof", str(tmp_path / "proof.json"), "--key", VKEY], ROOT)
    assert code == 0 and report["kind"] == "inclusion"


def test_clean_venv_with_only_cryptography(tmp_path: Path) -> None:
    """A venv without site-packages, cryptography from the local wheelhouse, only candor_verify/ copied."""
    if not any(WHEELHOUSE.glob("cryptography-*.whl")):
        pytest.fail(
            f"no cryptography wheel in {WHEELHOUSE}: run `make venv` (it downloads the wheelhouse: "
            "pip download --only-binary=:all: -d .cache/wheels cryptography==51.0.1 cffi==2.1.1 "
            "pycparser==3.12)"
        )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True, timeout=300)
    python = str(tmp_path / "venv" / "bin" / "python")
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index"]
    subprocess.run([*pip, "--find-links", str(WHEELHOUSE), "cryptography"], check=True, timeout=300)
    print(f"clean venv + cryptography install: {time.perf_counter() - start:.1f} s")
    app = tmp_path / "auditor"
    shutil.copytree(
        ROOT / "candor_verify", app / "candor_verify", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    lines = build(20, purged=[4])
    args = [*_files(tmp_path, lines, checkpoint_of(lines), checkpoint_of(lines, 9)), "--key", VKEY]
    code, report = _run(python, args, app, env)
    assert code == 0 and report["ok"] and report["leaves"] == 20, report
    tampered = [dict(x) for x in lines]
    k = _records_at(tampered)[7]
    tampered[k]["stored"] = _b64(base64.b64decode(tampered[k]["stored"]) + b" ")
    args = [*_files(tmp_path, tampered, checkpoint_of(lines)), "--key", VKEY]
    code, report = _run(python, args, app, env)
    assert code == 1 and report["first_problem"]["leaf_index"] == 7, report
    probe = "import json, sys, candor_verify.offline; "
    probe += "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([python, "-c", probe], cwd=app, env=env, capture_output=True, text=True, check=True)
    # cryptography's native modules, and the venv's own setuptools hook (a .pth file every venv has).
    extra = {"candor_verify", "cryptography", "_cffi_backend", "_openssl", "_distutils_hack"}
    allowed = {*sys.stdlib_module_names, "__main__", *extra}
    assert set(json.loads(done.stdout)) - allowed == set()


def test_unreadable_inputs_are_problems(tmp_path: Path) -> None:
    lines = build(3)
    (tmp_path / "cp").write_text(checkpoint_of(lines))
    report = offline.check_export_file(tmp_path, tmp_path / "cp", VKEY)  # a directory, not an export
    assert report["ok"] is False and "cannot read the export" in report["first_problem"]["reason"]
    (tmp_path / "export.jsonl").write_bytes(b"")
    report = offline.check_export_file(tmp_path / "export.jsonl", tmp_path / "cp", "x" * 5000)
    assert report["ok"] is False and "verifier key" in report["first_problem"]["reason"]
    report = offline.check_proof_file(tmp_path / "absent.json", VKEY)
    assert report["ok"] is False and "cannot read the proof" in report["first_problem"]["reason"]


def test_blank_lines_count_and_an_empty_tree_root_is_checked() -> None:
    lines = [json.dumps(x).encode() for x in build(2)]
    cp = checkpoint_of(build(2))
    report = offline.verify_export([lines[0], b"\n", lines[1], b"oops\n"], cp, VKEY)
    assert report["first_problem"]["line"] == 4
    empty_wrong = signed(Checkpoint(ORIGIN, 0, merkle.leaf_hash(b"")), SIGNER)
    first = problem(offline.verify_export(lines, empty_wrong, VKEY))
    assert first["leaf_index"] is None and "first 0 leaves" in first["reason"]
