"""A Merkle tree as RFC 9162 section 2.1 defines it, stored the way Go's ``golang.org/x/mod/sumdb/tlog`` does.

Hashes: a leaf is SHA-256(0x00 || data), a node SHA-256(0x01 || left || right), the empty tree SHA-256(b"").

Storage: a log keeps the hash of every complete subtree, numbered in the order an append writes them
(``stored_hash_index``), so an append writes O(1) hashes amortised and a root or proof reads O(log n) of
them through a ``read(indexes) -> hashes`` callback (tlog's ``HashReader``).

Proofs are RFC 9162's inclusion (2.1.3) and consistency (2.1.4) proofs. ``prove_*`` raise ``ValueError``
for impossible sizes; ``verify_*`` never raise: they return False for anything they cannot accept,
including hashes that are not 32 bytes, an index outside the tree, a consistency proof from size 0 and an
old size above the new one.

Standard library only: the offline verifier imports this module.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "HashReader",
    "RootBuilder",
    "leaf_hash",
    "node_hash",
    "prove_consistency",
    "prove_inclusion",
    "root",
    "split_stored_hash_index",
    "stored_hash_count",
    "stored_hash_index",
    "stored_hashes_for_leaf",
    "stored_hashes_for_leaves",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

HashReader = Callable[[Sequence[int]], Sequence[bytes]]
"""Returns the stored hashes at the given indexes, in the order asked."""


def leaf_hash(data: bytes) -> bytes:
    """The hash of a leaf holding ``data``."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node over two child hashes."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """RFC 9162's MTH over the given leaf hashes, computed from the leaves."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = _split(n)
    return node_hash(root(leaf_hashes[:k]), root(leaf_hashes[k:]))


class RootBuilder:
    """The root of leaves given one at a time: the hashes of the complete subtrees seen so far, a stack as
    the binary digits of the count (memory O(log n), each leaf hashed into it once)."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []

    def append(self, leaf: bytes) -> None:
        node, n = leaf, self.size
        while n & 1:
            node = node_hash(self._stack.pop(), node)
            n >>= 1
        self._stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        """``root`` of the leaves appended so far."""
        if not self._stack:
            return EMPTY_ROOT
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node


# Stored hashes (tlog's numbering).


def stored_hash_index(level: int, n: int) -> int:
    """Where the hash of the ``n``-th subtree of height ``level`` is stored (tlog's StoredHashIndex)."""
    for _ in range(level):
        n = 2 * n + 1
    index = 0
    while n > 0:
        index += n
        n >>= 1
    return index + level


def _trailing_zeros(x: int) -> int:
    return (x & -x).bit_length() - 1


def split_stored_hash_index(index: int) -> tuple[int, int]:
    """The ``(level, n)`` whose hash is stored at ``index``: the inverse of ``stored_hash_index``."""
    n = index // 2
    index_n = stored_hash_index(0, n)
    while True:
        x = index_n + 1 + _trailing_zeros(n + 1)
        if x > index:
            break
        n += 1
        index_n = x
    level = index - index_n
    return level, n >> level


def stored_hash_count(size: int) -> int:
    """How many hashes a tree of ``size`` leaves stores (tlog's StoredHashCount)."""
    if size == 0:
        return 0
    count = stored_hash_index(0, size - 1) + 1
    i = size - 1
    while i & 1:
        count += 1
        i >>= 1
    return count


def stored_hashes_for_leaf(index: int, leaf: bytes, read: HashReader) -> list[bytes]:
    """The hashes to store when leaf ``index`` (hash ``leaf``) is appended, in index order from
    ``stored_hash_index(0, index)``; ``read`` gives the earlier ones it needs
    (tlog's StoredHashesForRecordHash).
    """
    levels = _trailing_zeros(index + 1)  # the complete subtrees this leaf closes
    indexes = [stored_hash_index(i, (index >> i) - 1) for i in reversed(range(levels))]
    siblings = _read(read, indexes)
    hashes = [leaf]
    h = leaf
    for i in range(levels):
        h = node_hash(siblings[levels - 1 - i], h)
        hashes.append(h)
    return hashes


def stored_hashes_for_leaves(size: int, leaves: Sequence[bytes], read: HashReader) -> list[bytes]:
    """What ``stored_hashes_for_leaf`` stores for each of ``leaves`` appended in turn to a tree of ``size``
    leaves, all in one list: the tree's complete subtrees are read once (O(log n)), then each leaf closes
    subtrees from them and from the hashes made before it."""
    if size < 0:
        raise ValueError(f"a tree cannot have {size} leaves")
    frontier, start = [], 0  # the complete subtrees' stored indexes, highest first
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            frontier.append(stored_hash_index(level, start >> level))
            start += 1 << level
    stack = _read(read, frontier)
    hashes: list[bytes] = []
    for index, leaf in enumerate(leaves, start=size):
        hashes.append(leaf)
        h = leaf
        for _ in range(_trailing_zeros(index + 1)):
            h = node_hash(stack.pop(), h)
            hashes.append(h)
        stack.append(h)
    return hashes


def _read(read: HashReader, indexes: list[int]) -> list[bytes]:
    if not indexes:
        return []
    hashes = list(read(indexes))
    if len(hashes) != len(indexes):
        raise ValueError(f"the hash reader returned {len(hashes)} hashes for {len(indexes)} indexes")
    return hashes


def _subtree_indexes(lo: int, hi: int, need: list[int]) -> None:
    """Append the stored indexes of the complete subtrees covering leaves [lo, hi), left to right."""
    while lo < hi:
        k = _split(hi - lo + 1)
        need.append(stored_hash_index(k.bit_length() - 1, lo // k))
        lo += k


def _subtree_hash(lo: int, hi: int, hashes: list[bytes]) -> bytes:
    """Combine (consuming them from ``hashes``) the subtree hashes ``_subtree_indexes`` asked for."""
    count = 0
    while lo < hi:
        lo += _split(hi - lo + 1)
        count += 1
    parts = hashes[:count]
    del hashes[:count]
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def tree_root(size: int, read: HashReader) -> bytes:
    """The root of the first ``size`` leaves, from O(log size) stored hashes (tlog's TreeHash)."""
    if size < 0:
        raise ValueError("a tree size cannot be negative")
    if size == 0:
        return EMPTY_ROOT
    need: list[int] = []
    _subtree_indexes(0, size, need)
    return _subtree_hash(0, size, _read(read, need))


# Inclusion proofs (RFC 9162 2.1.3; tlog's ProveRecord).


def _inclusion_indexes(lo: int, hi: int, index: int, need: list[int]) -> None:
    if lo + 1 == hi:
        return
    k = _split(hi - lo)
    if index < lo + k:
        _inclusion_indexes(lo, lo + k, index, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _inclusion_indexes(lo + k, hi, index, need)


def _inclusion_path(lo: int, hi: int, index: int, hashes: list[bytes]) -> list[bytes]:
    if lo + 1 == hi:
        return []
    k = _split(hi - lo)
    if index < lo + k:
        path = _inclusion_path(lo, lo + k, index, hashes)
        path.append(_subtree_hash(lo + k, hi, hashes))
    else:
        sibling = _subtree_hash(lo, lo + k, hashes)
        path = _inclusion_path(lo + k, hi, index, hashes)
        path.append(sibling)
    return path


def prove_inclusion(index: int, size: int, read: HashReader) -> list[bytes]:
    """The inclusion path of leaf ``index`` in the tree of ``size`` leaves.

    ValueError unless 0 <= index < size.
    """
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    need: list[int] = []
    _inclusion_indexes(0, size, index, need)
    return _inclusion_path(0, size, index, _read(read, need))


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes) -> bool:
    """Whether ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree of ``size`` leaves with
    ``root_hash`` (RFC 9162 2.1.3.2). False for an index outside the tree or any hash that is not 32 bytes.
    """
    if not 0 <= index < size or not _hashes_ok(leaf, root_hash, *proof):
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root_hash


# Consistency proofs (RFC 9162 2.1.4; tlog's ProveTree).


def _consistency_indexes(lo: int, hi: int, old: int, need: list[int]) -> None:
    if old == hi:
        if lo != 0:
            _subtree_indexes(lo, hi, need)
        return
    k = _split(hi - lo)
    if old <= lo + k:
        _consistency_indexes(lo, lo + k, old, need)
        _subtree_indexes(lo + k, hi, need)
    else:
        _subtree_indexes(lo, lo + k, need)
        _consistency_indexes(lo + k, hi, old, need)


def _consistency_path(lo: int, hi: int, old: int, hashes: list[bytes]) -> list[bytes]:
    if old == hi:
        return [] if lo == 0 else [_subtree_hash(lo, hi, hashes)]
    k = _split(hi - lo)
    if old <= lo + k:
        path = _consistency_path(lo, lo + k, old, hashes)
        path.append(_subtree_hash(lo + k, hi, hashes))
    else:
        sibling = _subtree_hash(lo, lo + k, hashes)
        path = _consistency_path(lo + k, hi, old, hashes)
        path.append(sibling)
    return path


def prove_consistency(old_size: int, new_size: int, read: HashReader) -> list[bytes]:
    """The consistency path from the tree of ``old_size`` leaves to the one of ``new_size``;
    ValueError unless 1 <= old_size <= new_size.
    """
    if not 1 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    need: list[int] = []
    _consistency_indexes(0, new_size, old_size, need)
    return _consistency_path(0, new_size, old_size, _read(read, need))


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """Whether ``proof`` shows the tree (``old_size``, ``old_root``) is a prefix of
    (``new_size``, ``new_root``) (RFC 9162 2.1.4.2). False from size 0, for old_size > new_size, or any
    hash that is not 32 bytes; equal sizes need an empty proof and equal roots.
    """
    if not 1 <= old_size <= new_size or not _hashes_ok(old_root, new_root, *proof):
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root
