"""Merkle Tree Hashes and proofs exactly as RFC 9162 §2.1 defines them; pure, no Django.

Leaves are ``SHA-256(0x00 || data)`` and nodes ``SHA-256(0x01 || left || right)`` (§2.1.1).
The tree over ``n`` leaves splits at ``k``, the largest power of two smaller than ``n``.
Inclusion proofs follow §2.1.3 (PATH), consistency proofs §2.1.4 (PROOF / SUBPROOF); the
verifiers are the algorithms of §2.1.3.2 and §2.1.4.2, step by step.

Proof generation reads the tree through a ``subtree(start, end)`` callable returning
``MTH(D[start:end])``, so a store can answer from saved perfect subtrees (see
:class:`MemoryTree` for the in-memory one and ``services/proofs.py`` for the database's).

This module is imported by the offline receipt verifier: it must never import Django.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

#: MTH({}) = SHA-256 of the empty string (RFC 9162 §2.1.1).
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify, or its arguments are impossible (index past the tree...)."""


def leaf_hash(data: bytes) -> bytes:
    """``SHA-256(0x00 || data)``: the hash of one leaf (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """``SHA-256(0x01 || left || right)``: the hash of an interior node (RFC 9162 §2.1.1)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (``n`` ≥ 2): where MTH splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaves whose hashes are ``hashes``, in order (RFC 9162 §2.1.1)."""
    if not hashes:
        return EMPTY_ROOT
    return _mth(hashes, 0, len(hashes))


def mth(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of the raw entries ``entries`` (RFC 9162 §2.1.1)."""
    return root_from_leaf_hashes([leaf_hash(entry) for entry in entries])


def _mth(hashes: Sequence[bytes], start: int, end: int) -> bytes:
    # Iterative on perfect blocks: fold the frontier of the range (see Frontier.root).
    frontier = Frontier()
    for index in range(start, end):
        frontier.append(hashes[index])
    return frontier.root()


class Frontier:
    """A compact range over leaves ``[0, size)``: the roots of its perfect subtrees, largest first.

    Appending is O(log n) and keeps no leaves, so the checkpointer extends the tree by the new
    events alone. ``on_node(level, index, hash)`` is told about every perfect subtree completed
    (level 0 is a leaf), so a store can keep those it will need for proofs.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != bin(size).count("1"):
            raise ProofError(f"A frontier of {size} leaves has {bin(size).count('1')} hashes.")
        self.size = size
        self.hashes = list(hashes)

    def append(self, leaf: bytes, on_node: Callable[[int, int, bytes], None] | None = None) -> None:
        index, level, node = self.size, 0, leaf
        if on_node:
            on_node(0, index, node)
        while index & 1:
            node = node_hash(self.hashes.pop(), node)
            index >>= 1
            level += 1
            if on_node:
                on_node(level, index, node)
        self.hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        """MTH of the leaves so far: the perfect subtrees folded from the right (§2.1.1)."""
        if not self.hashes:
            return EMPTY_ROOT
        root = self.hashes[-1]
        for node in reversed(self.hashes[:-1]):
            root = node_hash(node, root)
        return root


def inclusion_proof(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(m, D[n]) for leaf ``index`` in the tree of ``size`` leaves (RFC 9162 §2.1.3.1).

    Raises :class:`ProofError` when ``index`` is not in the tree.
    """
    if not 0 <= index < size:
        raise ProofError(f"Leaf {index} is not in a tree of {size} leaves.")
    return _path(index, 0, size, subtree)


def _path(m: int, start: int, end: int, subtree: Subtree) -> list[bytes]:
    n = end - start
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return _path(m, start, start + k, subtree) + [subtree(start + k, end)]
    return _path(m - k, start + k, end, subtree) + [subtree(start, start + k)]


def consistency_proof(first: int, second: int, subtree: Subtree) -> list[bytes]:
    """PROOF(m, D[n]) between the trees of ``first`` and ``second`` leaves (RFC 9162 §2.1.4.1).

    Empty when ``first`` is 0 or equals ``second``; raises :class:`ProofError` when
    ``first > second``.
    """
    if not 0 <= first <= second:
        raise ProofError(f"No consistency proof from {first} to {second} leaves.")
    if first in (0, second):
        return []
    return _subproof(first, 0, second, True, subtree)


def _subproof(m: int, start: int, end: int, whole: bool, subtree: Subtree) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [subtree(start, end)]
    k = split_point(n)
    if m <= k:
        return _subproof(m, start, start + k, whole, subtree) + [subtree(start + k, end)]
    return _subproof(m - k, start + k, end, False, subtree) + [subtree(start, start + k)]


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is leaf ``index`` of the tree of ``size`` with ``root``.

    The algorithm of RFC 9162 §2.1.3.2. Raises :class:`ProofError` saying why it fails.
    """
    if not 0 <= index < size:
        raise ProofError(f"Leaf index {index} is not in a tree of {size} leaves.")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError("The inclusion path is longer than the tree is deep.")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("The inclusion path is shorter than the tree is deep.")
    if r != root:
        raise ProofError("The inclusion path does not lead to the root hash.")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``second`` leaves extends the tree of ``first`` leaves.

    The algorithm of RFC 9162 §2.1.4.2. Raises :class:`ProofError` saying why it fails.
    """
    if not 0 <= first <= second:
        raise ProofError(f"A tree of {second} leaves cannot extend one of {first}.")
    if first == second:
        if proof:
            raise ProofError("Equal trees have an empty consistency proof.")
        if first_root != second_root:
            raise ProofError("Two trees of the same size have different roots.")
        return
    if first == 0:
        if proof:
            raise ProofError("Every tree extends the empty tree; the proof must be empty.")
        return
    if not proof:
        raise ProofError("The consistency proof is empty.")
    path = list(proof)
    if first & (first - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("The consistency proof is longer than the trees need.")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("The consistency proof is shorter than the trees need.")
    if fr != first_root:
        raise ProofError("The consistency proof does not lead to the first root hash.")
    if sr != second_root:
        raise ProofError("The consistency proof does not lead to the second root hash.")


class MemoryTree:
    """A tree held in memory as its leaf hashes; its ``subtree`` caches perfect subtrees."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self.leaves = list(leaf_hashes)
        self._perfect: dict[tuple[int, int], bytes] = {}

    def append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)

    def root(self, size: int | None = None) -> bytes:
        size = len(self.leaves) if size is None else size
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def subtree(self, start: int, end: int) -> bytes:
        n = end - start
        if n == 1:
            return self.leaves[start]
        perfect = n & (n - 1) == 0
        if perfect and (start, end) in self._perfect:
            return self._perfect[(start, end)]
        k = split_point(n)
        value = node_hash(self.subtree(start, start + k), self.subtree(start + k, end))
        if perfect:
            self._perfect[(start, end)] = value
        return value
