"""C2SP tlog-checkpoints: a log's origin, tree size and root hash, as the text of a signed note.

Text: ``<origin>\\n<tree size in decimal>\\n<base64(32-byte root hash)>\\n``. Candor writes no extension
lines, and ``parse`` refuses them along with anything else that is not exactly this shape. The note is
signed by the log's key, whose name is the origin.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from candor_verify.merkle import HASH_SIZE
from candor_verify.note import NoteError, Signer, Verifier, open_note, sign

__all__ = ["Checkpoint", "CheckpointError", "open_checkpoint", "parse", "signed"]

_SIZE = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(NoteError):
    """A checkpoint text or note that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's state: the tree of ``size`` leaves with hash ``root``, in the log named ``origin``."""

    origin: str
    size: int
    root: bytes

    def text(self) -> str:
        """The checkpoint's note text."""
        if not self.origin or "\n" in self.origin or self.size < 0 or len(self.root) != HASH_SIZE:
            raise CheckpointError("a checkpoint needs an origin line, a size >= 0 and a 32-byte root")
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"

    def as_dict(self) -> dict[str, object]:
        """The checkpoint as JSON-ready values (root in base64)."""
        return {"origin": self.origin, "size": self.size, "root": base64.b64encode(self.root).decode()}


def parse(text: str) -> Checkpoint:
    """The checkpoint a note text holds; CheckpointError unless it is exactly origin, size and root."""
    if not text.endswith("\n"):
        raise CheckpointError("malformed checkpoint: the text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise CheckpointError(
            f"malformed checkpoint: expected 3 lines (origin, size, root), got {len(lines)}"
        )
    origin, size, root_b64 = lines
    if not origin:
        raise CheckpointError("malformed checkpoint: the origin line is empty")
    if not _SIZE.fullmatch(size):
        raise CheckpointError("malformed checkpoint: the size must be a decimal number without leading zeros")
    try:
        root = base64.b64decode(root_b64.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise CheckpointError("malformed checkpoint: the root is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_b64:
        raise CheckpointError(f"malformed checkpoint: the root must be the base64 of {HASH_SIZE} bytes")
    return Checkpoint(origin, int(size), root)


def signed(checkpoint: Checkpoint, signer: Signer) -> str:
    """The checkpoint as a note signed by ``signer`` (whose name should be the origin)."""
    return sign(checkpoint.text(), signer)


def open_checkpoint(note: str | bytes, verifier: Verifier) -> Checkpoint:
    """The checkpoint in ``note`` once ``verifier`` checks its signature and its origin is the key's name."""
    checkpoint = parse(open_note(note, verifier))
    if checkpoint.origin != verifier.name:
        raise CheckpointError(
            f"the checkpoint's origin {checkpoint.origin!r} is not the key's name {verifier.name!r}"
        )
    return checkpoint
