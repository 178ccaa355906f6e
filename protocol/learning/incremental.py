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
training step), a :class:`~protocol.learning.replicable.Replicable` like any model
workload run with ``--replicated``; the round that runs it is
:mod:`protocol.rounds.replicated`.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from ..wire.messages import Strict
from . import aggregators, datasets
from .replicable import Replicable, TaskParams, task_seed
from .workloads import models


def data_digest(ds: datasets.Dataset) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(ds.train_x, dtype=np.float32).tobytes()).digest()


def train_segment(start: np.ndarray, ds: datasets.Dataset, params: TaskParams,
                  round: int, segment: int) -> np.ndarray:
    """The deterministic task: one pass of Adam over segment ``segment`` from ``start``."""
    idx = datasets.segment(len(ds.train_y), params.segments, segment)
    w, _ = models.train_autoencoder(start, ds.train_x[idx], lr=params.lr,
                                    weight_decay=params.weight_decay, batch=params.batch,
                                    seed=task_seed(round, segment))
    return w


class Incremental(Replicable):
    """The seed's challenge 2: the MNIST autoencoder trained segment by segment, by replicas.

    Defaults are the seed's: Adam with lr 0.1 and weight decay 1e-8, batch 16, one pass.
    (At lr 0.1 the autoencoder soon settles near the mean image; ``lr=1e-3`` learns more.)

    Peers' ``--data``: empty (the embedded digits, upsampled to 28x28) or ``data_dir=PATH``
    (real MNIST IDX files through torchvision, no download). The coordinator must use the
    same data: the announcement carries its digest and a peer with other data sits out.
    """

    name = "incremental"
    contribution_schema = Strict  # no clear contributions: its rounds are replicated
    clip = 0.0

    def __init__(self, *, segments: int = 4, replicas: int = 3, quorum: int | None = None,
                 lr: float = 0.1, weight_decay: float = 1e-8, batch: int = 16,
                 aggregator: str | None = None, dispute: str = "reexecute",
                 data_dir: str | None = None, seed: int = 0):
        self.replicate(segments=segments, replicas=replicas, quorum=quorum, dispute=dispute)
        self.lr, self.weight_decay, self.batch = lr, weight_decay, batch
        self.task_lr, self.task_weight_decay, self.task_batch = lr, weight_decay, batch
        self.aggregator = aggregator or ("mean" if replicas > 1 else "median")
        aggregators.get_aggregator(self.aggregator)  # fail early on a bad name
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

    def vector_len(self) -> int:
        return len(self.weights)

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

    # --- the replicated task (protocol.learning.replicable) ---------------------------------
    def replica_data(self, data: Any) -> datasets.Dataset:
        return self.dataset if data is None else data

    def shared_digest(self, shared: datasets.Dataset, segments: int) -> bytes:
        if shared is self._ds:  # the coordinator's: hashed once
            if self._data_digest is None:
                self._data_digest = data_digest(shared)
            return self._data_digest
        return data_digest(shared)

    def train_task(self, start: np.ndarray, shared: datasets.Dataset, params: TaskParams,
                   round: int, segment: int) -> np.ndarray:
        return train_segment(start, shared, params, round, segment)

    def combine(self, updates: np.ndarray) -> np.ndarray:
        return aggregators.get_aggregator(self.aggregator)(updates)

    def apply_update(self, update: np.ndarray | None, n: int) -> dict[str, Any]:
        if update is not None:
            self.weights = (self.weights.astype(np.float64) + update).astype(np.float32)
            self._blob = None
        blob = self.state_blob()
        return {"count": n, "loss": self.heldout_loss(),
                "model_digest": hashlib.sha256(blob).hexdigest(), "model_bytes": len(blob),
                "aggregator": self.aggregator}

    # --- peer ------------------------------------------------------------------------------
    def parse_data(self, text: str) -> datasets.Dataset:
        opts = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        unknown = set(opts) - {"data_dir"}
        if unknown:
            raise ValueError(f"incremental --data takes only data_dir=PATH, not {unknown}")
        return datasets.load(opts.get("data_dir"))

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
