"""Fedavg liars: peers that still speak the protocol but send a poisoned update.

Each attack computes one lie per round from what a modified peer can know: its own
data and update, the global model, and (for the omniscient ones, as their papers
assume) every honest peer's update, which a liar on a testnet of the embedded digits
can recompute, since it knows the data and how it is split. The lie then goes out in
whichever mode the round runs, as a modified client would send it:

- clear rounds: as the contribution vector (the coordinator checks it);
- secure rounds (``secagg``, and each group of ``robust``): masked like an honest
  input, but never bounded (the L2 clip an honest peer applies is skipped; the
  fixed-point encoder still clips each coordinate), or, for the ring attacks, with
  ring elements of its choosing written past the encoder.

===========  ============================================================================
name         the lie (``u``: its honest clipped update, ``C``: the clip norm, ``H``: the
             honest updates)
===========  ============================================================================
signflip     ``-10 u``, unclipped (scaled sign-flip)
boost        model replacement (Bagdasaryan et al. 2020): trained on flipped labels
             ``9 - y``, scaled by the number of peers, unclipped
maxcoord     ``-C sign(u)``: every coordinate at the largest value the encoding allows
ring         secure rounds: ``2^30`` written into every ring element (decodes to 16384
             per coordinate); clear rounds: that decoded value
boundflip    ``-C u / |u|``: sign-flip at the L2 bound (passes every norm check)
alie         "A Little Is Enough" (Baruch et al. 2019): ``mean(H) - z std(H)``, clipped
             to ``C``
ipm          inner-product manipulation (Xie et al. 2020): ``-2 mean(H)``, clipped to ``C``
nonfinite    NaN in every coordinate (secure rounds: the ring element a NaN cast gives,
             ``2^31``)
labelflip    data poisoning with honest arithmetic: trained on ``9 - y``, clipped to ``C``
===========  ============================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from protocol.crypto import secagg
from protocol.learning.federated import FedAvg, FedAvgParams, PeerShard
from protocol.learning.incremental import alie_z
from protocol.learning.workloads import models  # lazy: torch only once a liar trains
from protocol.rounds import clear, robust, secure
from protocol.rounds.base import Mode, Outgoing, PeerContext, PeerRound, RoundMisuse
from protocol.rounds.clear import ClearPeerRound
from protocol.wire.messages import PlainVector, decode, encode

log = logging.getLogger("hypergossip.attack")

FEDAVG_ATTACKS = ("signflip", "boost", "maxcoord", "ring", "boundflip", "alie", "ipm",
                  "nonfinite", "labelflip")
OMNISCIENT = ("alie", "ipm")
SIGNFLIP_SCALE = 10.0
IPM_EPSILON = 2.0
RING_VALUE = 2**30
NAN_RING = 2**31  # what float NaN becomes when cast to a 32-bit integer


@dataclass
class Lie:
    """What a liar sends this round: a float vector (encoded unbounded), or a raw ring
    element for every coordinate (secure rounds) with ``clear`` its decoded value."""

    vector: np.ndarray | None = None
    ring: int | None = None
    clear: float = 0.0


Knowledge = Callable[[np.ndarray, FedAvgParams], np.ndarray]  # -> honest updates (n, d)


def shards_of(spec: str) -> list[PeerShard]:
    """Every peer's shard, from one peer's ``--data`` (``part=I/N,alpha=A,seed=S``): what
    a liar on a testnet of public data can rebuild."""
    opts = dict(kv.split("=", 1) for kv in spec.split(",") if "=" in kv)
    n = int(opts["part"].split("/")[1])
    w = FedAvg()
    return [w.parse_data(",".join([f"part={i}/{n}", *(f"{k}={v}" for k, v in opts.items()
                                                        if k != "part")]))
            for i in range(n)]


def knowing(shards: list[PeerShard], liars: set[int]) -> Knowledge:
    """The omniscient attacker's view: the honest peers' (all but ``liars``) updates."""

    def honest_updates(start: np.ndarray, p: FedAvgParams) -> np.ndarray:
        return np.stack([_train(start, s.x, s.y, p) for i, s in enumerate(shards)
                         if i not in liars])

    return honest_updates


def _train(start: np.ndarray, x: np.ndarray, y: np.ndarray, p: FedAvgParams) -> np.ndarray:
    new = models.train(start, x, y, epochs=p.epochs, lr=p.lr, seed=p.seed)
    return models.clip_l2(new.astype(np.float64) - start, p.clip_norm)


class FedAvgLiar:
    """One lying peer's attack: :meth:`lie` per round, :meth:`peer_round` for any mode."""

    def __init__(self, name: str, *, peers: int, colluders: int,
                 knowledge: Knowledge | None = None):
        if name not in FEDAVG_ATTACKS:
            raise ValueError(f"unknown fedavg attack {name!r}; known: {FEDAVG_ATTACKS}")
        if name in OMNISCIENT and knowledge is None:
            raise ValueError(f"{name} needs the honest updates (knowledge)")
        self.name, self.peers, self.colluders = name, peers, colluders
        self.knowledge = knowledge

    def lie(self, ctx: PeerContext) -> Lie:
        p = decode(ctx.announce.workload_params, FedAvgParams)
        start = models.decode_weights(ctx.blobs[p.model_digest], ctx.workload.vector_len())
        shard = ctx.data
        if not isinstance(shard, PeerShard):
            raise RoundMisuse("a fedavg liar needs its PeerShard")
        c = p.clip_norm
        name = self.name
        if name in ("boost", "labelflip"):
            new = models.train(start, shard.x, 9 - shard.y, epochs=p.epochs, lr=p.lr,
                               seed=p.seed).astype(np.float64) - start
            return Lie(self.peers * new if name == "boost" else models.clip_l2(new, c))
        if name == "ring":
            return Lie(ring=RING_VALUE, clear=RING_VALUE / 2**16)
        if name == "nonfinite":
            return Lie(np.full(len(start), np.nan), ring=NAN_RING, clear=float("nan"))
        if name in OMNISCIENT:
            assert self.knowledge is not None
            h = self.knowledge(start, p)
            if name == "alie":
                z = alie_z(self.peers, self.colluders)
                return Lie(models.clip_l2(h.mean(0) - z * h.std(0), c))
            return Lie(models.clip_l2(-IPM_EPSILON * h.mean(0), c))
        u = _train(start, shard.x, shard.y, p)
        if name == "signflip":
            return Lie(-SIGNFLIP_SCALE * u)
        if name == "maxcoord":
            return Lie(-c * np.sign(u))
        return Lie(-c * u / max(float(np.linalg.norm(u)), 1e-12))  # boundflip

    def peer_round(self, mode: Mode, ctx: PeerContext) -> PeerRound:
        """The lying peer's side of a round of ``mode`` (a mode it has no lie for: honest)."""
        send = {clear.MODE.name: _clear, secure.MODE.name: _secure,
                robust.MODE.name: _robust}.get(mode.name)
        if send is None:
            return mode.peer_round(ctx)
        lie = self.lie(ctx)
        log.warning("round %d: %s lie (%s)", ctx.announce.round, self.name, mode.name)
        return send(ctx, lie)


def _clear(ctx: PeerContext, lie: Lie) -> PeerRound:
    v = lie.vector if lie.vector is not None else np.full(ctx.workload.vector_len(), lie.clear)
    return ClearPeerRound(PlainVector(vector=np.asarray(v, "<f4").tobytes()))


def _lying(lie: Lie) -> Callable[..., LyingSecure]:
    def make(peer_id, workload, announce, vector, sign) -> LyingSecure:
        return LyingSecure(peer_id, workload, announce, vector, sign, lie=lie)
    return make


def _secure(ctx: PeerContext, lie: Lie) -> PeerRound:
    return _lying(lie)(ctx.peer_id, ctx.workload, ctx.announce,
                       np.zeros(ctx.workload.vector_len()), ctx.sign)


def _robust(ctx: PeerContext, lie: Lie) -> PeerRound:
    return robust.RobustPeerRound(ctx.peer_id, ctx.workload, ctx.announce,
                                  np.zeros(ctx.workload.vector_len()), ctx.sign,
                                  inner=_lying(lie))


class LyingSecure(secure.SecurePeerRound):
    """A SecAgg+ client whose masked input carries the lie: its vector encoded without
    the L2 bound (and without DP noise), or raw ring elements added past the encoder
    (the masks still cancel, so the sum carries them, and SecAgg+ cannot tell)."""

    def __init__(self, *args, lie: Lie, **kwargs):
        super().__init__(*args, **kwargs)
        self.lie = lie

    def _step(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        if phase != secure.MASKED:
            return super()._step(phase, body, personal)
        if personal is None:
            raise RoundMisuse("masked phase needs this peer's inbox")
        enc = self.cfg.encoding
        raw = self.lie.ring is not None
        x = np.zeros(self.cfg.vector_len) if raw else self.lie.vector
        masked = self.client.masked_input(decode(personal, secagg.Inbox), x)
        if raw:
            y = np.frombuffer(masked.vector, dtype=enc.wire_dtype).astype(np.uint64)
            y = (y + np.uint64(self.lie.ring)) % np.uint64(2**enc.bits)
            masked = secagg.MaskedInput(vector=y.astype(enc.wire_dtype).tobytes())
        return [(secure.DOMAIN[secure.MASKED], encode(masked))]
