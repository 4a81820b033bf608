"""C2SP signed notes with Ed25519 keys: the format of Go's ``golang.org/x/mod/sumdb/note``.

A note is a text (UTF-8, no control characters but newline, ending in a newline), a blank line, then one
line per signature: ``\u2014 <name> <base64(key id (4 bytes, big-endian) || signature)>``. A key id is the
first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key). Key strings:
verifier ``<name>+<key id hex>+<base64(0x01 || public key)>``,
signer ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || private seed)>``.

``open_note`` accepts a note when at least one signature is by a known key and every signature by a known
key verifies; signatures by other keys are ignored (as Go's ``note.Open`` does). Everything it refuses is a
``NoteError`` saying why.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = ["NoteError", "Signer", "Verifier", "generate", "load_signer", "open_note", "sign"]

ALG_ED25519 = 1
MAX_SIGNATURES = 100
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_SIG_PREFIX = "\u2014 "


class NoteError(ValueError):
    """A note, key or signature that cannot be accepted; the message says why."""


def _valid_name(name: str) -> bool:
    """Non-empty, no white space, no '+' (Go's isValidName)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None


def key_id(name: str, public_key: bytes) -> int:
    """The 4-byte id of an Ed25519 ``public_key`` (32 bytes) named ``name``, as an int."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _parse_key_parts(name: str, hex_id: str, b64: str, what: str) -> tuple[int, bytes]:
    """The key id and 32 key bytes of a key string's last three fields, or NoteError."""
    raw = _b64decode(b64)
    if not _valid_name(name) or not _HEX8.fullmatch(hex_id) or not raw:
        raise NoteError(f"malformed {what} key")
    if raw[0] != ALG_ED25519:
        raise NoteError(f"unknown {what} key algorithm {raw[0]} (only 1, Ed25519, is supported)")
    if len(raw) != 33:
        raise NoteError(f"malformed {what} key: an Ed25519 key is 32 bytes, not {len(raw) - 1}")
    return int(hex_id, 16), raw[1:]


class Verifier:
    """Checks signatures by one named Ed25519 key."""

    def __init__(self, name: str, public_key: bytes) -> None:
        if not _valid_name(name) or len(public_key) != 32:
            raise NoteError("a verifier needs a valid name and a 32-byte Ed25519 public key")
        self.name = name
        self.key_id = key_id(name, public_key)
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self.public_key = public_key

    @classmethod
    def from_key(cls, vkey: str) -> Verifier:
        """Parse a verifier key string ``<name>+<key id hex>+<base64(0x01 || public key)>``."""
        fields = vkey.strip().split("+", 2)
        if len(fields) != 3:
            raise NoteError("malformed verifier key: expected <name>+<key id>+<key>")
        kid, public = _parse_key_parts(fields[0], fields[1], fields[2], "verifier")
        verifier = cls(fields[0], public)
        if verifier.key_id != kid:
            raise NoteError("invalid verifier key: its key id does not match its name and key")
        return verifier

    def key(self) -> str:
        """This verifier's key string."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{encoded}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        try:
            self._key.verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Signer:
    """Signs with one named Ed25519 key."""

    def __init__(self, name: str, seed: bytes) -> None:
        if not _valid_name(name) or len(seed) != 32:
            raise NoteError("a signer needs a valid name and a 32-byte Ed25519 seed")
        self.name = name
        self._seed = seed
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.verifier = Verifier(name, _raw_public(self._key.public_key()))
        self.key_id = self.verifier.key_id

    @classmethod
    def from_key(cls, skey: str) -> Signer:
        """Parse a signer key string ``PRIVATE+KEY+<name>+<key id hex>+<base64(0x01 || seed)>``."""
        fields = skey.strip().split("+", 4)
        if len(fields) != 5 or fields[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed signer key: expected PRIVATE+KEY+<name>+<key id>+<key>")
        kid, seed = _parse_key_parts(fields[2], fields[3], fields[4], "signer")
        signer = cls(fields[2], seed)
        if signer.key_id != kid:
            raise NoteError("invalid signer key: its key id does not match its name and key")
        return signer

    def key(self) -> str:
        """This signer's (secret) key string."""
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{encoded}"

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)


def generate(name: str) -> tuple[str, str]:
    """A new key pair named ``name``: ``(signer key, verifier key)`` strings."""
    signer = Signer(name, Ed25519PrivateKey.generate().private_bytes_raw())
    return signer.key(), signer.verifier.key()


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("malformed note: the text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("malformed note: control characters other than newline are not allowed")


def sign(text: str, signer: Signer) -> str:
    """The note of ``text`` signed by ``signer``."""
    _check_text(text)
    signature = signer.sign(text.encode())
    b64 = base64.b64encode(signer.key_id.to_bytes(4, "big") + signature).decode()
    return f"{text}\n{_SIG_PREFIX}{signer.name} {b64}\n"


def _split(note: str | bytes) -> tuple[str, list[str]]:
    """The text and the signature lines of a note, or NoteError for a malformed one."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("malformed note: not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("malformed note: control characters other than newline are not allowed")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("malformed note: the signature lines must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return text, lines


def _parse_signature(line: str) -> tuple[str, int, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError("malformed note: a signature line must start with an em dash and a space")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    raw = _b64decode(b64)
    if not _valid_name(name) or not b64 or raw is None or len(raw) < 5:
        raise NoteError("malformed note: a signature line must be '\u2014 <name> <base64>'")
    return name, int.from_bytes(raw[:4], "big"), raw[4:]


def open_note(note: str | bytes, verifiers: Verifier | Iterable[Verifier]) -> str:
    """The text of ``note`` once a signature by one of ``verifiers`` checks; NoteError otherwise."""
    known = [verifiers] if isinstance(verifiers, Verifier) else list(verifiers)
    text, lines = _split(note)
    verified = False
    for line in lines:
        name, kid, signature = _parse_signature(line)
        matches = [v for v in known if v.name == name and v.key_id == kid]
        if len(matches) > 1:
            raise NoteError(f"ambiguous key {name}+{kid:08x}")
        if not matches:
            continue
        if not matches[0].verify(text.encode(), signature):
            raise NoteError(f"invalid signature for key {name}+{kid:08x}")
        verified = True
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in known) or "none given"
        raise NoteError(f"the note has no signature by a known key (known: {names})")
    return text


def load_signer(path: str | Path) -> Signer | None:
    """The signer whose key string is in the file at ``path``; None when there is no such file."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise NoteError(f"malformed signing key file {path}: {exc}") from None
    try:
        return Signer.from_key(text)
    except NoteError as exc:
        raise NoteError(f"malformed signing key file {path}: {exc}") from None
