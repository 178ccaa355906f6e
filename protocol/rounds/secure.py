"""The secure round mode: a workload's vectors summed under SecAgg+ (protocol.crypto.secagg).

Phases, their peer message domains, and what closing each one sends:

===========  =======================  ==========================================
phase        peers send (domain)      when it closes, the coordinator sends
===========  =======================  ==========================================
keys         ``secagg/keys``          notice ``shares``: the key directory
shares       ``secagg/shares``        notice ``masked`` + each peer's own inbox
masked       ``secagg/masked``        notice ``consistency``: the survivor list
consistency  ``secagg/consistency``   notice ``unmask``: the list + signatures
unmask       ``secagg/unmask``        the round's result (decoded sum, finalized)
===========  =======================  ==========================================

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
from typing import Annotated, Any

import msgspec
import numpy as np

from ..crypto import dp, secagg
from ..crypto.fixedpoint import FixedPoint
from ..learning.workloads import Workload
from ..wire.messages import RoundAnnounce, Strict, decode, encode
from .base import Notice, Outcome, Outgoing, PeerRound, RoundLogic, RoundMisuse, WrongPhase

KEYS, SHARES, MASKED, CONSISTENCY, UNMASK = "keys", "shares", "masked", "consistency", "unmask"
PHASES = (KEYS, SHARES, MASKED, CONSISTENCY, UNMASK)
DOMAIN = {p: f"secagg/{p}" for p in PHASES}
SCHEMA: dict[str, type[Strict]] = {
    KEYS: secagg.AdvertiseKeys, SHARES: secagg.ShareBundle, MASKED: secagg.MaskedInput,
    CONSISTENCY: secagg.ConsistencySignature, UNMASK: secagg.UnmaskShares}
PeerId = Annotated[str, msgspec.Meta(max_length=64)]


class SecureParams(Strict):
    """Everything a peer needs to join a secure round, carried in the announcement."""

    participants: Annotated[list[PeerId], msgspec.Meta(max_length=5000)]
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
    # keys, re-planned for this dropout fraction (secagg.Config.restricted)
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
    ``degree``, ``threshold`` and ``agreement`` override :meth:`secagg.Config.default`'s."""
    sigma, split, headroom = 0.0, max(1, min_peers), 0.0
    if dp_epsilon:
        sigma, split = dp.calibrate(dp_epsilon, dp_delta, workload.sensitivity(), min_peers)
        headroom = 10 * sigma / split**0.5  # noise tails must not be clipped by the encoding
    enc = FixedPoint(workload.clip + headroom, max_summands, workload.ring_bits)
    replan = degree is None and threshold is None and agreement is None  # the default rule
    cfg = secagg.Config.default(round, participants, graph_seed(prev_digest, round),
                                workload.vector_len(), enc, dropout=dropout, degree=degree,
                                threshold=threshold, agreement=agreement, replan=replan)
    return SecureParams(list(cfg.participants), cfg.degree, cfg.threshold, cfg.graph_seed,
                        cfg.vector_len, enc.clip, enc.bits, enc.max_summands, sigma, split,
                        dp_epsilon, dp_delta if dp_epsilon else 0.0, cfg.agreement, cfg.replan)


def config(round: int, p: SecureParams) -> secagg.Config:
    return secagg.Config(round, tuple(p.participants), p.degree, p.threshold, p.graph_seed,
                         p.vector_len, FixedPoint(p.clip, p.max_summands, p.bits), p.agreement,
                         p.replan)


class ServerRound(RoundLogic):
    """The coordinator's side of a round run by a sans-IO server (SecAgg+ here, vss in
    protocol.rounds.verified): messages go to the server in their phase, a phase closes on
    its deadline or when nobody connected is still owed, and closing it sends the notice
    the server's ``close_*`` made. Subclasses say which server, how each phase's message
    is received and closed, and what the result reports."""

    phases: tuple[str, ...]
    domain: dict[str, str]
    schema: dict[str, type[Strict]]
    aborted: type[Exception]  # the server's "cannot finish safely"
    what: str  # in the failed outcome's error

    def __init__(self, number: int, workload: Workload, params: Any, *, min_peers: int,
                 phase_timeout: float, now: float):
        self.number, self.workload, self.params = number, workload, params
        self.announced, self.server = self.start(number, params)
        self.min_peers, self.phase_timeout = min_peers, phase_timeout
        self.phase = self.phases[0]
        self.deadline = now + phase_timeout
        self.rejected: dict[str, int] = {}

    def start(self, number: int, params: Any) -> tuple[Any, Any]:
        """The round's configuration as announced, and its server."""
        raise NotImplementedError

    @property
    def cfg(self) -> Any:
        """The configuration the server runs now: the announced one, or, once the first
        phase re-planned the round over the participants that answered it, that one."""
        return self.server.cfg

    def receivers(self) -> dict[str, Callable[[str, Any], None]]:
        raise NotImplementedError

    def waiting_for(self) -> set[str]:
        """Who still owes a message in this phase."""
        raise NotImplementedError

    def close(self, phase: str) -> Notice:
        """Close ``phase`` (not the last) on the server: the next phase's notice."""
        raise NotImplementedError

    def finish(self) -> tuple[np.ndarray, list[str], dict[str, Any]]:
        """Close the last phase: the decoded sum, whose inputs it holds, and the
        ``secure_aggregation`` report."""
        raise NotImplementedError

    def domains(self) -> frozenset[str]:
        return frozenset(self.domain.values())

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if domain != self.domain.get(self.phase):
            raise WrongPhase(f"{domain} arrived during phase {self.phase}")
        self.receivers()[self.phase](sender, decode(payload, self.schema[self.phase]))

    def ready(self, now: float, live: set[str]) -> bool:
        return now >= self.deadline or not (self.waiting_for() & live)

    def advance(self, now: float) -> Notice | Outcome:
        self.deadline = now + self.phase_timeout
        if self.phase not in self.phases:
            raise RoundMisuse(f"advance after the round ended ({self.phase})")
        try:
            if self.phase != self.phases[-1]:
                notice = self.close(self.phase)
                self.phase = notice.phase
                return notice
            total, included, report = self.finish()
        except self.aborted as exc:
            self.phase = "failed"
            return Outcome("failed", 0, {"error": f"{self.what} aborted: {exc}"})
        self.phase = "done"
        result = finalize(self.workload, self.params, total, len(included), self.min_peers)
        if isinstance(result, Outcome):
            return result
        result["secure_aggregation"] = report
        return Outcome("published", len(included), result)


class SecureRound(ServerRound):
    phases, domain, schema = PHASES, DOMAIN, SCHEMA
    aborted, what = secagg.SecAggAbort, "secure aggregation"
    server: secagg.SecAggServer
    cfg: secagg.Config

    def start(self, number: int, params: SecureParams
              ) -> tuple[secagg.Config, secagg.SecAggServer]:
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
            return Notice(SHARES, body=encode(s.close_keys()))
        if phase == SHARES:
            return Notice(MASKED, personal={p: encode(i) for p, i in s.close_shares().items()})
        if phase == MASKED:
            return Notice(CONSISTENCY, body=encode(s.close_masked()))
        return Notice(UNMASK, body=encode(s.close_consistency()))

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


def finalize(workload: Workload, params: SecureParams | Any, total: np.ndarray, n: int,
             min_peers: int) -> dict[str, Any] | Outcome:
    """A secure round's published result from the decoded sum of ``n`` inputs (with its
    DP report when ``params`` added noise), or the failed outcome below the quorum."""
    if n < min_peers:
        return Outcome("failed", n, {"error": f"quorum not met: {n} < {min_peers}"})
    result = workload.finalize(total, n)
    if params.dp_sigma:
        result["dp"] = dp.report(params.dp_sigma, params.dp_split, workload.sensitivity(),
                                 params.dp_delta, params.dp_epsilon, n)
    return result


def noised_input(workload: Workload, vector: np.ndarray, params: SecureParams | Any
                 ) -> np.ndarray:
    """A peer's bounded input plus, with DP on, its share of the Gaussian noise."""
    x = workload.bound(vector)
    if params.dp_sigma:
        std = params.dp_sigma / params.dp_split**0.5
        x = x + np.random.default_rng().normal(0.0, std, x.shape)  # OS-seeded
    return x


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
        return phase == MASKED

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        if phase == SHARES:
            bundle = self.client.share_keys(decode(body, secagg.KeyDirectory))
            return [(DOMAIN[SHARES], encode(bundle))]
        if phase == MASKED:
            if personal is None:
                raise RoundMisuse("masked phase needs this peer's inbox")
            x = noised_input(self.workload, self.vector, self.params)
            masked = self.client.masked_input(decode(personal, secagg.Inbox), x)
            return [(DOMAIN[MASKED], encode(masked))]
        if phase == CONSISTENCY:
            signature = self.client.confirm(decode(body, secagg.SurvivorList))
            return [(DOMAIN[CONSISTENCY], encode(signature))]
        if phase == UNMASK:
            reply = self.client.unmask(decode(body, secagg.UnmaskRequest))
            return [(DOMAIN[UNMASK], encode(reply))]
        raise RoundMisuse(f"unknown phase {phase!r}")
