"""The verified round mode: a small vector summed with range checks (protocol.crypto.vss).

For workloads whose input is a few bounded numbers (``Workload.range_bounds``:
the seed's height and weight): every input is proven to lie in its range
before it is counted, which SecAgg+ cannot do, and the coordinator still
learns only the sum.

Phases, their peer message domains, and what closing each one sends:

=========  ==================  ===================================================
phase      peers send          when it closes, the coordinator sends
=========  ==================  ===================================================
keys       ``vss/keys``        notice ``deal``: the keys (the committee is drawn
           (everyone)          again from those that sent one: silent participants
                               are left out)
deal       ``vss/deal``        notice ``check`` (empty); each member's own
           (everyone)          inbox and every accepted dealing's commitments
                               (personal: only members read them)
check      ``vss/check``       notice ``resolve``: the accused dealers
           (members)
resolve    ``vss/resolve``     notice ``aggregate``: the included dealers and the
           (the accused)       revealed shares
aggregate  ``vss/aggregate``   the round's result (decoded sum, finalized)
           (members)
=========  ==================  ===================================================

A phase closes when everyone expected in it who is connected has sent, or
at the phase deadline. Like a SecAgg+ round, a verified round cannot be
resumed after a coordinator restart (members' shares were never stored).

With DP on, each peer adds its share of Gaussian noise before encoding, and
the range each input is proven to lie in widens by ``DP_TAILS`` standard
deviations of that share on each side: what a malicious peer can add is
then bounded by the noise's own scale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from ..crypto import dp, vss
from ..wire.messages import RoundAnnounce, Strict, decode, encode
from .base import Mode, Notice, Opening, Outgoing, PeerContext, PeerRound, RoundMisuse, Setup
from .server import ServerRound, leaving, noised_input

if TYPE_CHECKING:
    from ..learning.workloads import Workload

KEYS, DEAL, CHECK, RESOLVE, AGGREGATE = "keys", "deal", "check", "resolve", "aggregate"
PHASES = (KEYS, DEAL, CHECK, RESOLVE, AGGREGATE)
MEMBERS_ONLY = (AGGREGATE,)  # notices whose bodies (the inclusion) only committee
# members read; the commitments, which only they read too, come in their personal
# check message (MemberCheck), not in a body every dealer would fetch by digest
DOMAIN = {p: f"vss/{p}" for p in PHASES}
SCHEMA: dict[str, type[Strict]] = {
    KEYS: vss.MemberKey, DEAL: vss.Dealing, CHECK: vss.Accusations, RESOLVE: vss.Reveal,
    AGGREGATE: vss.AggregateShare}
MODE_NAME = "vss"
DP_TAILS = 6.0  # noise beyond 6 standard deviations is clipped: P < 2e-9 per coordinate
MAX_PARTICIPANTS = 300  # dealers per round (each member tests all their shares)
PeerId = Annotated[str, msgspec.Meta(max_length=64)]
Float = Annotated[float, msgspec.Meta(ge=-1e12, le=1e12)]


class VerifiedParams(Strict):
    """Everything a peer needs to join a verified round, carried in the announcement."""

    participants: Annotated[list[PeerId], msgspec.Meta(max_length=MAX_PARTICIPANTS)]
    committee: Annotated[list[PeerId], msgspec.Meta(max_length=vss.MAX_THRESHOLD)]
    threshold: int
    low: Annotated[list[Float], msgspec.Meta(max_length=vss.MAX_DIM)]
    high: Annotated[list[Float], msgspec.Meta(max_length=vss.MAX_DIM)]
    bits: int
    min_included: int
    dp_sigma: float = 0.0  # std of the total Gaussian noise on the sum; 0: no DP
    dp_split: int = 1  # each peer adds noise of std dp_sigma / sqrt(dp_split)
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    # 0: the committee is as announced; else every participant advertises a key and the
    # committee is drawn again, with ``seed``, from those that did (vss.VssConfig.restricted)
    replan: float = 0.0
    seed: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    committee_size: int = 16


def committee_seed(prev_state_digest: bytes, round: int) -> bytes:
    """Public, unpredictable before the previous result exists: picks the committee."""
    return hashlib.sha256(b"hypergossip/committee/v1" + prev_state_digest +
                          round.to_bytes(8, "big")).digest()


def make_params(workload: Workload, round: int, participants: list[str], prev_digest: bytes,
                *, dropout: float = 0.3, min_peers: int = 1, dp_epsilon: float = 0.0,
                dp_delta: float = 1e-5, committee_size: int = 16,
                bits: int = 14) -> VerifiedParams:
    bounds = workload.range_bounds()
    if bounds is None:
        raise ValueError(f"workload {workload.name} has no input ranges to check")
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    seed = committee_seed(prev_digest, round)
    # every dealing's commitments travel in one notice: above what fits, a seeded draw
    # picks who takes part this round (another round, another draw)
    cap = min(MAX_PARTICIPANTS, vss.max_dealers(len(low), committee_size))  # threshold <= size
    if len(participants) > cap:
        participants = vss.rank(participants, seed + b"participants")[:cap]
    sigma, split = 0.0, max(1, min_peers)
    if dp_epsilon:
        sigma, split = dp.calibrate(dp_epsilon, dp_delta, workload.sensitivity(), min_peers)
        tails = DP_TAILS * sigma / split**0.5
        low, high = low - tails, high + tails
    cfg = vss.VssConfig.default(round, participants, seed, low.tolist(), high.tolist(), bits=bits,
                             committee_size=committee_size, dropout=dropout,
                             min_included=max(2, min_peers), replan=True)
    return VerifiedParams(list(cfg.participants), list(cfg.committee), cfg.threshold,
                          list(cfg.low), list(cfg.high), cfg.bits, cfg.min_included, sigma,
                          split, dp_epsilon, dp_delta if dp_epsilon else 0.0, cfg.replan,
                          cfg.seed, cfg.committee_size)


def config(round: int, p: VerifiedParams) -> vss.VssConfig:
    return vss.VssConfig(round, tuple(p.participants), tuple(p.committee), p.threshold,
                      tuple(p.low), tuple(p.high), p.bits, p.min_included, p.replan, p.seed,
                      p.committee_size)


class VerifiedRound(ServerRound):
    phases, domain, schema = PHASES, DOMAIN, SCHEMA
    aborted, what = vss.VssAbort, "verified aggregation"
    server: vss.VssServer
    cfg: vss.VssConfig

    def start(self, number: int, params: VerifiedParams) -> tuple[vss.VssConfig, vss.VssServer]:
        cfg = config(number, params)
        return cfg, vss.VssServer(cfg)

    def receivers(self) -> dict[str, Callable[[str, Any], None]]:
        s = self.server
        return {KEYS: s.receive_key, DEAL: s.receive_dealing, CHECK: s.receive_accusations,
                RESOLVE: s.receive_reveal, AGGREGATE: s.receive_aggregate}

    def waiting_for(self) -> set[str]:
        s, members = self.server, set(self.server.members)
        before, now = {KEYS: (set(self.cfg.participants if self.cfg.replan else
                                  self.cfg.committee), s.keys),
                       DEAL: (set(self.cfg.participants), s.dealings),
                       CHECK: (members, s.accusations), RESOLVE: (set(s.disputes), s.reveals),
                       AGGREGATE: (members, s.aggregates)}[self.phase]
        return before - set(now) - s.refused[s.phase]  # a refused message is not resent

    def accepted_count(self) -> int:
        return len(self.server.included or self.server.dealings)

    def close(self, phase: str) -> Notice:
        s = self.server
        if phase == KEYS:
            return Notice(DEAL, body=encode(s.close_keys()))
        if phase == DEAL:
            body, inboxes = s.close_deal()
            return Notice(CHECK, personal={m: encode(MemberCheck(body, i))
                                           for m, i in inboxes.items()})
        if phase == CHECK:
            return Notice(RESOLVE, body=encode(s.close_check()))
        return Notice(AGGREGATE, body=encode(s.close_resolve()))

    def finish(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        out = self.server.close_aggregate()
        n = len(out.included)
        return out.total, out.included, {
            "protocol": "Pedersen VSS to a committee, range-proven inputs",
            "participants": len(self.announced.participants),
            "members": len(self.cfg.participants),  # those that advertised keys
            "survivors": n,
            "included": out.included,  # whose inputs the sum holds (not what they were)
            "committee": len(self.cfg.committee), "threshold": self.cfg.threshold,
            "members_answered": out.members,
            "range": {"low": list(self.cfg.low), "high": list(self.cfg.high),
                      "bits": self.cfg.bits},
            "quantization_error_bound": self.cfg.error_bound(n),
            "rejected": out.rejected, "disqualified": out.disqualified}


class MemberCheck(Strict):
    """Coordinator -> a committee member, the check phase's personal message: every
    accepted dealing's commitments and the shares sealed to this member. Only members
    read the commitments (O(N): ~850 B a dealer, 255 KB for a cohort of 300), so they
    go to the committee alone; as a notice body fetched by digest they held a round of
    100 for 30 s while the few members fetching found nobody else holding it."""

    commitments: vss.Commitments
    inbox: vss.MemberInbox


class VerifiedPeerRound(PeerRound):
    phases = (DEAL, CHECK, RESOLVE, AGGREGATE)
    offload = True  # a member tests every dealer's shares: tenths of a second at N=100

    def __init__(self, peer_id: str, workload: Workload, announce: RoundAnnounce,
                 vector: np.ndarray):
        """``vector``: this peer's input (unbounded; it is bounded and, with DP on, noised
        here, then proven to lie in the announced range)."""
        self.params = decode(announce.params, VerifiedParams)
        self.cfg = config(announce.round, self.params)
        self.workload, self.vector = workload, np.asarray(vector, dtype=np.float64)
        self.client = vss.VssClient(peer_id, self.cfg)

    def start(self) -> Outgoing:
        key = self.client.advertise()
        return [] if key is None else [(DOMAIN[KEYS], encode(key))]

    def needs_personal(self, phase: str) -> bool:
        return phase == CHECK and self.client.member

    def needs_body(self, phase: str) -> bool:
        return self.client.member or phase not in MEMBERS_ONLY

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return leaving(vss.VssAbort, lambda: self._step(phase, body, personal))

    def _step(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        out: msgspec.Struct | None
        if phase == DEAL:
            x = noised_input(self.workload, self.vector, self.params)
            out = self.client.deal(decode(body, vss.MemberKeys), x)
        elif phase == CHECK:
            mine = decode(personal, MemberCheck) if personal is not None else \
                MemberCheck(vss.Commitments(dealers={}, dealer_pks={}),
                            vss.MemberInbox(ciphertexts={}))
            out = self.client.check(mine.commitments, mine.inbox)
        elif phase == RESOLVE:
            out = self.client.reveal(decode(body, vss.Disputes))
        elif phase == AGGREGATE:
            out = self.client.aggregate(decode(body, vss.Inclusion) if self.client.member
                                        else vss.Inclusion(included=[], revealed={}))
        else:
            raise RoundMisuse(f"unknown phase {phase!r}")
        return [] if out is None else [(DOMAIN[phase], encode(out))]


class VssMode(Mode):
    """Range-proven inputs summed by a committee: the default secure mode for workloads
    whose inputs are a few bounded numbers (``Workload.range_bounds``)."""

    name = MODE_NAME
    min_participants = 2
    domains = frozenset(DOMAIN.values())

    def serves(self, workload: Workload) -> bool:
        return workload.range_bounds() is not None

    def open(self, setup: Setup) -> Opening:
        s = setup.settings
        params = make_params(setup.workload, setup.number, setup.participants,
                             setup.prev_digest, min_peers=s.min_peers,
                             dp_epsilon=s.dp_epsilon, dp_delta=s.dp_delta,
                             committee_size=s.vss_committee, bits=s.vss_bits)
        notes = []
        if len(params.participants) < len(setup.participants):
            notes.append(f"{len(setup.participants)} peers; a vss round takes "
                         f"{len(params.participants)} (a seeded draw), the others sit this "
                         "one out")
        rnd = VerifiedRound(setup.number, setup.workload, params, min_peers=s.min_peers,
                            phase_timeout=s.phase_timeout, now=setup.now)
        return Opening(rnd, setup.now + 5 * s.phase_timeout, params=encode(params),
                       participants=setup.participants, asked=list(params.participants),
                       notes=notes)

    def replay(self, announce: RoundAnnounce, workload: Workload) -> VerifiedRound:
        return VerifiedRound(announce.round, workload, decode(announce.params, VerifiedParams),
                             min_peers=announce.min_peers, phase_timeout=0.0, now=0.0)

    def participants(self, announce: RoundAnnounce) -> list[str]:
        return decode(announce.params, VerifiedParams).participants

    def peer_round(self, ctx: PeerContext) -> VerifiedPeerRound:
        x = ctx.workload.vector(ctx.announce, ctx.data, ctx.blobs)
        return VerifiedPeerRound(ctx.peer_id, ctx.workload, ctx.announce, x)


MODE = VssMode()
