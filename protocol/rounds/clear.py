"""The clear mode: each peer sends one contribution in the clear; the workload combines them.

Theory of operation
-------------------
A round collects at most one contribution per participant and ends in a
published result or a failure. The caller has already verified the envelope,
passes ``now`` explicitly, and moves the bytes. What it decides:

=========  ===============================================  ===============
phase      event                                            next
=========  ===============================================  ===============
OPEN       ``offer`` of a valid, first contribution         OPEN
OPEN       ``offer`` from a peer already counted            OPEN (``Duplicate``)
OPEN       ``ready(now)``: every expected peer is in and    OPEN (ready)
           at least ``min_peers`` are, or the deadline
           has passed
OPEN       ``close()`` with >= ``min_peers`` accepted       PUBLISHED
OPEN       ``close()`` with fewer                           FAILED
=========  ===============================================  ===============

"Expected" peers are the live participants the caller names when it asks
``ready``; a round closes early once all of them contributed and the quorum
is met, or at its deadline with whatever arrived. A clear round can be
resumed after a coordinator restart: its contributions are stored whole.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..wire.messages import CONTRIBUTION, Strict, decode, encode
from .base import (
    Duplicate,
    Mode,
    Opening,
    Outcome,
    Outgoing,
    PeerContext,
    PeerRound,
    RoundClosed,
    RoundLogic,
    RoundMisuse,
    Settings,
    Setup,
    WrongPhase,
)

if TYPE_CHECKING:
    from ..learning.workloads import Workload


class Phase(enum.Enum):
    OPEN = "open"
    PUBLISHED = "published"
    FAILED = "failed"


@dataclass
class Round(RoundLogic):
    """The coordinator's side: one phase collecting ``contribution`` messages."""

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
        ``expected`` peer (the caller's live participants) has contributed."""
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


class ClearPeerRound(PeerRound):
    """A peer's side: one message, the contribution the workload computed for this round."""

    offload = False

    def __init__(self, contribution: Strict):
        self.contribution = contribution

    def start(self) -> Outgoing:
        return [(CONTRIBUTION, encode(self.contribution))]

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return []


class ClearMode(Mode):
    name = "clear"
    resumable = True
    domains = frozenset({CONTRIBUTION})

    def open(self, setup: Setup) -> Opening:
        deadline = setup.now + setup.settings.round_timeout
        return Opening(Round(setup.number, setup.workload, deadline, setup.settings.min_peers),
                       deadline)

    def resume(self, number: int, workload: Workload, settings: Settings,
               now: float) -> Round:
        return Round(number, workload, now + settings.round_timeout, settings.min_peers)

    def peer_round(self, ctx: PeerContext) -> ClearPeerRound:
        return ClearPeerRound(ctx.workload.contribute(ctx.announce, ctx.data, ctx.blobs))


MODE = ClearMode()
