"""A round mode defined here, in one file, and run over real libp2p by the unchanged house.

``commitreveal`` is a test-only mode: each participant first commits to its clear
contribution (a salted SHA-256), then, once the coordinator's ``reveal`` notice says
commitments are closed, reveals it; a reveal that does not open its commitment is
refused. Neither peer/ nor coordinator/ knows this mode: the coordinator is told its
name (``CoordinatorConfig.mode``) and both find it in protocol.rounds' registry.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Annotated

import httpx
import msgspec
import trio

from protocol import rounds
from protocol.rounds.base import (
    Duplicate,
    Mode,
    Notice,
    Opening,
    Outcome,
    Outgoing,
    PeerContext,
    PeerRound,
    RoundLogic,
    Setup,
    WrongPhase,
)
from protocol.wire.envelope import RejectedMessage, peek
from protocol.wire.messages import ANNOUNCE, RESULT, RoundAnnounce, Strict, decode, encode

from .netutil import start_coordinator, start_peer, wait_for

COMMIT, REVEAL = "test/commit", "test/reveal"
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class Commit(Strict):
    digest: Digest


class Reveal(Strict):
    contribution: Annotated[bytes, msgspec.Meta(max_length=4096)]
    salt: Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]


class BadOpening(RejectedMessage):
    reason = "bad_opening"


def commitment(contribution: bytes, salt: bytes) -> bytes:
    return hashlib.sha256(b"test/commitreveal" + salt + contribution).digest()


@dataclass
class CommitRevealRound(RoundLogic):
    number: int
    workload: object
    deadline: float
    phase_timeout: float
    min_peers: int
    phase: str = "commit"
    commits: dict[str, bytes] = field(default_factory=dict)
    revealed: dict[str, Strict] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if (self.phase, domain) == ("commit", COMMIT):
            if sender in self.commits:
                raise Duplicate(f"{sender} already committed")
            self.commits[sender] = decode(payload, Commit).digest
        elif (self.phase, domain) == ("reveal", REVEAL):
            msg = decode(payload, Reveal)
            if sender in self.revealed or sender not in self.commits:
                raise Duplicate(f"{sender} has no open commitment")
            if commitment(msg.contribution, msg.salt) != self.commits[sender]:
                raise BadOpening("the reveal does not open the commitment")
            c = decode(msg.contribution, self.workload.contribution_schema)
            self.workload.check(c)
            self.revealed[sender] = c
        else:
            raise WrongPhase(f"{domain} arrived in phase {self.phase}")

    def ready(self, now: float, live: set[str]) -> bool:
        owed = live - set(self.commits if self.phase == "commit" else self.revealed)
        if self.phase == "reveal":
            owed &= set(self.commits)
        return now >= self.deadline or not owed

    def advance(self, now: float) -> Notice | Outcome:
        if self.phase == "commit":
            self.phase, self.deadline = "reveal", now + self.phase_timeout
            return Notice("reveal")
        n = len(self.revealed)
        if n < self.min_peers:
            return Outcome("failed", n, {"error": f"quorum not met: {n} < {self.min_peers}"})
        return Outcome("published", n, self.workload.aggregate(self.revealed))

    def accepted_count(self) -> int:
        return len(self.revealed)


class CommitRevealPeerRound(PeerRound):
    phases = ("reveal",)
    offload = False

    def __init__(self, contribution: bytes):
        self.contribution, self.salt = contribution, os.urandom(16)

    def start(self) -> Outgoing:
        return [(COMMIT, encode(Commit(commitment(self.contribution, self.salt))))]

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return [(REVEAL, encode(Reveal(self.contribution, self.salt)))]


class CommitRevealMode(Mode):
    name = "commitreveal"
    min_participants = 2
    domains = frozenset({COMMIT, REVEAL})

    def open(self, setup: Setup) -> Opening:
        t = setup.settings.phase_timeout
        rnd = CommitRevealRound(setup.number, setup.workload, setup.now + t, t,
                                setup.settings.min_peers)
        return Opening(rnd, setup.now + 2 * t)

    def participants(self, announce: RoundAnnounce) -> list[str] | None:
        return None  # every admitted peer

    def peer_round(self, ctx: PeerContext) -> PeerRound:
        return CommitRevealPeerRound(encode(ctx.workload.contribute(ctx.announce, ctx.data,
                                                                    ctx.blobs)))


rounds.register(CommitRevealMode())  # the one registry line


async def test_a_mode_defined_in_a_test_runs_over_libp2p_unchanged(data_dir):
    inputs = [(160.5, 55.0), (172.0, 68.5), (181.25, 90.0)]
    async with trio.open_nursery() as nursery:
        coord = await start_coordinator(nursery, data_dir, min_peers=3, max_rounds=2,
                                        mode="commitreveal", phase_timeout=10.0)
        boot = coord.node.addrs[0]
        peers = [await start_peer(nursery, [boot], h, w) for h, w in inputs]
        await wait_for(lambda: coord.rounds_run >= 2, timeout=40)
        await wait_for(lambda: all(p.roundlog.has(RESULT, 2) for p in peers), timeout=10)
        async with httpx.AsyncClient() as http:
            views = [(await http.get(f"{coord.http_url}/rounds/{n}")).json() for n in (1, 2)]
        announced = {decode(peek(peers[0].roundlog.get(ANNOUNCE, n)).payload,
                            RoundAnnounce).mode for n in (1, 2)}
        nursery.cancel_scope.cancel()
    assert announced == {"commitreveal"}
    mean_h = math.fsum(h for h, _ in inputs) / len(inputs)
    for view in views:
        assert view["status"] == "published", view
        assert view["accepted"] == 3
        assert math.isclose(view["result"]["mean_height"], mean_h, rel_tol=1e-9)
