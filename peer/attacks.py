"""Byzantine behaviours: real peers that lie in one specific way (testnet ``--attack``).

Each behaviour changes only what a lying peer would control: the weights it
claims for a segment, how it signs, or what it copies from gossip. Everything
else (enrolment, transport, phases) is the honest daemon's, so an attack
exercises the same code paths and the coordinator sees genuine messages.

=========  ======================================================================
name       what the peer does
=========  ======================================================================
random     claims random weights for its segments
collude    all attackers claim the same wrong weights (derived from round and
           segment, so they agree without talking): the seed's "two equal
           values" rule accepts this when two of them share a segment
copy       trains nothing; copies a co-replica's commitment and, later, its
           reveal, both read from the replica gossip topic
replay     claims the older accepted model it started from (no work done) and
           re-sends its previous round's messages verbatim
stale      signs its messages for the previous round
forge      sends its messages with a broken signature
signflip   trains, then claims ``start - 4 * (trained - start)``
fakescore  prompt search: answers evaluations with made-up outputs instead of the
           LLM's (the prompt plus glowing words, to inflate the scores it reports)
outofrange secure stats rounds: adds 10^6 to its height, outside every range, as a
           malicious client of a secure sum can: under SecAgg+ by adding it to its
           masked vector (the ring has room), under vss by committing to it and
           sending the range proof of its true value (no valid one exists)
alie       "A Little Is Enough" (Baruch et al. 2019): trains every segment of the
           round, claims ``mean - z * std`` of the honest updates
=========  ======================================================================

Fedavg peers lie with the attacks of :mod:`peer.fedavg_attacks` (signflip, boost,
maxcoord, ring, boundflip, alie, ipm, nonfinite, labelflip), in clear, secagg and robust
rounds alike; :data:`BY_WORKLOAD` says which names apply to which workload.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable

import msgspec
import numpy as np
import trio

from protocol.crypto import secagg, vss
from protocol.learning import incremental as learning
from protocol.learning.replicable import TaskParams
from protocol.rounds import replica, secure, verified
from protocol.rounds import replicated as inc
from protocol.rounds.base import Mode, Outgoing, PeerContext, PeerRound
from protocol.wire.envelope import Envelope, RejectedMessage, open_envelope, seal
from protocol.wire.identity import Identity
from protocol.wire.messages import RoundAnnounce, decode, encode

from .behaviour import Behaviour
from .fedavg_attacks import FEDAVG_ATTACKS, OMNISCIENT, FedAvgLiar, knowing, shards_of

log = logging.getLogger("hypergossip.attack")

INCREMENTAL_ATTACKS = ("random", "collude", "copy", "replay", "stale", "forge", "signflip",
                       "alie")
BY_WORKLOAD = {"incremental": INCREMENTAL_ATTACKS, "prompt": ("fakescore",),
               "stats": ("outofrange",), "fedavg": FEDAVG_ATTACKS}
ATTACKS = tuple(dict.fromkeys(a for names in BY_WORKLOAD.values() for a in names))
SECURE_ATTACKS = ("outofrange",)  # the ones that lie inside secure (stats) rounds
INFLATE = 1e6  # outofrange: what it adds to its first coordinate (a height, in cm)
SIGNFLIP_SCALE = 4.0
COPY_WAIT = 4.0  # seconds a copier waits to see a co-replica's message on gossip


class Attack(Behaviour):
    """A peer that lies in one way (:data:`ATTACKS`); honest everywhere else."""

    def __init__(self, name: str, *, colluders: int = 2, workload: str = "",
                 data: str = ""):
        """``workload`` and ``data`` (this peer's ``--data``) pick and arm a fedavg lie:
        the omniscient ones rebuild every shard from it and take the last ``colluders``
        of them to be the liars' (as the testnet places them)."""
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {ATTACKS}")
        self.name, self.colluders = name, colluders
        self.fedavg: FedAvgLiar | None = None
        if workload == "fedavg":
            if name not in FEDAVG_ATTACKS:
                raise ValueError(f"fedavg peers lie with {FEDAVG_ATTACKS}, not {name!r}")
            shards = shards_of(data)
            n = len(shards)
            know = knowing(shards, set(range(n - colluders, n))) if name in OMNISCIENT else None
            self.fedavg = FedAvgLiar(name, peers=n, colluders=colluders, knowledge=know)
        # copy: what the replica gossip showed us, (round, segment) -> {peer: item}
        self.seen_commits: dict[tuple[int, int], dict[str, bytes]] = {}
        self.seen_reveals: dict[tuple[int, int], dict[str, replica.RevealItem]] = {}
        self.sent: dict[int, list[bytes]] = {}  # replay: our wires by round

    # --- which round we run ------------------------------------------------------------------
    def peer_round(self, mode: Mode, ctx: PeerContext) -> PeerRound:
        """The lying peer's side of a round, where this attack lies in ``mode``."""
        if self.fedavg is not None:
            return self.fedavg.peer_round(mode, ctx)
        lie = {secure.MODE.name: self._secure_round, verified.MODE.name: self._verified_round,
               inc.MODE.name: self._replica_round}.get(mode.name)
        return lie(ctx) if lie is not None else mode.peer_round(ctx)

    def _secure_round(self, ctx: PeerContext) -> PeerRound:
        if self.name not in SECURE_ATTACKS:
            return secure.MODE.peer_round(ctx)
        x = ctx.workload.vector(ctx.announce, ctx.data, ctx.blobs)
        return _InflatingSecure(ctx.peer_id, ctx.workload, ctx.announce, x, ctx.sign)

    def _verified_round(self, ctx: PeerContext) -> PeerRound:
        rnd = verified.MODE.peer_round(ctx)
        if self.name in SECURE_ATTACKS:
            rnd.client = _InflatingDealer(ctx.peer_id, rnd.cfg)
        return rnd

    def _replica_round(self, ctx: PeerContext) -> PeerRound:
        if self.name == "copy":
            return CopyPeerRound(self, ctx.peer_id, ctx.announce)
        return replica.ReplicaPeerRound(ctx.peer_id, ctx.workload, ctx.announce,  # type: ignore[arg-type]
                                        ctx.data, ctx.blobs, claim=self.claim)

    # --- what we claim ---------------------------------------------------------------------
    def claim(self, pr: replica.ReplicaPeerRound, segment: int,
              train: Callable[[], np.ndarray]) -> np.ndarray:
        """The weights this attacker reports for ``segment`` (an ``replica.Claim``)."""
        start = pr.start_weights
        if self.name == "random":
            return np.random.default_rng().normal(0, 0.1, start.shape).astype(np.float32)
        if self.name == "collude":
            seed = hashlib.sha256(b"collude" + pr.round.to_bytes(8, "big") +
                                  segment.to_bytes(4, "big")).digest()
            rng = np.random.default_rng(int.from_bytes(seed[:8], "big"))
            return (start + rng.normal(0, 0.05, start.shape)).astype(np.float32)
        if self.name == "replay":
            return start
        if self.name == "signflip":
            return (start - SIGNFLIP_SCALE * (train() - start)).astype(np.float32)
        if self.name == "alie":
            return self._alie(start, pr.ds, pr.params, pr.round)
        return train()

    def _alie(self, start: np.ndarray, ds, params: TaskParams,
              round: int) -> np.ndarray:
        updates = np.stack([learning.train_segment(start, ds, params, round, k).astype(np.float64)
                            - start for k in range(params.segments)])
        z = learning.alie_z(params.segments, self.colluders)
        return (start + updates.mean(0) - z * updates.std(0)).astype(np.float32)

    # --- how we sign -------------------------------------------------------------------------
    def seal(self, identity: Identity, domain: str, round: int, payload: bytes) -> bytes:
        if self.name == "stale":
            return seal(identity, domain, max(round - 1, 0), payload)
        wire = seal(identity, domain, round, payload)
        if self.name == "forge":
            env = msgspec.msgpack.decode(wire, type=Envelope)
            sig = bytes([env.signature[0] ^ 1]) + env.signature[1:]
            return msgspec.msgpack.encode(msgspec.structs.replace(env, signature=sig))
        return wire

    def extra_wires(self, round: int, wire: bytes) -> list[bytes]:
        """replay: after each message, re-send the previous round's messages verbatim."""
        if self.name != "replay":
            return []
        self.sent.setdefault(round, []).append(wire)
        for old in [r for r in self.sent if r < round - 4]:
            del self.sent[old]
        return list(self.sent.get(round - 1, []))

    # --- prompt evaluations ---------------------------------------------------------------------
    def outputs(self, prompts: list[str], outputs: list[str]) -> list[str]:
        if self.name != "fakescore":
            return outputs
        return [f"{p} - amazing, wonderful, perfect" for p in prompts]

    # --- copy ---------------------------------------------------------------------------------
    def observe(self, wire: bytes) -> None:
        """A signed commit or reveal seen on the replica gossip topic."""
        try:
            env = open_envelope(wire, domains=replica.DOMAINS)
            if env.domain == replica.DOMAIN_COMMIT:
                for c in decode(env.payload, replica.Commits).items:
                    self.seen_commits.setdefault((env.round, c.segment), {})[
                        env.sender_id] = c.commitment
            else:
                for r in decode(env.payload, replica.Reveals).items:
                    self.seen_reveals.setdefault((env.round, r.segment), {})[env.sender_id] = r
        except RejectedMessage as exc:
            log.debug("replica gossip not understood: %s", exc)


class CopyPeerRound(PeerRound):
    """A lazy replica: no training; it copies what its co-replicas gossip. Commit-reveal
    defeats it: a commitment binds the committer's peer id, so a copied commitment is
    never opened by a reveal from another peer."""

    def __init__(self, attack: Attack, peer_id: str, announce: RoundAnnounce):
        self.attack, self.peer_id, self.round = attack, peer_id, announce.round
        self.params = decode(announce.workload_params, TaskParams)
        self.tasks = [k for k, reps in enumerate(self.params.assignment) if peer_id in reps]
        self.phases = (replica.REVEAL,)

    def blobs(self) -> list[bytes]:
        return []

    async def before_step(self, step: str) -> None:
        seen = self.attack.seen_commits if step == "start" else self.attack.seen_reveals
        with trio.move_on_after(COPY_WAIT):
            while not all(self._others(seen, k) for k in self.tasks):
                await trio.sleep(0.1)

    def _others(self, seen: dict, k: int) -> dict:
        return {p: v for p, v in seen.get((self.round, k), {}).items() if p != self.peer_id}

    def start(self) -> Outgoing:
        items = []
        for k in self.tasks:
            others = self._others(self.attack.seen_commits, k)
            value = next(iter(others.values())) if others else os.urandom(32)
            items.append(replica.CommitItem(k, value))
        return [(replica.DOMAIN_COMMIT, encode(replica.Commits(items)))] if items else []

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        if phase != replica.REVEAL:
            return []
        items = [next(iter(o.values())) for k in self.tasks
                 if (o := self._others(self.attack.seen_reveals, k))]
        log.warning("round %d: copying %d reveals from co-replicas", self.round, len(items))
        return [(replica.DOMAIN_REVEAL, encode(replica.Reveals(items)))] if items else []


# --- outofrange: a secure-sum client with an input outside its range -------------------------
class _InflatingDealer(vss.VssClient):
    """Commits to (and shares) its encoded value plus INFLATE; no range proof exists for
    it, so it sends the proof of its true value."""

    def deal(self, directory: vss.MemberKeys, x: np.ndarray) -> vss.Dealing:
        self._true = self.cfg.encode(x)
        values = list(self._true)
        values[0] += int(INFLATE * float(self.cfg.scales[0]))
        return self._deal(directory, values)

    def _prove(self, j: int, v: int, r: int) -> list:
        return super()._prove(j, self._true[j], r)


class _InflatingSecure(secure.SecurePeerRound):
    """Adds INFLATE (fixed-point encoded) to its masked vector: the masks still cancel, so
    the sum carries it, and nothing in SecAgg+ can tell."""

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        out = super().on_notice(phase, body, personal)
        if phase != secure.MASKED:
            return out
        enc = self.cfg.encoding
        y = np.frombuffer(decode(out[0][1], secagg.MaskedInput).vector,
                          dtype=enc.wire_dtype).astype(enc.dtype)
        y[0] = (int(y[0]) + int(INFLATE * enc.scale)) % 2**enc.bits  # ring arithmetic
        return [(out[0][0], encode(secagg.MaskedInput(
            vector=y.astype(enc.wire_dtype).tobytes())))]

