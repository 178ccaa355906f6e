"""What every round mode is made of, and what the drivers may rely on.

Theory of operation
-------------------
A round mode (clear, SecAgg+, vss, replicated, or one of yours) is a
:class:`Mode` found by name in one registry (:mod:`protocol.rounds`). It
answers everything that depends on which mode a round is:

- at the coordinator, :meth:`Mode.open` builds the round's announcement
  parameters and its sans-IO :class:`RoundLogic` from a :class:`Setup`;
  :attr:`Mode.resumable` says whether a round cut by a restart can be rebuilt
  from its stored messages (:meth:`Mode.resume`);
- at a peer, :meth:`Mode.participants` reads from an announcement who takes
  part, and :meth:`Mode.peer_round` builds this peer's :class:`PeerRound`
  (in a worker thread: it may train a model).

The coordinator's driver then runs any round the same way: offer each
verified message (``offer_message``), ask ``ready``, call ``advance``, and do
what the :data:`Step` it returns says -- broadcast a :class:`Notice`, do the
I/O of a :class:`Work`, or publish the :class:`Outcome`. A peer's driver
sends what ``start`` returns, then what ``on_notice`` returns for each phase
notice in ``phases``. Neither driver asks which mode it runs.

Errors: :class:`RoundClosed`, :class:`Duplicate` and :class:`WrongPhase` are
the remote's fault (counted rejections); :class:`RoundMisuse` is our own bug;
:class:`Leave` is raised by a peer round that cannot go on (its protocol
aborted, or a test knob made it drop out): the peer leaves that round only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..wire.envelope import RejectedMessage, open_envelope
from ..wire.messages import RoundAnnounce

if TYPE_CHECKING:  # annotations only: modes are handed these objects, never import them
    from ..learning.workloads import Workload
    from ..policy.replication import Reputation


class RoundClosed(RejectedMessage):
    reason = "round_closed"


class Duplicate(RejectedMessage):
    reason = "duplicate"


class WrongPhase(RejectedMessage):
    reason = "wrong_phase"


class UnknownMode(RejectedMessage):
    reason = "unknown_mode"


class NotParticipant(RejectedMessage):
    reason = "not_participant"


class RoundMisuse(Exception):
    """The caller broke the state machine's rules (a bug on our side)."""


class Leave(Exception):
    """A peer round cannot go on (its protocol aborted, or it was told to drop out)."""


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


@dataclass
class Work:
    """The round needs I/O before it can go on: each blob in ``fetch`` by digest (from the
    peers listed, at most ``max_size`` bytes, hash-checked, handed back by
    ``RoundLogic.deliver``), then ``compute`` (CPU work, e.g. re-executing a contested
    training task) run in a worker thread. The driver then calls ``advance`` again."""

    fetch: dict[bytes, list[str]] = field(default_factory=dict)
    max_size: int = 0
    compute: Callable[[], None] | None = None
    what: str = ""  # for the log: what compute does


Step = Notice | Work | Outcome  # what RoundLogic.advance returns, in every mode
Outgoing = list[tuple[str, bytes]]  # (domain, payload) a peer must send


class RoundLogic:
    """What the coordinator's driver needs from a round, whatever its mode."""

    number: int
    deadline: float  # of the current phase
    rejected: dict[str, int]

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        """Take a verified message or raise a :class:`RejectedMessage`."""
        raise NotImplementedError

    def ready(self, now: float, live: set[str]) -> bool:
        """Whether ``advance`` should be called now (``live``: the connected participants)."""
        raise NotImplementedError

    def advance(self, now: float) -> Step:
        raise NotImplementedError

    def deliver(self, digest: bytes, blob: bytes) -> None:
        """A blob a :class:`Work` step asked for (its digest already checked)."""
        raise RoundMisuse("this round asked for no blobs")

    def remake(self, digest: bytes) -> bytes | None:
        """For an auditor replaying the round, who cannot ask its peers: make the blob a
        :class:`Work` step names by re-executing what produced it, or None."""
        return None

    def accepted_count(self) -> int:
        raise NotImplementedError

    def refused_senders(self) -> set[str]:
        """Participants whose signed messages this round refused as invalid: they answered
        (wrongly), so attendance does not take them for silent; reputation deals with them."""
        return set()

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

    async def before_step(self, step: str) -> None:
        """Called before ``start`` ("start") and before each phase; may wait (a peer that
        copies others' messages waits to see them) or raise :class:`Leave`."""

    def needs_personal(self, phase: str) -> bool:
        return False

    def needs_body(self, phase: str) -> bool:
        """Whether this peer reads ``phase``'s notice body. One that does not gets b""
        instead: a large body travels by digest, and in a committee round most peers never
        read what only the committee needs (at N=500, VSS commitments of ~1 MB each)."""
        return True

    def blobs(self) -> list[bytes]:
        """Bytes this peer must serve by digest (e.g. the weights it committed to)."""
        return []

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        raise NotImplementedError


@dataclass(frozen=True)
class Settings:
    """The coordinator's round settings, for any mode to read."""

    min_peers: int = 2
    round_timeout: float = 30.0  # clear rounds: how long a round stays open
    phase_timeout: float = 10.0  # multi-phase rounds: how long each phase waits at most
    dp_epsilon: float = 0.0  # secure rounds: per-round epsilon of distributed DP noise
    dp_delta: float = 1e-5
    secagg_degree: int | None = None  # None: secagg.SecAggConfig.default's graph
    secagg_threshold: int | None = None
    secagg_agreement: int | None = None
    vss_committee: int = 16
    vss_bits: int = 14
    robust_tolerance: float = 0.2  # robust rounds: the fraction of liars to withstand
    group_size: int | None = None  # robust rounds' k; None: from robust_tolerance
    robust_aggregator: str = "nnm+centered_clipping"  # robust.DEFAULT_AGGREGATOR


@dataclass
class Setup:
    """What a mode is handed to open round ``number``."""

    number: int
    workload: Workload
    participants: list[str]  # sorted peer ids: the live admitted peers asked this round
    prev_digest: bytes  # the last published state's digest (b"" before the first)
    now: float
    settings: Settings
    reputation: Reputation


@dataclass
class Opening:
    """An opened round: its logic and what its announcement carries."""

    round: RoundLogic
    deadline: float  # announced: when the whole round should be over
    params: bytes = b""  # the mode's parameters (RoundAnnounce.params)
    workload_params: bytes = b""  # b"": the workload's own round_params
    participants: list[str] | None = None  # whom notices go to (None: Setup.participants)
    asked: list[str] | None = None  # whom attendance expects a message from (None: same)
    notes: list[str] = field(default_factory=list)  # for the operator's log


@dataclass
class PeerContext:
    """What a mode is handed to build a peer's side of a round (in a worker thread)."""

    peer_id: str
    workload: Workload
    announce: RoundAnnounce
    data: Any  # the peer's private input (Workload.parse_data)
    blobs: Mapping[bytes, bytes]  # what Workload.required_blobs named, fetched and checked
    sign: Callable[[bytes], bytes]


class Mode:
    """A round mode: one instance per mode, registered by ``name`` in protocol.rounds."""

    name: ClassVar[str]
    resumable: ClassVar[bool] = False  # a round cut by a restart can be rebuilt
    min_participants: ClassVar[int] = 1  # a secure sum over one input would be that input
    domains: ClassVar[frozenset[str]]  # what its peers sign their messages for
    public_domains: ClassVar[frozenset[str]] = frozenset()  # also gossiped, for audit

    def serves(self, workload: Workload) -> bool:
        """Whether this mode can run rounds of ``workload``."""
        return True

    def open(self, setup: Setup) -> Opening:
        raise NotImplementedError

    def resume(self, number: int, workload: Workload, settings: Settings,
               now: float) -> RoundLogic:
        """A resumable mode's round ``number`` rebuilt empty after a restart; the caller
        offers it the round's stored messages again."""
        raise RoundMisuse(f"{self.name} rounds cannot be resumed")

    def replay(self, announce: RoundAnnounce, workload: Workload) -> RoundLogic:
        """The coordinator's round as ``announce`` opened it, for an auditor to offer the
        round log's accepted messages to, in order, and advance between phases
        (:mod:`protocol.audit.derive`): the same state machine, so the same result."""
        raise RoundMisuse(f"{self.name} rounds cannot be replayed")

    def audit_note(self, announce: RoundAnnounce) -> str:
        """For an auditor, in a sentence: what the announced parameters guarantee and what a
        replay of this mode cannot check (appended to a checked round's finding; "" when the
        replay checks everything the round claims)."""
        return ""

    def participants(self, announce: RoundAnnounce) -> list[str] | None:
        """Who takes part, read from the announcement; None: every admitted peer. Raises a
        :class:`RejectedMessage` when the mode's parameters do not decode."""
        return None

    def peer_round(self, ctx: PeerContext) -> PeerRound:
        raise NotImplementedError


PublicCheck = Callable[[bytes, str], bool]


def public_gossip_check(domains: frozenset[str]) -> PublicCheck:
    """A gossip validator for peers' public round messages: valid when ``origin`` itself
    signed a message of one of ``domains`` (what nodes check before delivering or
    forwarding it)."""

    allowed = set(domains)  # once, not per message

    def check(wire: bytes, origin: str) -> bool:
        try:
            return open_envelope(wire, domains=allowed).sender_id == origin
        except RejectedMessage:
            return False

    return check
