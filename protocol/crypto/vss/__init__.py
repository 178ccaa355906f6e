"""Verified secure sums of small vectors: Pedersen VSS to a committee, range-checked inputs.

Theory of operation
-------------------
The server learns the sum of the included clients' vectors and nothing else
about any one of them, as long as fewer than ``threshold`` committee
members collude with it (fewer than ``2 * threshold - c`` if it also names
different included sets to different members, see Guarantees); and every
input it sums was proven, in zero knowledge, to lie in the workload's
range, so a malicious client can move
the sum no more than an honest one with an extreme value could. This is
the committee Shamir scheme for small statistics (Pedersen's verifiable
secret sharing, CRYPTO '91, with the range proofs of
:mod:`protocol.crypto.rangeproof`); SecAgg+ (:mod:`protocol.crypto.secagg`) remains the
protocol for model vectors, where per-coordinate proofs would cost too much.
Both sides are sans-IO state machines: callers pass messages in and send
the messages that come out; signatures were checked before a message
reaches us, so a sender's peer id here is authenticated.

Construction, for ``d`` coordinates and a committee of ``c`` members with
threshold ``tau``:

* Encoding: coordinate ``j`` of a client's vector is clipped to
  ``[low_j, high_j]`` and mapped to ``v_j = round((x_j - low_j) * scale_j)``
  with ``scale_j = (2^bits - 1) / (high_j - low_j)``, so ``v_j`` in
  ``[0, 2^bits)`` is exactly ``x_j`` in the range. Sums stay far below the
  group order, so they decode exactly up to rounding.
* Committee: ``c = min(n, committee_size)`` participants in an order fixed
  by the public ``seed``; member ``k`` (0-based) holds the shares at
  ``x = k + 1``. ``tau = c - floor(dropout * c)``, which is more than ``c/2``.
* Keys: each member advertises a fresh X25519 key for the round. A round
  configured to re-plan (``VssConfig.replan``, the default for rounds the
  coordinator runs) has every participant advertise one, and goes on with
  those that did: its committee is drawn again from them with the same seed
  (``VssConfig.restricted``), so a participant silent from the start holds no
  seat and costs nothing but the wait.
* Deal: each client picks, per coordinate, polynomials ``f_j`` and ``g_j`` of
  degree ``tau - 1`` with ``f_j(0) = v_j``, ``g_j(0) = r_j`` and uniform
  other coefficients, publishes ``E_{j,k} = f_{j,k} H + g_{j,k} G`` (so
  ``E_{j,0}`` is the Pedersen commitment to ``v_j``), a range proof for each
  ``E_{j,0}``, and for each member the ciphertext of its shares
  ``(f_j(x), g_j(x))_j``: ChaCha20-Poly1305 under HKDF(X25519(dealer's
  fresh key, member's key)), bound to round, dealer and member. The server
  checks every point and proof and refuses the dealing otherwise.
* Check: each member decrypts its shares and tests
  ``f_j(x) H + g_j(x) G == sum_k x^k E_{j,k}``; it accuses each dealer whose
  share fails (or does not decrypt).
* Resolve: an accused dealer reveals the disputed shares in the clear and
  the server tests them the same way; a valid one is handed to the member
  (a share is one point of a polynomial of degree ``tau - 1``: revealing it
  costs nothing while fewer than ``tau`` are known), a bad or missing one
  disqualifies the dealer.
* Aggregate: the server names the included dealers ``A``; each member
  answers ``F_j(x) = sum_{u in A} f_{u,j}(x)`` and the same for ``g``. The
  server tests each answer against ``sum_{u in A} E_{u,j,k}`` (a lying
  member is caught and ignored), interpolates ``tau`` valid answers at 0
  and decodes ``sum_{u in A} v_{u,j}``.

Guarantees: fewer than ``tau`` shares of a polynomial of degree ``tau - 1``
are uniformly distributed whatever its constant term, and the commitments
are perfectly hiding, so the server with fewer than ``tau`` members learns
only the sum over ``A``. Members refuse an ``A`` with fewer than
``min_included`` dealers; a server naming different ``A`` to different
members gains nothing, since each honest member answers once and every
sum needs ``tau > c/2`` answers: two sums would need ``2 * tau`` answers
from ``c`` members of whom only colluders answer twice, so against such a
server the bound on colluding members is ``2 * tau - c`` (8 of the default
16 at 30 % dropout), not ``tau``. Commitments bind under discrete log, so an included
input is the range-checked one. The round completes when ``tau`` members
answer; clients need not stay after dealing.

Phases (server)::

    KEYS --close_keys()--> DEAL --close_deal()--> CHECK --close_check()-->
    RESOLVE --close_resolve()--> AGGREGATE --close_aggregate()--> DONE

Each ``receive_*`` accepts a message only in its phase, only from a sender
allowed there, at most once; anything else raises :class:`VssRejected` (a
remote fault, with its reason). A phase ending without enough members
raises :class:`VssAbort`; methods out of order raise :class:`VssMisuse`.

The package: :mod:`.messages` (the schemas and errors), :mod:`.config` (a round's
parameters, the committee draw, share encryption and the field arithmetic both sides
use), :mod:`.client`, :mod:`.server`.
"""

from __future__ import annotations

from .client import VssClient
from .config import VssConfig, lagrange_at_zero, max_dealers, rank
from .messages import (
    B32,
    MAX_DIM,
    MAX_THRESHOLD,
    TAG,
    Accusations,
    AggregateShare,
    Commitments,
    Dealing,
    Disputes,
    Inclusion,
    MemberInbox,
    MemberKey,
    MemberKeys,
    PeerId,
    Points,
    Reveal,
    VssAbort,
    VssMisuse,
    VssRejected,
    included_digest,
)
from .server import VssOutcome, VssPhase, VssServer

__all__ = [
    "lagrange_at_zero",
    "Accusations",
    "AggregateShare",
    "B32",
    "Commitments",
    "Dealing",
    "Disputes",
    "Inclusion",
    "MAX_DIM",
    "MAX_THRESHOLD",
    "MemberInbox",
    "MemberKey",
    "MemberKeys",
    "PeerId",
    "Points",
    "Reveal",
    "TAG",
    "VssAbort",
    "VssClient",
    "VssConfig",
    "VssMisuse",
    "VssOutcome",
    "VssPhase",
    "VssRejected",
    "VssServer",
    "included_digest",
    "max_dealers",
    "rank",
]
