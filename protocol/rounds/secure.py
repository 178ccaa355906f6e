"""The secure round mode: a workload's vectors summed under SecAgg+ (protocol.crypto.secagg).

Phases, their peer message domains, and what closing each one sends:

===========  =======================  ==========================================
phase        peers send (domain)      when it closes, the coordinator sends
===========  =======================  ==========================================
keys         ``secagg/keys``          notice ``shares``: who advertised no keys +
                                      each peer's own and its neighbours' keys
shares       ``secagg/shares``        notice ``masked`` + each peer's own inbox
masked       ``secagg/masked``        notice ``consistency``: the survivor list
consistency  ``secagg/consistency``   notice ``unmask``: ``agreement`` signatures
                                      on the list, by survivor index
unmask       ``secagg/unmask``        the round's result (decoded sum, finalized)
===========  =======================  ==========================================

What every peer gets stays small as N grows (a peer reads O(degree) keys, not the
O(N) directory; the signatures come without the list each survivor holds), so up to
about 1,200 participants no notice body is over ``NOTICE_INLINE_MAX`` and none is
fetched by digest (at N=500 the two were 90 and 86 KB blobs fetched by every peer,
which took 64 s on average on one machine).

A phase closes when every participant still in play that is connected has
sent, or at the phase deadline; peers that miss a phase are dropouts and
the protocol recovers their masks. Participants silent in the keys phase are
not dropouts: the round is re-planned over those that advertised keys
(``SecureParams.replan``), so any number of silent members is survived as
long as two participants (and the quorum) answer. A round cannot be resumed after a
coordinator restart (the SecAgg server state is deliberately not persisted:
it would hold every share) -- it is marked failed and a new one opens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np

from ..crypto import dp, secagg
from ..crypto.fixedpoint import FixedPoint
from ..crypto.vss.config import rank
from ..wire.messages import RoundAnnounce, Strict, decode, encode
from .base import Mode, Notice, Opening, Outgoing, PeerContext, PeerRound, RoundMisuse, Setup
from .server import ServerRound, leaving, noised_input

if TYPE_CHECKING:
    from ..learning.workloads import Workload

KEYS, SHARES, MASKED, CONSISTENCY, UNMASK = "keys", "shares", "masked", "consistency", "unmask"
PHASES = (KEYS, SHARES, MASKED, CONSISTENCY, UNMASK)
DOMAIN = {p: f"secagg/{p}" for p in PHASES}
SCHEMA: dict[str, type[Strict]] = {
    KEYS: secagg.AdvertiseKeys, SHARES: secagg.ShareBundle, MASKED: secagg.MaskedInput,
    CONSISTENCY: secagg.ConsistencySignature, UNMASK: secagg.UnmaskShares}
PeerId = Annotated[str, msgspec.Meta(max_length=64)]


# members of one round: above this many live peers a seeded draw picks them (a cohort, as
# federated learning at scale samples its clients; another round, another draw). The
# announcement lists them (5,000 ids are ~270 KB of its 400 KB).
MAX_MEMBERS = 5000


class SecureParams(Strict):
    """Everything a peer needs to join a secure round, carried in the announcement."""

    participants: Annotated[list[PeerId], msgspec.Meta(max_length=MAX_MEMBERS)]
    degree: int
    threshold: int
    graph_seed: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    vector_len: Annotated[int, msgspec.Meta(ge=1, le=16 * 1024 * 1024)]
    clip: float
    bits: int
    max_summands: int
    dp_sigma: float = 0.0  # std of the total Gaussian noise on the sum; 0: no DP
    dp_split: int = 1  # each peer adds noise of std dp_sigma / sqrt(dp_split)
    dp_epsilon: float = 0.0  # the per-round target it was calibrated to
    dp_delta: float = 0.0
    agreement: int = 0  # survivor signatures needed before unmasking; 0: threshold
    # 0: the participants are the members; else the round goes on with those that advertise
    # keys, re-planned for this dropout fraction (secagg.SecAggConfig.restricted)
    replan: float = 0.0


def graph_seed(prev_state_digest: bytes, round: int) -> bytes:
    """Public, unpredictable before the previous result exists: fixes the SecAgg+ graph."""
    return hashlib.sha256(b"hypergossip/graph/v1" + prev_state_digest +
                          round.to_bytes(8, "big")).digest()


def make_params(workload: Workload, round: int, participants: list[str], prev_digest: bytes,
                *, max_summands: int = 10_000, dropout: float = 0.3, min_peers: int = 1,
                dp_epsilon: float = 0.0, dp_delta: float = 1e-5, degree: int | None = None,
                threshold: int | None = None, agreement: int | None = None) -> SecureParams:
    """Round parameters; with ``dp_epsilon`` the noise is calibrated so that one round is
    (dp_epsilon, dp_delta)-DP as long as ``min_peers`` peers survive (see protocol.crypto.dp).
    ``degree``, ``threshold`` and ``agreement`` override :meth:`secagg.SecAggConfig.default`'s."""
    sigma, split, headroom = 0.0, max(1, min_peers), 0.0
    if dp_epsilon:
        sigma, split = dp.calibrate(dp_epsilon, dp_delta, workload.sensitivity(), min_peers)
        headroom = 10 * sigma / split**0.5  # noise tails must not be clipped by the encoding
    enc = FixedPoint(workload.clip + headroom, max_summands, workload.ring_bits)
    if len(participants) > MAX_MEMBERS:
        participants = rank(participants, graph_seed(prev_digest, round) + b"members")[
            :MAX_MEMBERS]
    replan = degree is None and threshold is None and agreement is None  # the default rule
    cfg = secagg.SecAggConfig.default(round, participants, graph_seed(prev_digest, round),
                                workload.vector_len(), enc, dropout=dropout, degree=degree,
                                threshold=threshold, agreement=agreement, replan=replan)
    return SecureParams(list(cfg.participants), cfg.degree, cfg.threshold, cfg.graph_seed,
                        cfg.vector_len, enc.clip, enc.bits, enc.max_summands, sigma, split,
                        dp_epsilon, dp_delta if dp_epsilon else 0.0, cfg.agreement, cfg.replan)


def config(round: int, p: SecureParams) -> secagg.SecAggConfig:
    return secagg.SecAggConfig(round, tuple(p.participants), p.degree, p.threshold, p.graph_seed,
                         p.vector_len, FixedPoint(p.clip, p.max_summands, p.bits), p.agreement,
                         p.replan)


def compact(request: secagg.UnmaskRequest, agreement: int) -> secagg.SurvivorSignatures:
    """The unmask notice's wire form: ``agreement`` signatures, by index in the sorted
    survivor list (each survivor holds that list: it signed it)."""
    index = {p: i for i, p in enumerate(sorted(request.survivors))}
    signed = sorted((index[p], sig) for p, sig in request.signatures.items() if p in index)
    signed = signed[:agreement]
    return secagg.SurvivorSignatures(signers=[i for i, _ in signed],
                                     signatures=[sig for _, sig in signed])


def survivor_bits(survivors: secagg.SurvivorList, participants: list[str]
                  ) -> secagg.SurvivorBits:
    """The consistency notice's wire form: one bit per announced participant."""
    bits = bytearray((len(participants) + 7) // 8)
    chosen = set(survivors.survivors)
    for i, p in enumerate(participants):
        if p in chosen:
            bits[i // 8] |= 0x80 >> (i % 8)
    return secagg.SurvivorBits(bits=bytes(bits))


def survivors_of(wire: secagg.SurvivorBits, participants: list[str]) -> secagg.SurvivorList:
    """The survivor list a participant holding the announced ``participants`` reads."""
    if len(wire.bits) != (len(participants) + 7) // 8:
        raise secagg.SecAggAbort(f"the survivor bitmap has {len(wire.bits)} bytes for "
                                 f"{len(participants)} participants")
    return secagg.SurvivorList(survivors=sorted(
        p for i, p in enumerate(participants) if wire.bits[i // 8] & (0x80 >> (i % 8))))


def expand(wire: secagg.SurvivorSignatures, survivors: list[str]) -> secagg.UnmaskRequest:
    """The request a survivor holding ``survivors`` (the sorted list it signed) acts on;
    an index off the list is dropped (its signature cannot count)."""
    if len(wire.signers) != len(wire.signatures):
        raise secagg.SecAggAbort("the unmask notice's signers and signatures differ in number")
    return secagg.UnmaskRequest(survivors=survivors, signatures={
        survivors[i]: sig for i, sig in zip(wire.signers, wire.signatures, strict=True)
        if i < len(survivors)})


class SecureRound(ServerRound):
    phases, domain, schema = PHASES, DOMAIN, SCHEMA
    aborted, what = secagg.SecAggAbort, "secure aggregation"
    server: secagg.SecAggServer
    cfg: secagg.SecAggConfig

    def start(self, number: int, params: SecureParams
              ) -> tuple[secagg.SecAggConfig, secagg.SecAggServer]:
        cfg = config(number, params)
        return cfg, secagg.SecAggServer(cfg)

    def receivers(self) -> dict[str, Callable[[str, Any], None]]:
        s = self.server
        return {KEYS: s.receive_keys, SHARES: s.receive_shares, MASKED: s.receive_masked,
                CONSISTENCY: s.receive_consistency, UNMASK: s.receive_unmask}

    def waiting_for(self) -> set[str]:
        s = self.server
        before, now = {KEYS: (set(self.cfg.participants), s.keys),
                       SHARES: (set(s.keys), s.bundles), MASKED: (set(s.bundles), s.masked),
                       CONSISTENCY: (set(s.masked), s.signatures),
                       UNMASK: (set(s.signatures), s.unmask_replies)}[self.phase]
        return before - set(now)

    def accepted_count(self) -> int:
        return len(self.server.masked)

    def close(self, phase: str) -> Notice:
        s = self.server
        if phase == KEYS:
            keys = s.close_keys().keys
            missing = [p for p in self.announced.participants if p not in keys]
            return Notice(SHARES, body=encode(secagg.Advertised(missing=missing)),
                          personal={p: encode(d) for p, d in s.directories().items()})
        if phase == SHARES:
            return Notice(MASKED, personal={p: encode(i) for p, i in s.close_shares().items()})
        if phase == MASKED:
            return Notice(CONSISTENCY, body=encode(survivor_bits(
                s.close_masked(), self.announced.participants)))
        return Notice(UNMASK, body=encode(compact(s.close_consistency(), self.cfg.agreement)))

    def finish(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        out = self.server.close_unmask()
        n = len(out.survivors)
        return out.total, out.survivors, {
            "protocol": "SecAgg+ (Bell et al. 2020)",
            "participants": len(self.announced.participants),
            "members": len(self.cfg.participants),  # those that advertised keys
            "survivors": n, "dropped": len(out.dropped), "degree": self.cfg.degree,
            "included": out.survivors,  # whose inputs the sum holds (not what they were)
            "threshold": self.cfg.threshold, "agreement": self.cfg.agreement,
            "quantization_error_bound": self.cfg.encoding.error_bound(n),
            "bad_shares": out.bad_shares, "rejected": out.rejected}


class SecurePeerRound(PeerRound):
    phases = (SHARES, MASKED, CONSISTENCY, UNMASK)
    offload = False  # milliseconds per phase (sparse graphs) to tens of them (complete)

    def __init__(self, peer_id: str, workload: Workload, announce: RoundAnnounce,
                 vector: np.ndarray, sign: Callable[[bytes], bytes]):
        """``vector``: what the workload computed for this peer this round (unbounded; it
        is bounded and, with DP on, noised here)."""
        self.params = decode(announce.params, SecureParams)
        self.cfg = config(announce.round, self.params)
        self.workload, self.vector = workload, np.asarray(vector, dtype=np.float64)
        self.client = secagg.SecAggClient(peer_id, self.cfg, sign)

    def start(self) -> Outgoing:
        return [(DOMAIN[KEYS], encode(self.client.advertise()))]

    def needs_personal(self, phase: str) -> bool:
        return phase in (SHARES, MASKED)

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        return leaving(secagg.SecAggAbort, lambda: self._step(phase, body, personal))

    def _step(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        if phase == SHARES:
            if personal is None:
                raise RoundMisuse("shares phase needs this peer's keys")
            missing = set(decode(body, secagg.Advertised).missing)
            members = [p for p in self.params.participants if p not in missing]
            bundle = self.client.share_keys(decode(personal, secagg.KeyDirectory), members)
            return [(DOMAIN[SHARES], encode(bundle))]
        if phase == MASKED:
            if personal is None:
                raise RoundMisuse("masked phase needs this peer's inbox")
            x = noised_input(self.workload, self.vector, self.params)
            masked = self.client.masked_input(decode(personal, secagg.Inbox), x)
            return [(DOMAIN[MASKED], encode(masked))]
        if phase == CONSISTENCY:
            survivors = survivors_of(decode(body, secagg.SurvivorBits),
                                     self.params.participants)
            signature = self.client.confirm(survivors)
            return [(DOMAIN[CONSISTENCY], encode(signature))]
        if phase == UNMASK:
            request = expand(decode(body, secagg.SurvivorSignatures), self.client.confirmed)
            reply = self.client.unmask(request)
            return [(DOMAIN[UNMASK], encode(reply))]
        raise RoundMisuse(f"unknown phase {phase!r}")


class SecAggMode(Mode):
    """SecAgg+ over any workload's vector; the default secure mode where inputs have no
    ranges to prove."""

    name = "secagg"
    min_participants = 2
    domains = frozenset(DOMAIN.values())

    def open(self, setup: Setup) -> Opening:
        s = setup.settings
        params = make_params(setup.workload, setup.number, setup.participants,
                             setup.prev_digest, min_peers=s.min_peers,
                             dp_epsilon=s.dp_epsilon, dp_delta=s.dp_delta,
                             degree=s.secagg_degree, threshold=s.secagg_threshold,
                             agreement=s.secagg_agreement)
        rnd = SecureRound(setup.number, setup.workload, params, min_peers=s.min_peers,
                          phase_timeout=s.phase_timeout, now=setup.now)
        notes = []
        if len(params.participants) < len(setup.participants):
            notes.append(f"{len(setup.participants)} peers; a secure round takes "
                         f"{len(params.participants)} (a seeded draw), the others sit this "
                         "one out")
        return Opening(rnd, setup.now + 4 * s.phase_timeout, params=encode(params),
                       participants=list(params.participants), notes=notes)

    def replay(self, announce: RoundAnnounce, workload: Workload) -> SecureRound:
        return SecureRound(announce.round, workload, decode(announce.params, SecureParams),
                           min_peers=announce.min_peers, phase_timeout=0.0, now=0.0)

    def participants(self, announce: RoundAnnounce) -> list[str]:
        return decode(announce.params, SecureParams).participants

    def audit_note(self, announce: RoundAnnounce) -> str:
        """The guarantees the announced graph gives (protocol.crypto.secagg), whether they are
        the default rule's for these participants, and what no replay can check."""
        p = decode(announce.params, SecureParams)
        cfg = config(announce.round, p)
        n, a = len(cfg.participants), cfg.agreement
        rule = secagg.SecAggConfig.default(announce.round, cfg.participants, cfg.graph_seed,
                                           cfg.vector_len, cfg.encoding,
                                           dropout=p.replan or 0.3)
        ours = (rule.degree, rule.threshold, rule.agreement) == (p.degree, p.threshold, a)
        lying = 2 * a - n
        check = (f"a server lying about survivors is stopped while fewer than {lying} "
                 "participants collude with it" if lying > 0 else
                 f"the consistency check bounds no collusion here (2 x agreement - n = {lying})")
        return (f"announced n={n}, degree {p.degree}, threshold {p.threshold}, agreement {a} "
                f"({'the default rule' if ours else 'NOT the default rule: set by its operator'}"
                f"): private while fewer than {p.threshold} of a client's neighbours collude "
                f"with it; {check}; not checkable: the inputs themselves (SecAgg+ carries no "
                "range proof, so any value the encoding holds could have been masked)")

    def peer_round(self, ctx: PeerContext) -> SecurePeerRound:
        x = ctx.workload.vector(ctx.announce, ctx.data, ctx.blobs)
        return SecurePeerRound(ctx.peer_id, ctx.workload, ctx.announce, x, ctx.sign)


MODE = SecAggMode()
