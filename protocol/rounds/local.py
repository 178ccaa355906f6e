"""One round of any mode run in this process, with no network: for benchmarks and tests.

:func:`run_round` plays the coordinator's driver and every peer's against the same
mode objects, crypto and aggregation code the network runs (``Mode.open``, the round
logic's ``offer_message`` / ``advance``, each peer round's ``start`` / ``on_notice``),
handing each message straight to its receiver instead of sealing and gossiping it.
What it leaves out is exactly the transport: signatures on envelopes, deadlines, pulls
and dropouts by timing (a peer leaves only by raising :class:`Leave`). A bench uses it
to run hundreds of rounds where a libp2p testnet would take hours; the tests run the
same modes over real libp2p.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..policy.replication import Reputation
from ..wire.envelope import RejectedMessage
from ..wire.identity import Identity
from ..wire.messages import RoundAnnounce
from .base import Leave, Mode, Notice, Outcome, PeerContext, PeerRound, Settings, Setup, Work

if TYPE_CHECKING:
    from ..learning.workloads import Workload

# how a peer builds its side of a round (honest: the mode's peer_round; a liar: its own)
PeerFactory = Callable[[Mode, PeerContext], PeerRound]


def honest(mode: Mode, ctx: PeerContext) -> PeerRound:
    return mode.peer_round(ctx)


@dataclass
class LocalPeer:
    identity: Identity
    workload: Workload  # the peer's own instance
    data: Any
    factory: PeerFactory = honest


@dataclass
class LocalResult:
    outcome: Outcome
    announce: RoundAnnounce
    refused: dict[str, list[str]] = field(default_factory=dict)  # peer -> reasons
    left: dict[str, str] = field(default_factory=dict)  # peer -> why it left the round


def run_round(mode: Mode, workload: Workload, number: int, peers: list[LocalPeer], *,
              settings: Settings | None = None, prev_digest: bytes = b"",
              reputation: Reputation | None = None, now: float = 0.0) -> LocalResult:
    """Round ``number`` of ``mode`` over ``workload`` (the coordinator's instance) with
    ``peers``; every message is offered to the round as the coordinator's intake would
    (refusals are collected, never raised)."""
    settings = settings or Settings()
    by_id = {p.identity.peer_id: p for p in peers}
    opening = mode.open(Setup(number, workload, sorted(by_id), prev_digest, now, settings,
                              reputation or Reputation()))
    announce = RoundAnnounce(
        round=number, workload=workload.name, deadline_ms=int(opening.deadline * 1000),
        min_peers=settings.min_peers, prev_state_digest=prev_digest, params=opening.params,
        workload_params=opening.workload_params or workload.round_params(number),
        mode=mode.name)
    rnd = opening.round
    res = LocalResult(Outcome("failed", 0, {}), announce)
    state = workload.state_blob()
    blobs = {} if state is None else {_digest(state): state}

    def offer(pid: str, out: list[tuple[str, bytes]]) -> None:
        for domain, payload in out:
            try:
                rnd.offer_message(pid, domain, payload)
            except RejectedMessage as exc:
                res.refused.setdefault(pid, []).append(f"{exc.reason}: {exc}")

    asked = mode.participants(announce)
    live: dict[str, PeerRound] = {}
    for pid in sorted(by_id) if asked is None else asked:
        p = by_id.get(pid)
        if p is None:
            continue
        try:
            pr = p.factory(mode, PeerContext(pid, p.workload, announce, p.data, blobs,
                                             p.identity.sign))
            out = pr.start()
        except Leave as exc:
            res.left[pid] = str(exc)
            continue
        live[pid] = pr
        offer(pid, out)
    served: dict[bytes, bytes] = {}
    while True:
        for pr in live.values():
            served.update((_digest(b), b) for b in pr.blobs())
        step = rnd.advance(now)
        if isinstance(step, Outcome):
            res.outcome = step
            return res
        if isinstance(step, Work):
            for digest in step.fetch:
                if digest in served:
                    rnd.deliver(digest, served[digest])
            if step.compute is not None:
                step.compute()
            continue
        assert isinstance(step, Notice)
        for pid, pr in list(live.items()):
            if step.phase not in pr.phases:
                continue
            personal = step.personal.get(pid)
            try:
                if pr.needs_personal(step.phase) and personal is None:
                    raise Leave(f"no personal {step.phase} message")
                body = step.body if pr.needs_body(step.phase) else b""
                out = pr.on_notice(step.phase, body, personal)
            except Leave as exc:
                res.left[pid] = str(exc)
                del live[pid]
                continue
            offer(pid, out)


def _digest(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()
