"""Decentralized incremental learning: the seed's autoencoder trained by replicas that may lie.

Theory of operation
-------------------
Each round the coordinator holds the global weights G (published by digest).
The training set is cut into ``segments`` strided segments; a public beacon
(:func:`protocol.policy.replication.beacon` of the previous result) assigns each
segment to ``replicas`` eligible peers (reputation at or above the
threshold). A replica trains its segment from G with the deterministic step
of :mod:`protocol.learning.models` (one pass, Adam, batch 16, seed fixed by round and
segment), so honest replicas of a segment produce the same weight digest.

Phases of one round, and the peers' message domains:

=============  ==================  ================================================
phase          peers send          when it closes
=============  ==================  ================================================
commit         ``replica/commit``  reveal notice (no more commitments taken)
reveal         ``replica/reveal``  each segment decided (protocol.policy.replication):
                                   agreed -> fetch its weights by digest;
                                   disputed/undecided -> extra replicas or
                                   coordinator re-execution (``dispute``)
extra_commit   ``replica/commit``  (dispute="replicas" only) extra replicas of the
extra_reveal   ``replica/reveal``  contested segments commit, then reveal
work           --                  the driver fetches blobs / re-executes, then the
                                   accepted segment weights are aggregated
=============  ==================  ================================================

The new global model is ``G + agg(W_k - G)`` over accepted segments, where
``agg`` is the mean when results were verified by replicas (r >= 2) and a
robust aggregator of :mod:`protocol.learning.aggregators` when verification is off
(r = 1). Reputation (protocol.policy.replication.Reputation) moves only on facts
the coordinator can prove: a signed reveal contradicting a decided result,
a signed reveal that does not open its own commitment, a missing reveal.

This module is the workload (the task, its data and its deterministic
training step); the round that runs it is :mod:`protocol.rounds.replicated`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import numpy as np

from ..crypto.vss.config import rank
from ..policy.replication import (
    assign,
    beacon,
)
from ..wire.messages import RoundAnnounce, Strict, decode
from . import aggregators, datasets
from .workloads import Workload, models

DISPUTE_MODES = ("reexecute", "replicas")
MAX_SEGMENTS = 4096
# eligible peers an announcement lists: beyond, a beacon-seeded draw of this many gets the
# round's tasks (another round, another draw). 3,000 peer ids are 162 KB of the
# announcement's workload parameters, which also carry the assignment (S x r ids)
MAX_ELIGIBLE = 3000

PeerId = Annotated[str, msgspec.Meta(max_length=64)]
Segment = Annotated[int, msgspec.Meta(ge=0, lt=MAX_SEGMENTS)]


Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class IncrementalParams(Strict):
    """The task of one round, carried in its announcement: anyone can recheck the assignment
    from ``beacon`` and ``eligible``."""

    model_digest: Digest
    model_size: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)]
    data_digest: Digest  # SHA-256 of the training images: replicas must train on the same data
    segments: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEGMENTS)]
    replicas: Annotated[int, msgspec.Meta(ge=1, le=64)]
    quorum: Annotated[int, msgspec.Meta(ge=1, le=64)]
    lr: Annotated[float, msgspec.Meta(gt=0, le=10)]
    weight_decay: Annotated[float, msgspec.Meta(ge=0, le=1)]
    batch: Annotated[int, msgspec.Meta(ge=1, le=4096)]
    beacon: Digest
    eligible: Annotated[list[PeerId], msgspec.Meta(max_length=MAX_ELIGIBLE)]
    assignment: Annotated[list[list[PeerId]], msgspec.Meta(max_length=MAX_SEGMENTS)]
    dispute: Annotated[str, msgspec.Meta(max_length=16)] = "reexecute"


def task_seed(round: int, segment: int) -> int:
    """The torch seed of one training task (the same for every replica of it)."""
    return (round * MAX_SEGMENTS + segment) % 2**63


def data_digest(ds: datasets.Dataset) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(ds.train_x, dtype=np.float32).tobytes()).digest()


def train_segment(start: np.ndarray, ds: datasets.Dataset, params: IncrementalParams,
                  round: int, segment: int) -> np.ndarray:
    """The deterministic task: one pass of Adam over segment ``segment`` from ``start``."""
    idx = datasets.segment(len(ds.train_y), params.segments, segment)
    w, _ = models.train_autoencoder(start, ds.train_x[idx], lr=params.lr,
                                    weight_decay=params.weight_decay, batch=params.batch,
                                    seed=task_seed(round, segment))
    return w


def extra_replicas(params: IncrementalParams, segment: int, count: int) -> list[str]:
    """Extra replicas of a contested segment: the next ``count`` eligible peers in the
    segment's beacon ranking that were not its replicas (recomputable by anyone)."""
    taken = set(params.assignment[segment])
    ranked = sorted((p for p in params.eligible if p not in taken), key=lambda p: hashlib.sha256(
        b"extra" + params.beacon + segment.to_bytes(4, "big") + p.encode()).digest())
    return ranked[:count]


class Incremental(Workload):
    """The seed's challenge 2: the MNIST autoencoder trained segment by segment, by replicas.

    Defaults are the seed's: Adam with lr 0.1 and weight decay 1e-8, batch 16, one pass.
    (At lr 0.1 the autoencoder soon settles near the mean image; ``lr=1e-3`` learns more.)

    Peers' ``--data``: empty (the embedded digits, upsampled to 28x28) or ``data_dir=PATH``
    (real MNIST IDX files through torchvision, no download). The coordinator must use the
    same data: the announcement carries its digest and a peer with other data sits out.
    """

    name = "incremental"
    replicated = True
    contribution_schema = Strict  # no clear contributions: its rounds are replicated
    clip = 0.0

    def __init__(self, *, segments: int = 4, replicas: int = 3, quorum: int | None = None,
                 lr: float = 0.1, weight_decay: float = 1e-8, batch: int = 16,
                 aggregator: str | None = None, dispute: str = "reexecute",
                 data_dir: str | None = None, seed: int = 0):
        if not 1 <= segments <= MAX_SEGMENTS or not 1 <= replicas <= 64:
            raise ValueError("segments must be in [1, 4096] and replicas in [1, 64]")
        if dispute not in DISPUTE_MODES:
            raise ValueError(f"dispute must be one of {DISPUTE_MODES}")
        self.segments, self.replicas = segments, replicas
        self.quorum = quorum if quorum is not None else (1 if replicas == 1 else
                                                          replicas // 2 + 1)
        if not 1 <= self.quorum <= replicas:
            raise ValueError("quorum must be in [1, replicas]")
        self.lr, self.weight_decay, self.batch = lr, weight_decay, batch
        self.aggregator = aggregator or ("mean" if replicas > 1 else "median")
        aggregators.get_aggregator(self.aggregator)  # fail early on a bad name
        self.dispute = dispute
        self.data_dir = data_dir
        self.weights = models.autoencoder_initial(seed)
        self._blob: bytes | None = None
        self._ds: datasets.Dataset | None = None
        self._data_digest: bytes | None = None

    # --- coordinator -----------------------------------------------------------------------
    @property
    def dataset(self) -> datasets.Dataset:
        if self._ds is None:
            self._ds = datasets.load(self.data_dir)
        return self._ds

    @property
    def data_digest(self) -> bytes:
        if self._data_digest is None:
            self._data_digest = data_digest(self.dataset)
        return self._data_digest

    def state_blob(self) -> bytes:
        if self._blob is None:
            self._blob = models.encode_weights(self.weights)
        return self._blob

    def restore(self, result: dict[str, Any], blob: bytes | None) -> None:
        if blob is not None:
            self.weights = models.decode_weights(blob, len(self.weights))
            self._blob = blob

    def heldout_loss(self, weights: np.ndarray | None = None) -> float:
        return models.reconstruction_loss(self.weights if weights is None else weights,
                                          self.dataset.test_x)

    def make_params(self, round: int, prev_state_digest: bytes,
                    eligible: list[str]) -> IncrementalParams:
        blob = self.state_blob()
        b = beacon(prev_state_digest, round)
        eligible = sorted(set(eligible))
        if len(eligible) > MAX_ELIGIBLE:  # the public seeded draw the cohorts use
            eligible = sorted(rank(eligible, b + b"eligible")[:MAX_ELIGIBLE])
        table = assign(b, self.segments, self.replicas, eligible)
        return IncrementalParams(
            model_digest=hashlib.sha256(blob).digest(), model_size=len(blob),
            data_digest=self.data_digest, segments=self.segments, replicas=self.replicas,
            quorum=self.quorum, lr=self.lr, weight_decay=self.weight_decay, batch=self.batch,
            beacon=b, eligible=eligible,
            assignment=[table.get(k, []) for k in range(self.segments)], dispute=self.dispute)

    def apply(self, round: int, accepted: Mapping[int, np.ndarray]) -> dict[str, Any]:
        """New global weights from the accepted segments' weights; the published result.

        Segments whose weights are not all finite are left out (and listed under
        ``non_finite``): with ``replicas=1`` a segment is accepted as one peer sent it, and
        one such segment must not fail the round."""
        finite = {s: w for s, w in accepted.items() if np.all(np.isfinite(w))}
        if finite:
            start = self.weights.astype(np.float64)
            updates = np.stack([w.astype(np.float64) - start for w in finite.values()])
            agg = aggregators.get_aggregator(self.aggregator)(updates)
            self.weights = (start + agg).astype(np.float32)
            self._blob = None
        blob = self.state_blob()
        return {"count": len(finite), "loss": self.heldout_loss(),
                "model_digest": hashlib.sha256(blob).hexdigest(), "model_bytes": len(blob),
                "aggregator": self.aggregator,
                "non_finite": sorted(s for s in accepted if s not in finite)}

    # --- peer ------------------------------------------------------------------------------
    def parse_data(self, text: str) -> datasets.Dataset:
        opts = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        unknown = set(opts) - {"data_dir"}
        if unknown:
            raise ValueError(f"incremental --data takes only data_dir=PATH, not {unknown}")
        return datasets.load(opts.get("data_dir"))

    def required_blobs(self, announce: RoundAnnounce) -> list[tuple[bytes, int]]:
        p = decode(announce.workload_params, IncrementalParams)
        return [(p.model_digest, p.model_size)]

    def result_blobs(self, result: dict[str, Any]) -> list[tuple[bytes, int]]:
        """Peer: what to fetch after a published result (the new model, by digest)."""
        try:
            return [(bytes.fromhex(result["model_digest"]), int(result["model_bytes"]))]
        except (KeyError, ValueError, TypeError):
            return []


def alie_z(n: int, m: int) -> float:
    """z_max of "A Little Is Enough" (Baruch et al. 2019) for n inputs, m of them attackers:
    the largest shift (in standard deviations) that still hides among the honest inputs."""
    from statistics import NormalDist

    s = math.floor(n / 2 + 1) - m
    return NormalDist().inv_cdf(min(max((n - s) / n, 0.5), 0.999))
