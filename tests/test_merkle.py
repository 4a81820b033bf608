"""The Merkle tree module against transparency-dev/merkle's published vectors, its own recomputation from the
leaves, and proofs it produces; and the cost of a proof in stored-hash reads."""

from __future__ import annotations

import base64
import json
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from candor_verify import merkle

VECTORS = Path(__file__).parent / "data" / "merkle-vectors"


class Store:
    """A log's stored hashes in a list, counting the hashes proofs read."""

    def __init__(self) -> None:
        self.hashes: list[bytes] = []
        self.size = 0
        self.reads = 0

    def read(self, indexes: Sequence[int]) -> list[bytes]:
        self.reads += len(indexes)
        return [self.hashes[i] for i in indexes]

    def append(self, leaf: bytes) -> None:
        assert len(self.hashes) == merkle.stored_hash_index(0, self.size)
        self.hashes.extend(merkle.stored_hashes_for_leaf(self.size, leaf, self.read))
        self.size += 1
        assert len(self.hashes) == merkle.stored_hash_count(self.size)


def _store(leaves: Sequence[bytes]) -> Store:
    store = Store()
    for leaf in leaves:
        store.append(leaf)
    store.reads = 0
    return store


def _random_leaves(n: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    return [merkle.leaf_hash(rng.randbytes(rng.randrange(40))) for _ in range(n)]


def _constants() -> tuple[list[bytes], list[bytes]]:
    """The leaf inputs and the roots for sizes 1-8 from testonly/constants.go."""
    text = (VECTORS / "testonly" / "constants.go").read_text()

    def hexes(func: str) -> list[bytes]:
        body = text.split(f"func {func}()")[1].split("\n}\n")[0]
        return [bytes.fromhex(h) for h in re.findall(r'hd\("([0-9a-f]*)"\)', body)]

    return hexes("LeafInputs"), hexes("RootHashes")


def _cases(kind: str) -> list[tuple[str, dict]]:
    files = sorted((VECTORS / "testdata" / kind).rglob("*.json"))
    return [(str(f.relative_to(VECTORS / "testdata")), json.loads(f.read_text())) for f in files]


def _b64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


def test_hashes_and_empty_root() -> None:
    empty = (VECTORS / "testonly" / "constants.go").read_text().split("func EmptyRootHash()")[1]
    assert merkle.EMPTY_ROOT.hex() in empty
    assert merkle.root([]) == merkle.EMPTY_ROOT
    assert merkle.tree_root(0, Store().read) == merkle.EMPTY_ROOT


def test_roots_of_the_published_leaves() -> None:
    inputs, roots = _constants()
    assert len(inputs) == 8 and len(roots) == 8
    leaves = [merkle.leaf_hash(d) for d in inputs]
    store = _store(leaves)
    for size, expected in enumerate(roots, start=1):
        assert merkle.root(leaves[:size]) == expected
        assert merkle.tree_root(size, store.read) == expected


INCLUSION = _cases("inclusion")
CONSISTENCY = _cases("consistency")
# Stricter than the vectors on purpose: this file's roots are 12-byte placeholders, and this module refuses
# any hash that is not 32 bytes (issue 20: "hashes of the wrong length are refused"), even at equal sizes.
WRONG_LENGTH_BUT_EXPECTED_OK = {"consistency/additional/sizes-are-equal-one-and-proof-is-empty.json"}


@pytest.mark.parametrize(("name", "case"), INCLUSION, ids=[n for n, _ in INCLUSION])
def test_inclusion_vectors(name: str, case: dict) -> None:
    proof = [_b64(p) for p in case["proof"] or []]
    ok = merkle.verify_inclusion(
        case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"])
    )
    assert ok is (not case["wantErr"])


@pytest.mark.parametrize(("name", "case"), CONSISTENCY, ids=[n for n, _ in CONSISTENCY])
def test_consistency_vectors(name: str, case: dict) -> None:
    proof = [_b64(p) for p in case["proof"] or []]
    ok = merkle.verify_consistency(
        case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), proof
    )
    if name in WRONG_LENGTH_BUT_EXPECTED_OK:
        assert not case["wantErr"] and len(_b64(case["root1"])) != merkle.HASH_SIZE
        assert ok is False
        same = merkle.leaf_hash(_b64(case["root1"]))  # the same case with a real hash is accepted
        assert merkle.verify_consistency(case["size1"], case["size2"], same, same, proof)
    else:
        assert ok is (not case["wantErr"])


def test_vector_counts() -> None:
    assert len(INCLUSION) == 98 and len(CONSISTENCY) == 98
    assert sum(not c["wantErr"] for _, c in INCLUSION) >= 6
    assert sum(not c["wantErr"] for _, c in CONSISTENCY) >= 6


def test_stored_hash_index_round_trips() -> None:
    for index in range(5000):
        level, n = merkle.split_stored_hash_index(index)
        assert merkle.stored_hash_index(level, n) == index
    assert [merkle.stored_hash_count(n) for n in range(9)] == [0, 1, 3, 4, 7, 8, 10, 11, 15]


def test_stored_roots_equal_the_recomputed_roots() -> None:
    leaves = _random_leaves(300)
    store = Store()
    for size in range(1, 301):
        store.append(leaves[size - 1])
        assert merkle.tree_root(size, store.read) == merkle.root(leaves[:size])
    for size in range(0, 301, 7):  # an older size from the grown store
        assert merkle.tree_root(size, store.read) == merkle.root(leaves[:size])


def test_produced_inclusion_proofs_verify() -> None:
    leaves = _random_leaves(260, seed=1)
    store = _store(leaves)
    roots = [merkle.root(leaves[:n]) for n in range(261)]
    for size in range(1, 261):
        for index in {0, size - 1, size // 2, *random.Random(size).sample(range(size), min(size, 6))}:
            proof = merkle.prove_inclusion(index, size, store.read)
            assert merkle.verify_inclusion(index, size, leaves[index], proof, roots[size])
            if size > 1:
                assert not merkle.verify_inclusion(index, size, leaves[index], proof, roots[size - 1])


def test_produced_consistency_proofs_verify() -> None:
    leaves = _random_leaves(260, seed=2)
    store = _store(leaves)
    roots = [merkle.root(leaves[:n]) for n in range(261)]
    rng = random.Random(3)
    pairs = [(m, n) for n in range(1, 40) for m in range(1, n + 1)]
    pairs += [(m, n) for n in rng.sample(range(1, 261), 60) for m in {1, n, *rng.sample(range(1, n + 1), 1)}]
    for old, new in pairs:
        proof = merkle.prove_consistency(old, new, store.read)
        assert merkle.verify_consistency(old, new, roots[old], roots[new], proof), (old, new)
        if old < new:
            assert not merkle.verify_consistency(old, new, roots[old], roots[new - 1], proof)


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def test_a_flipped_bit_is_refused() -> None:
    leaves = _random_leaves(37, seed=4)
    store = _store(leaves)
    rng = random.Random(5)
    for size, index, old in [(37, 0, 1), (37, 36, 36), (37, 17, 16), (32, 5, 13), (33, 32, 32)]:
        r, r_old = merkle.root(leaves[:size]), merkle.root(leaves[:old])
        inc = merkle.prove_inclusion(index, size, store.read)
        con = merkle.prove_consistency(old, size, store.read)
        bit = rng.randrange(256)
        assert not merkle.verify_inclusion(index, size, _flip(leaves[index], bit), inc, r)
        assert not merkle.verify_inclusion(index, size, leaves[index], inc, _flip(r, bit))
        assert not merkle.verify_consistency(old, size, _flip(r_old, bit), r, con)
        assert not merkle.verify_consistency(old, size, r_old, _flip(r, bit), con)
        for i in range(len(inc)):
            bad = [*inc[:i], _flip(inc[i], rng.randrange(256)), *inc[i + 1 :]]
            assert not merkle.verify_inclusion(index, size, leaves[index], bad, r)
        for i in range(len(con)):
            bad = [*con[:i], _flip(con[i], rng.randrange(256)), *con[i + 1 :]]
            assert not merkle.verify_consistency(old, size, r_old, r, bad)


def test_refusals() -> None:
    leaves = _random_leaves(8, seed=6)
    store = _store(leaves)
    r = merkle.root(leaves)
    proof = merkle.prove_inclusion(3, 8, store.read)
    assert merkle.verify_inclusion(3, 8, leaves[3], proof, r)
    assert not merkle.verify_inclusion(8, 8, leaves[3], proof, r)
    assert not merkle.verify_inclusion(-1, 8, leaves[3], proof, r)
    assert not merkle.verify_inclusion(3, 8, leaves[3][:31], proof, r)
    assert not merkle.verify_inclusion(3, 8, leaves[3], proof, r + b"\x00")
    assert not merkle.verify_inclusion(3, 8, leaves[3], [*proof[:-1], proof[-1][:16]], r)
    assert not merkle.verify_consistency(0, 8, merkle.EMPTY_ROOT, r, [])
    assert not merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert not merkle.verify_consistency(8, 4, r, merkle.root(leaves[:4]), [])
    assert merkle.verify_consistency(8, 8, r, r, [])
    assert not merkle.verify_consistency(8, 8, r[:31], r[:31], [])
    for bad in [(0, 8), (9, 8), (-1, 8)]:
        with pytest.raises(ValueError):
            merkle.prove_consistency(*bad, store.read)
    for bad in [(8, 8), (-1, 8), (0, 0)]:
        with pytest.raises(ValueError):
            merkle.prove_inclusion(*bad, store.read)
    with pytest.raises(ValueError):
        merkle.stored_hashes_for_leaf(3, leaves[3], lambda indexes: [])


@pytest.mark.parametrize("size", [0, 1, 2, 3, 7, 8, 9, 100, 127, 128, 1000])
def test_a_batch_of_leaves_stores_what_appending_them_one_by_one_stores(size: int) -> None:
    leaves = _random_leaves(size + 300, seed=size)
    one_by_one = _store(leaves)
    before = _store(leaves[:size])
    batch = merkle.stored_hashes_for_leaves(size, leaves[size:], before.read)
    assert before.reads <= size.bit_length(), "the tree before is read once: its complete subtrees"
    assert before.hashes + batch == one_by_one.hashes
    assert merkle.stored_hashes_for_leaves(size, [], before.read) == []
    with pytest.raises(ValueError):
        merkle.stored_hashes_for_leaves(-1, leaves, before.read)
    if size:
        with pytest.raises(ValueError):
            merkle.stored_hashes_for_leaves(size, leaves[size:], lambda indexes: [])


def test_proofs_read_logarithmically_many_hashes() -> None:
    n = 100_000
    store = Store()
    for i in range(n):
        store.append(merkle.leaf_hash(i.to_bytes(4, "big")))
    leaves_read = store.reads
    assert leaves_read <= n  # amortised O(1) per append: n - popcount(n) sibling reads in all
    assert len(store.hashes) == merkle.stored_hash_count(n)
    costs = []
    for size, index, old in [(n, 0, 1), (n, n - 1, n - 1), (n, 54_321, 65_537), (99_999, 12_345, 31)]:
        for call in (
            lambda: merkle.tree_root(size, store.read),
            lambda: merkle.prove_inclusion(index, size, store.read),
            lambda: merkle.prove_consistency(old, size, store.read),
        ):
            store.reads = 0
            call()
            costs.append(store.reads)
    assert max(costs) <= 40, costs
    size, index = n, 54_321
    proof = merkle.prove_inclusion(index, size, store.read)
    assert merkle.verify_inclusion(
        index, size, merkle.leaf_hash(index.to_bytes(4, "big")), proof, merkle.tree_root(size, store.read)
    )


def test_needs_only_the_standard_library() -> None:
    """The offline verifier imports this module with the standard library and ``cryptography`` only."""
    root_dir = Path(__file__).parent.parent
    code = (
        f"import sys; sys.path.insert(0, {str(root_dir)!r}); import candor_verify.merkle as m; "
        "print(m.__file__); "
        "print(sorted({n.split('.')[0] for n in sys.modules} - {*sys.stdlib_module_names, '__main__'}))"
    )
    # -I -S: no site-packages at all, so only the standard library can be imported.
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    where, imported = out.stdout.splitlines()
    assert Path(where) == root_dir / "candor_verify" / "merkle.py"
    assert imported == "['candor_verify']"
