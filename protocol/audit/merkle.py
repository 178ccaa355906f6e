"""A Merkle tree over a round's accepted message digests (RFC 9162's, section 2.1).

Leaves are the 32-byte wire digests of the accepted envelopes, in the order the
coordinator accepted them. ``MTH({}) = SHA-256()``, a leaf hashes as
``SHA-256(0x00 || d)`` and an inner node as ``SHA-256(0x01 || left || right)``, the
left subtree holding the largest power of two below ``n`` leaves. The prefixes keep a
leaf from passing for an inner node (second-preimage), so an inclusion proof for a
digest is evidence that the signed root commits to exactly that message.

A proof is the list of sibling hashes from the leaf up; :func:`verify_inclusion` is
RFC 9162's algorithm (section 2.1.3.2) and needs only the leaf, its index, the tree
size and the root.
"""

from __future__ import annotations

import hashlib

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(digest: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + digest).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _levels(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(_levels(leaves[:k]), _levels(leaves[k:]))


def root(digests: list[bytes]) -> bytes:
    """The tree head over ``digests`` (in order)."""
    return _levels([leaf_hash(d) for d in digests])


def prove(digests: list[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index``: sibling hashes, leaf level first."""
    if not 0 <= index < len(digests):
        raise IndexError(f"leaf {index} of a tree of {len(digests)}")
    leaves = [leaf_hash(d) for d in digests]
    path: list[bytes] = []

    def walk(nodes: list[bytes], i: int) -> None:
        if len(nodes) <= 1:
            return
        k = _split(len(nodes))
        if i < k:
            walk(nodes[:k], i)
            path.append(_levels(nodes[k:]))
        else:
            walk(nodes[k:], i - k)
            path.append(_levels(nodes[:k]))

    walk(leaves, index)
    return path


def verify_inclusion(digest: bytes, index: int, size: int, path: list[bytes],
                     expected_root: bytes) -> bool:
    """Whether ``path`` proves ``digest`` is leaf ``index`` of the ``size``-leaf tree whose
    head is ``expected_root`` (RFC 9162, 2.1.3.2)."""
    if not 0 <= index < size or len(path) > 64:
        return False
    fn, sn = index, size - 1
    r = leaf_hash(digest)
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root
