"""Signed notes and checkpoints against Go's published sumdb/note vectors, and what they must refuse."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from candor_verify import checkpoint, note
from candor_verify.checkpoint import Checkpoint, CheckpointError
from candor_verify.note import NoteError, Signer, Verifier

V = json.loads((Path(__file__).parent / "data" / "note-vectors" / "vectors.json").read_text(encoding="utf-8"))
PETER = Verifier.from_key(V["peter_verifier_key"])
ENOCH = Verifier.from_key(V["enoch_verifier_key"])
TEXT, PETER_SIG, ENOCH_SIG = V["text"], V["peter_signature_line"], V["enoch_signature_line"]


def test_go_signer_reproduces_go_signed_note_byte_for_byte() -> None:
    signer = Signer.from_key(V["peter_signer_key"])
    assert signer.verifier.key() == V["peter_verifier_key"]
    assert signer.key() == V["peter_signer_key"]
    assert note.sign(TEXT, signer) == V["signed_note"]
    assert note.open_note(V["signed_note"], PETER) == TEXT
    assert note.open_note(V["signed_note"].encode(), [ENOCH, PETER]) == TEXT


def test_key_id_is_the_documented_hash() -> None:
    raw = base64.b64decode(V["peter_verifier_key"].split("+")[2])
    digest = hashlib.sha256(b"PeterNeumann\n" + raw).digest()
    assert PETER.key_id == int.from_bytes(digest[:4], "big") == 0xC74F20A3


@pytest.mark.parametrize("name", ["peter_verifier_key", "peter_signer_key"])
def test_every_mangled_key_is_refused(name: str) -> None:
    """Go's TestNewVerifier/TestNewSigner: every proper substring and every one-byte change fails."""
    key = V[name]
    parse = Verifier.from_key if name.endswith("verifier_key") else Signer.from_key
    mangled = {key[i:j] for i in range(len(key) + 1) for j in range(i + 1, len(key) + 1)} - {key}
    mangled |= {key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :] for i in range(len(key))}
    for bad in sorted(mangled):
        with pytest.raises(NoteError):
            parse(bad)


@pytest.mark.parametrize("reason", sorted(V["bad_verifier_keys"]))
def test_go_bad_verifier_keys(reason: str) -> None:
    with pytest.raises(NoteError):
        Verifier.from_key(V["bad_verifier_keys"][reason])


def test_open_with_one_known_and_one_unknown_signature() -> None:
    assert note.open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, PETER) == TEXT
    assert note.open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [PETER, ENOCH]) == TEXT
    with pytest.raises(NoteError, match="no signature by a known key"):
        note.open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])


def test_open_refusals() -> None:
    with pytest.raises(NoteError, match="ambiguous key EnochRoot"):
        note.open_note(TEXT + "\n" + ENOCH_SIG, [ENOCH, PETER, ENOCH])
    with pytest.raises(NoteError, match="more than 100"):
        note.open_note(TEXT + "\n" + PETER_SIG * 101, PETER)
    corrupt = PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        note.open_note(TEXT + "\n" + corrupt, PETER)


@pytest.mark.parametrize(
    "msg",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name")[:-1],
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ],
)
def test_go_malformed_notes(msg: str) -> None:
    with pytest.raises(NoteError, match="malformed note"):
        note.open_note(msg, PETER)


def test_invalid_utf8_is_malformed() -> None:
    with pytest.raises(NoteError, match="not UTF-8"):
        note.open_note(b"\xff" + (TEXT + "\n" + PETER_SIG).encode(), PETER)


def test_tampered_text_and_another_key() -> None:
    tampered = V["signed_note"].replace("cryptography", "cryptographY")
    with pytest.raises(NoteError, match="invalid signature"):
        note.open_note(tampered, PETER)
    other_skey, _ = note.generate("PeterNeumann")  # same name, another key: a different key id
    with pytest.raises(NoteError, match="no signature by a known key"):
        note.open_note(note.sign(TEXT, Signer.from_key(other_skey)), PETER)


def test_sign_refuses_text_without_final_newline_or_with_controls() -> None:
    signer = Signer.from_key(V["peter_signer_key"])
    with pytest.raises(NoteError, match="end with a newline"):
        note.sign("abc", signer)
    with pytest.raises(NoteError, match="control"):
        note.sign("a\tb\n", signer)


def test_generate_round_trip() -> None:
    skey, vkey = note.generate("candor.local/audit/0123abcd")
    assert skey.startswith("PRIVATE+KEY+candor.local/audit/0123abcd+")
    signer, verifier = Signer.from_key(skey), Verifier.from_key(vkey)
    assert signer.verifier.key() == vkey
    assert note.open_note(note.sign("hello\n", signer), verifier) == "hello\n"


def test_load_signer(tmp_path: Path) -> None:
    assert note.load_signer(tmp_path / "absent.key") is None
    path = tmp_path / "signing.key"
    path.write_text(V["peter_signer_key"] + "\n")
    loaded = note.load_signer(path)
    assert loaded is not None and loaded.key() == V["peter_signer_key"]
    path.write_text("PRIVATE+KEY+nonsense\n")
    with pytest.raises(NoteError, match="malformed signing key file"):
        note.load_signer(path)


# Checkpoints


def _cp(size: int = 7) -> Checkpoint:
    return Checkpoint("example.com/log", size, hashlib.sha256(b"root").digest())


def test_checkpoint_text_and_parse_round_trip() -> None:
    cp = _cp()
    root_b64 = base64.b64encode(cp.root).decode()
    assert cp.text() == f"example.com/log\n7\n{root_b64}\n"
    assert checkpoint.parse(cp.text()) == cp
    empty = Checkpoint("o", 0, hashlib.sha256(b"").digest())
    assert checkpoint.parse(empty.text()) == empty


@pytest.mark.parametrize(
    "text",
    [
        "example.com/log\n07\n{root}\n",  # leading zero
        "example.com/log\n-1\n{root}\n",
        "example.com/log\n+7\n{root}\n",
        "example.com/log\n 7\n{root}\n",
        "example.com/log\n7\n{root}",  # no final newline
        "\n7\n{root}\n",  # empty origin
        "example.com/log\n7\n{root}\nextension\n",
        "example.com/log\n7\n" + base64.b64encode(b"x" * 31).decode() + "\n",  # 31-byte root
        "example.com/log\n7\n" + base64.b64encode(b"x" * 33).decode() + "\n",
        "example.com/log\n7\nnot base64!\n",
    ],
)
def test_checkpoint_parse_is_strict(text: str) -> None:
    with pytest.raises(CheckpointError):
        checkpoint.parse(text.replace("{root}", base64.b64encode(_cp().root).decode()))


def test_signed_checkpoint_opens_only_with_the_log_key() -> None:
    skey, vkey = note.generate("example.com/log")
    signer, verifier = Signer.from_key(skey), Verifier.from_key(vkey)
    signed = checkpoint.signed(_cp(), signer)
    assert checkpoint.open_checkpoint(signed, verifier) == _cp()
    _, other_vkey = note.generate("example.com/log")
    with pytest.raises(NoteError, match="no signature by a known key"):
        checkpoint.open_checkpoint(signed, Verifier.from_key(other_vkey))
    with pytest.raises(NoteError, match="invalid signature"):
        checkpoint.open_checkpoint(signed.replace("\n7\n", "\n8\n"), verifier)
    elsewhere = checkpoint.signed(Checkpoint("other.org/log", 7, _cp().root), signer)
    with pytest.raises(CheckpointError, match="origin"):
        checkpoint.open_checkpoint(elsewhere, verifier)
