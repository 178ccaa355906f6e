"""The coordinator's round, as a sans-IO state machine.

Theory of operation
-------------------
A round collects at most one contribution per admitted peer and ends in a
published result or a failure. This file knows nothing of sockets, clocks
or signatures: the caller has already verified the envelope, passes ``now``
explicitly, and moves the bytes. What it decides:

=========  ===============================================  =========
phase      event                                            next
=========  ===============================================  =========
OPEN       ``offer`` of a valid, first contribution         OPEN
OPEN       ``offer`` from a peer already counted            OPEN (``Duplicate``)
OPEN       ``ready(now)``: every expected peer is in and    CLOSING
           at least ``min_peers`` are, or the deadline
           has passed
CLOSING    ``close()`` with >= ``min_peers`` accepted       PUBLISHED
CLOSING    ``close()`` with fewer                           FAILED
=========  ===============================================  =========

"Expected" peers are the live admitted peers the caller names when it asks
``ready``; a round closes early once all of them contributed and the quorum
is met, or at its deadline with whatever arrived.

Errors: :class:`RoundClosed` and :class:`Duplicate` are remote faults (a
late or repeated message, counted as rejections); :class:`RoundMisuse` is a
local bug (closing twice).

Round modes share one driver interface (see :class:`RoundLogic`): the
coordinator offers each verified message with its domain, asks ``ready``,
and calls ``advance``, which either opens the next phase (a :class:`Notice`
to broadcast, with optional personal messages) or ends the round (an
:class:`Outcome`). :class:`Round` here is the one-phase clear mode; the
secure mode is :mod:`protocol.rounds.secure`. Peers run the mirror image,
:class:`PeerRound`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..learning.workloads import Workload
from ..wire.envelope import RejectedMessage
from ..wire.messages import CONTRIBUTION, Strict, decode, encode


class Phase(enum.Enum):
    OPEN = "open"
    PUBLISHED = "published"
    FAILED = "failed"


class RoundClosed(RejectedMessage):
    reason = "round_closed"


class Duplicate(RejectedMessage):
    reason = "duplicate"


class RoundMisuse(Exception):
    """The caller broke the state machine's rules (a bug on our side)."""


class WrongPhase(RejectedMessage):
    reason = "wrong_phase"


@dataclass
class Outcome:
    status: str
    accepted: int
    result: dict[str, Any]


@dataclass
class Notice:
    """A phase opened: ``body`` goes to everyone, ``personal[peer]`` to that peer only."""

    phase: str
    body: bytes = b""
    personal: dict[str, bytes] = field(default_factory=dict)


Outgoing = list[tuple[str, bytes]]  # (domain, payload) a peer must send


class RoundLogic:
    """What the coordinator's driver needs from a round, whatever its mode."""

    number: int
    deadline: float  # of the current phase
    rejected: dict[str, int]
    resumable: bool = False  # can be rebuilt from its stored messages after a restart

    def domains(self) -> frozenset[str]:
        raise NotImplementedError

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        raise NotImplementedError

    def ready(self, now: float, live: set[str]) -> bool:
        raise NotImplementedError

    def advance(self, now: float) -> Notice | Outcome:
        raise NotImplementedError

    def accepted_count(self) -> int:
        raise NotImplementedError

    def count_rejection(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1


class PeerRound:
    """A peer's side of one round: what to send at the start and after each notice."""

    phases: tuple[str, ...] = ()  # notices to act on, in order
    # whether on_notice may take long enough (training, many masks) to run in a worker
    # thread rather than on the peer's event loop; a short step is cheaper inline, and
    # threads holding the GIL starve the loop that moves the network traffic
    offload: bool = True

    def start(self) -> Outgoing:
        raise NotImplementedError

    def needs_personal(self, phase: str) -> bool:
        return False

    def blobs(self) -> list[bytes]:
        """Bytes this peer must serve by digest (e.g. the weights it committed to)."""
        return []

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        raise NotImplementedError


class ClearPeerRound(PeerRound):
    """The clear mode: one message, the contribution the workload computed for this round."""

    def __init__(self, contribution: Strict):
        self.contribution = contribution

    def start(self) -> Outgoing:
        return [(CONTRIBUTION, encode(self.contribution))]

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return []


@dataclass
class Round(RoundLogic):
    """The clear mode: one phase collecting ``contribution`` messages."""

    number: int
    workload: Workload
    deadline: float
    min_peers: int
    phase: Phase = Phase.OPEN
    contributions: dict[str, Strict] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def offer(self, sender: str, contribution: Strict) -> None:
        """Accept ``sender``'s contribution or raise a :class:`RejectedMessage`."""
        if self.phase is not Phase.OPEN:
            raise RoundClosed(f"round {self.number} is {self.phase.value}")
        if sender in self.contributions:
            raise Duplicate(f"{sender} already contributed to round {self.number}")
        if not isinstance(contribution, self.workload.contribution_schema):
            raise RoundMisuse("contribution of the wrong schema reached the round")
        self.workload.check(contribution)
        self.contributions[sender] = contribution

    resumable = True

    def domains(self) -> frozenset[str]:
        return frozenset({CONTRIBUTION})

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if domain != CONTRIBUTION:
            raise WrongPhase(f"{domain} messages are not part of a clear round")
        self.offer(sender, decode(payload, self.workload.contribution_schema))

    def accepted_count(self) -> int:
        return len(self.contributions)

    def advance(self, now: float) -> Outcome:
        return self.close()

    def ready(self, now: float, expected: set[str]) -> bool:
        """True when the round should close now: deadline passed, or quorum met and every
        ``expected`` peer (the caller's live admitted peers) has contributed."""
        if self.phase is not Phase.OPEN:
            return False
        if now >= self.deadline:
            return True
        return len(self.contributions) >= self.min_peers and expected <= self.contributions.keys()

    def close(self) -> Outcome:
        if self.phase is not Phase.OPEN:
            raise RoundMisuse(f"round {self.number} closed twice")
        n = len(self.contributions)
        if n < self.min_peers:
            self.phase = Phase.FAILED
            return Outcome("failed", n, {"error": f"quorum not met: {n} < {self.min_peers}"})
        self.phase = Phase.PUBLISHED
        return Outcome("published", n, self.workload.aggregate(self.contributions))
