"""The audit log's checkpoint signing key on disk: created once (mode 0600, outside the database), read back.

The file holds the signer key string of ``candor_verify.note`` (Go's ``PRIVATE+KEY+<name>+...`` form); the
key's name is the log's origin, ``candor.local/audit/<8 random hex>`` unless ``candor audit init --origin``
says otherwise.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from candor_verify.note import NoteError, Signer, generate, load_signer


class AuditKeyError(Exception):
    """The key cannot be created or read; the message says why and what to do."""


def default_origin() -> str:
    """A fresh origin for a new log."""
    return f"candor.local/audit/{secrets.token_hex(4)}"


def create_key(path: Path, origin: str | None = None) -> Signer:
    """Write a new signing key to ``path`` (mode 0600; a parent directory it creates gets 0700).

    AuditKeyError when ``path`` already exists (a key is never overwritten) or the origin is not a valid
    key name.
    """
    origin = origin or default_origin()
    try:
        skey, _ = generate(origin)
    except NoteError:
        raise AuditKeyError(
            f"invalid origin {origin!r}: it must be non-empty, without spaces or '+'"
        ) from None
    parent = path.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700)
        os.chmod(parent, 0o700)  # mkdir's mode is masked by the umask
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise AuditKeyError(f"a signing key already exists at {path}; it is never overwritten") from None
    with os.fdopen(fd, "w", encoding="ascii") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(skey + "\n")
    return Signer.from_key(skey)


def read_key(path: Path) -> Signer:
    """The signing key at ``path``; AuditKeyError when there is none or it is malformed."""
    try:
        signer = load_signer(path)
    except (NoteError, OSError) as exc:
        raise AuditKeyError(str(exc)) from None
    if signer is None:
        raise AuditKeyError(f"no signing key at {path}: create one with `candor audit init`")
    return signer
