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
OPEN       ``offer`` of an invalid one (schema, the         OPEN (refused: the
           workload's check): the sender is done            sender is done)
OPEN       ``offer`` from a peer already counted or         OPEN (``Duplicate``)
           refused
OPEN       ``offer`` from a peer not asked this round       OPEN (``NotParticipant``)
OPEN       ``ready(now)``: every expected peer is in (or    OPEN (ready)
           refused) and at least ``min_peers`` are in,
           or the deadline has passed
OPEN       ``close()`` with >= ``min_peers`` accepted       PUBLISHED
OPEN       ``close()`` with fewer                           FAILED
=========  ===============================================  ===============

"Expected" peers are the live participants the caller names when it asks
``ready``; a round closes early once all of them contributed (or were refused)
and the quorum is met, or at its deadline with whatever arrived: a peer whose
contribution is refused cannot hold the round to its deadline. Nor can a few live
but silent ones: once at most :func:`stragglers` of the expected peers are missing
and nothing has arrived for ``quiet`` seconds (the phase timeout), the round closes
without them (at N=1000, one such peer held a fedavg round to its deadline, 12 of
its minutes after the other 999 were in). Each refusal
costs the sender reputation (:meth:`Reputation.refused`); below the threshold
it is no longer asked (:meth:`ClearMode.open`), and a contribution from a peer
not asked is refused. The published result lists the refused peers and why
(``refused``, when there are any).

A clear round can be resumed after a coordinator restart: its accepted
contributions are stored whole (the resumed round asks everyone again and
forgets the refusals, which reputation has already counted).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..wire.envelope import RejectedMessage
from ..wire.messages import CONTRIBUTION, RoundAnnounce, SchemaError, Strict, decode, encode
from .base import (
    Duplicate,
    Mode,
    NotParticipant,
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
    from ..policy.replication import Reputation


def stragglers(expected: int) -> int:
    """How many expected peers a clear round may close without once it has been quiet:
    one in a hundred, at least one."""
    return max(1, expected // 100)


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
    participants: frozenset[str] | None = None  # None: any admitted peer (a resumed round)
    reputation: Reputation | None = None  # charged for each refusal
    contributions: dict[str, Strict] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # sender -> why
    rejected: dict[str, int] = field(default_factory=dict)
    quiet: float = float("inf")  # s without a new answer after which stragglers are let go
    _answered: tuple[int, float] | None = None  # (answers, when that count was first seen)

    def offer(self, sender: str, contribution: Strict) -> None:
        """Accept ``sender``'s contribution or raise a :class:`RejectedMessage`."""
        why = self._unanswerable(sender)
        if why is not None:
            raise why
        if not isinstance(contribution, self.workload.contribution_schema):
            raise RoundMisuse("contribution of the wrong schema reached the round")
        try:
            self.workload.check(contribution)
        except RejectedMessage as exc:
            self._refuse(sender, exc)
            raise
        except Exception as exc:  # a user's check that fails refuses the input, no more
            refusal = SchemaError(f"the {self.workload.name} workload's check failed: "
                                  f"{type(exc).__name__}: {exc}"[:300])
            self._refuse(sender, refusal)
            raise refusal from exc
        self.contributions[sender] = contribution

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if domain != CONTRIBUTION:
            raise WrongPhase(f"{domain} messages are not part of a clear round")
        try:
            contribution = decode(payload, self.workload.contribution_schema)
        except RejectedMessage as exc:
            if self._unanswerable(sender) is None:  # a participant's answer, and invalid
                self._refuse(sender, exc)
            raise
        self.offer(sender, contribution)

    def _unanswerable(self, sender: str) -> RejectedMessage | None:
        """Why ``sender`` may not answer this round now (None: it may)."""
        if self.phase is not Phase.OPEN:
            return RoundClosed(f"round {self.number} is {self.phase.value}")
        if sender in self.contributions or sender in self.refused:
            return Duplicate(f"{sender} already answered round {self.number}")
        if self.participants is not None and sender not in self.participants:
            return NotParticipant(f"{sender} was not asked in round {self.number}")
        return None

    def _refuse(self, sender: str, exc: RejectedMessage) -> None:
        """``sender`` (whose signature was checked) sent an invalid contribution: it is
        done for this round, and it costs reputation."""
        self.refused[sender] = f"{exc.reason}: {exc}"[:200]
        if self.reputation is not None:
            self.reputation.refused(self.number, sender, f"round {self.number}: contribution "
                                    f"refused ({exc.reason})")

    def accepted_count(self) -> int:
        return len(self.contributions)

    def refused_senders(self) -> set[str]:
        return set(self.refused)

    def advance(self, now: float) -> Outcome:
        return self.close()

    def ready(self, now: float, expected: set[str]) -> bool:
        """True when the round should close now: deadline passed, or quorum met and every
        ``expected`` peer (the caller's live participants) has contributed."""
        if self.phase is not Phase.OPEN:
            return False
        if now >= self.deadline:
            return True
        answered = len(self.contributions) + len(self.refused)
        if self._answered is None or self._answered[0] != answered:
            self._answered = (answered, now)
        if len(self.contributions) < self.min_peers:
            return False
        missing = len(expected - self.contributions.keys() - self.refused.keys())
        return missing == 0 or (missing <= stragglers(len(expected)) and
                                now - self._answered[1] >= self.quiet)

    def close(self) -> Outcome:
        if self.phase is not Phase.OPEN:
            raise RoundMisuse(f"round {self.number} closed twice")
        n = len(self.contributions)
        refused = {"refused": dict(sorted(self.refused.items()))} if self.refused else {}
        if n < self.min_peers:
            self.phase = Phase.FAILED
            return Outcome("failed", n, {"error": f"quorum not met: {n} < {self.min_peers}",
                                         **refused})
        self.phase = Phase.PUBLISHED
        return Outcome("published", n, {**self.workload.aggregate(self.contributions),
                                        **refused})


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
        """Ask the live peers in good standing; those whose refusals cost them their
        reputation are left out (and their contributions refused)."""
        deadline = setup.now + setup.settings.round_timeout
        asked = setup.reputation.eligible(setup.participants)
        notes = [f"{len(setup.participants) - len(asked)} peers below the reputation "
                 "threshold are not asked"] if len(asked) < len(setup.participants) else []
        rnd = Round(setup.number, setup.workload, deadline, setup.settings.min_peers,
                    participants=frozenset(asked), reputation=setup.reputation,
                    quiet=setup.settings.phase_timeout)
        return Opening(rnd, deadline, participants=asked, asked=asked, notes=notes)

    def resume(self, number: int, workload: Workload, settings: Settings,
               now: float) -> Round:
        return Round(number, workload, now + settings.round_timeout, settings.min_peers,
                     quiet=settings.phase_timeout)

    def replay(self, announce: RoundAnnounce, workload: Workload) -> Round:
        return Round(announce.round, workload, float("inf"), announce.min_peers)

    def peer_round(self, ctx: PeerContext) -> ClearPeerRound:
        return ClearPeerRound(ctx.workload.contribute(ctx.announce, ctx.data, ctx.blobs))


MODE = ClearMode()
