"""The secure round mode: a workload's vectors summed under SecAgg+ (protocol.secagg).

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
the protocol recovers their masks. A round cannot be resumed after a
coordinator restart (the SecAgg server state is deliberately not persisted:
it would hold every share) -- it is marked failed and a new one opens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import numpy as np

from . import dp, secagg
from .fixedpoint import FixedPoint
from .messages import RoundAnnounce, Strict, decode, encode
from .rounds import Notice, Outcome, Outgoing, PeerRound, RoundLogic, RoundMisuse, WrongPhase
from .workloads import Workload

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


def graph_seed(prev_state_digest: bytes, round: int) -> bytes:
    """Public, unpredictable before the previous result exists: fixes the SecAgg+ graph."""
    return hashlib.sha256(b"hypergossip/graph/v1" + prev_state_digest +
                          round.to_bytes(8, "big")).digest()


def make_params(workload: Workload, round: int, participants: list[str], prev_digest: bytes,
                *, max_summands: int = 10_000, dropout: float = 0.3, min_peers: int = 1,
                dp_epsilon: float = 0.0, dp_delta: float = 1e-5, degree: int | None = None,
                threshold: int | None = None) -> SecureParams:
    """Round parameters; with ``dp_epsilon`` the noise is calibrated so that one round is
    (dp_epsilon, dp_delta)-DP as long as ``min_peers`` peers survive (see protocol.dp).
    ``degree`` and ``threshold`` override :meth:`secagg.Config.default`'s graph."""
    sigma, split, headroom = 0.0, max(1, min_peers), 0.0
    if dp_epsilon:
        sigma, split = dp.calibrate(dp_epsilon, dp_delta, workload.sensitivity(), min_peers)
        headroom = 10 * sigma / split**0.5  # noise tails must not be clipped by the encoding
    enc = FixedPoint(workload.clip + headroom, max_summands, workload.ring_bits)
    cfg = secagg.Config.default(round, participants, graph_seed(prev_digest, round),
                                workload.vector_len(), enc, dropout=dropout, degree=degree,
                                threshold=threshold)
    return SecureParams(list(cfg.participants), cfg.degree, cfg.threshold, cfg.graph_seed,
                        cfg.vector_len, enc.clip, enc.bits, enc.max_summands, sigma, split,
                        dp_epsilon, dp_delta if dp_epsilon else 0.0)


def config(round: int, p: SecureParams) -> secagg.Config:
    return secagg.Config(round, tuple(p.participants), p.degree, p.threshold, p.graph_seed,
                         p.vector_len, FixedPoint(p.clip, p.max_summands, p.bits))


class SecureRound(RoundLogic):
    def __init__(self, number: int, workload: Workload, params: SecureParams, *, min_peers: int,
                 phase_timeout: float, now: float):
        self.number, self.workload, self.params = number, workload, params
        self.cfg = config(number, params)
        self.server = secagg.SecAggServer(self.cfg)
        self.min_peers, self.phase_timeout = min_peers, phase_timeout
        self.phase = KEYS
        self.deadline = now + phase_timeout
        self.rejected: dict[str, int] = {}
        self.last: secagg.Outcome | None = None

    def domains(self) -> frozenset[str]:
        return frozenset(DOMAIN.values())

    def offer_message(self, sender: str, domain: str, payload: bytes) -> None:
        if domain != DOMAIN[self.phase]:
            raise WrongPhase(f"{domain} arrived during phase {self.phase}")
        msg = decode(payload, SCHEMA[self.phase])
        receive = {KEYS: self.server.receive_keys, SHARES: self.server.receive_shares,
                   MASKED: self.server.receive_masked,
                   CONSISTENCY: self.server.receive_consistency,
                   UNMASK: self.server.receive_unmask}
        receive[self.phase](sender, msg)  # type: ignore[operator]

    def _waiting_for(self) -> set[str]:
        s = self.server
        before, now = {KEYS: (set(self.cfg.participants), s.keys),
                       SHARES: (set(s.keys), s.bundles), MASKED: (set(s.bundles), s.masked),
                       CONSISTENCY: (set(s.masked), s.signatures),
                       UNMASK: (set(s.signatures), s.unmask_replies)}[self.phase]
        return before - set(now)

    def ready(self, now: float, live: set[str]) -> bool:
        return now >= self.deadline or not (self._waiting_for() & live)

    def accepted_count(self) -> int:
        return len(self.server.masked)

    def advance(self, now: float) -> Notice | Outcome:
        self.deadline = now + self.phase_timeout
        try:
            if self.phase == KEYS:
                directory = self.server.close_keys()
                self.phase = SHARES
                return Notice(SHARES, body=encode(directory))
            if self.phase == SHARES:
                inboxes = self.server.close_shares()
                self.phase = MASKED
                return Notice(MASKED, personal={p: encode(i) for p, i in inboxes.items()})
            if self.phase == MASKED:
                survivors = self.server.close_masked()
                self.phase = CONSISTENCY
                return Notice(CONSISTENCY, body=encode(survivors))
            if self.phase == CONSISTENCY:
                request = self.server.close_consistency()
                self.phase = UNMASK
                return Notice(UNMASK, body=encode(request))
            if self.phase != UNMASK:
                raise RoundMisuse(f"advance after the round ended ({self.phase})")
            out = self.server.close_unmask()
        except secagg.SecAggAbort as exc:
            self.phase = "failed"
            return Outcome("failed", 0, {"error": f"secure aggregation aborted: {exc}"})
        self.phase, self.last = "done", out
        n = len(out.survivors)
        result = finalize(self.workload, self.params, out.total, n, self.min_peers)
        if isinstance(result, Outcome):
            return result
        result["secure_aggregation"] = {
            "protocol": "SecAgg+ (Bell et al. 2020)", "participants": len(self.cfg.participants),
            "survivors": n, "dropped": len(out.dropped), "degree": self.cfg.degree,
            "included": out.survivors,  # whose inputs the sum holds (not what they were)
            "threshold": self.cfg.threshold,
            "quantization_error_bound": self.cfg.encoding.error_bound(n),
            "bad_shares": out.bad_shares, "rejected": out.rejected}
        return Outcome("published", n, result)


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
            x = self.workload.bound(self.vector)
            if self.params.dp_sigma:
                std = self.params.dp_sigma / self.params.dp_split**0.5
                x = x + np.random.default_rng().normal(0.0, std, x.shape)  # OS-seeded
            masked = self.client.masked_input(decode(personal, secagg.Inbox), x)
            return [(DOMAIN[MASKED], encode(masked))]
        if phase == CONSISTENCY:
            signature = self.client.confirm(decode(body, secagg.SurvivorList))
            return [(DOMAIN[CONSISTENCY], encode(signature))]
        if phase == UNMASK:
            reply = self.client.unmask(decode(body, secagg.UnmaskRequest))
            return [(DOMAIN[UNMASK], encode(reply))]
        raise RoundMisuse(f"unknown phase {phase!r}")
