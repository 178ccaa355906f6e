"""Zero-knowledge proofs that a committed integer lies in ``[0, 2^bits)``.

The value ``v`` is committed as ``C = v*H + r*G`` (:mod:`protocol.crypto.group`). The
prover writes ``v`` in binary, commits to each bit ``C_i = b_i*H + r_i*G``
with the ``r_i`` chosen so that ``sum 2^i r_i = r`` (so ``sum 2^i C_i = C``,
which the verifier recomputes), and proves for each ``C_i`` that it commits
to 0 or to 1 with the OR-composition of two Schnorr proofs of Cramer,
Damgard and Schoenmakers (CRYPTO '94): knowledge of ``r_i`` with
``C_i = r_i*G`` or with ``C_i - H = r_i*G``, one branch real and one
simulated, made non-interactive by Fiat-Shamir. Each proof's challenge
hashes ``context`` (the caller binds round, prover and coordinate into it, so a
proof cannot be replayed for another value), the bit's index and every point
of the statement.

Soundness: a prover who does not know an opening of ``C`` with
``v in [0, 2^bits)`` produces an accepting proof only with negligible
probability (special soundness of each OR-proof in the random-oracle model,
plus the binding of the commitments under discrete log). Zero knowledge: the
proof is simulatable, and the bit commitments are perfectly hiding, so the
proof reveals nothing about ``v`` beyond the range.

Size: ``bits`` x (a point and four scalars) = ``160 * bits`` bytes. Cost with
libsodium: about 4 scalar multiplications per bit to prove and to verify.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ..wire.messages import Strict
from . import group
from .group import GroupError, L

B32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
MAX_BITS = 32


class BitProof(Strict, array_like=True):
    commitment: B32  # C_i
    e0: B32
    e1: B32
    z0: B32
    z1: B32


RangeProof = Annotated[list[BitProof], msgspec.Meta(max_length=MAX_BITS)]


def _challenge(context: bytes, index: int, c: bytes, a0: bytes, a1: bytes) -> int:
    return group.hash_to_scalar(b"range-bit", context, index.to_bytes(2, "big"), c, a0, a1)


def prove(v: int, r: int, bits: int, context: bytes) -> list[BitProof]:
    """A proof that ``group.commit(v, r)`` holds a value in ``[0, 2^bits)``."""
    if not 1 <= bits <= MAX_BITS or not 0 <= v < 2**bits:
        raise ValueError(f"{v} is not in [0, 2^{bits}): nothing to prove")
    rs = [group.random_scalar() for _ in range(bits - 1)]
    top = (r - sum(ri << i for i, ri in enumerate(rs))) * pow(2 ** (bits - 1), -1, L) % L
    rs.append(top)
    proofs = []
    for i, ri in enumerate(rs):
        b = (v >> i) & 1
        c = group.commit(b, ri)
        statement = (c, group.sub(c, group.H))  # P_0 = r_i G if b = 0; P_1 = r_i G if b = 1
        e_sim, z_sim = group.random_scalar(), group.random_scalar()
        a_sim = group.sub(group.base(z_sim), group.mul(e_sim, statement[1 - b]))
        w = group.random_scalar()
        a = [b"", b""]
        a[b], a[1 - b] = group.base(w), a_sim
        e = _challenge(context, i, c, a[0], a[1])
        e_real = (e - e_sim) % L
        z_real = (w + e_real * ri) % L
        es, zs = [0, 0], [0, 0]
        es[b], zs[b], es[1 - b], zs[1 - b] = e_real, z_real, e_sim, z_sim
        proofs.append(BitProof(c, *(group.scalar_bytes(x) for x in (es[0], es[1],
                                                                       zs[0], zs[1]))))
    return proofs


def verify(commitment: bytes, proof: list[BitProof], bits: int, context: bytes) -> bool:
    """Whether ``proof`` shows that ``commitment`` holds a value in ``[0, 2^bits)``."""
    if len(proof) != bits:
        return False
    try:
        points = []
        for i, bp in enumerate(proof):
            c = bp.commitment  # group.mul below refuses it unless it is in the subgroup
            e0, e1, z0, z1 = (group.scalar(x) for x in (bp.e0, bp.e1, bp.z0, bp.z1))
            a0 = group.sub(group.base(z0), group.mul(e0, c))
            a1 = group.sub(group.base(z1), group.mul(e1, group.sub(c, group.H)))
            if (e0 + e1) % L != _challenge(context, i, c, a0, a1):
                return False
            points.append(c)
        acc = points[-1]  # sum_i 2^i C_i by doubling, from the top bit down
        for c in reversed(points[:-1]):
            acc = group.add(group.add(acc, acc), c)
        return acc == group.point(commitment)
    except GroupError:
        return False
