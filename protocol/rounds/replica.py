"""A replica's side of a replicated round, and the messages replicas send.

A replica trains its segments from the published model, commits to each result's
digest, reveals after the commit phase, and serves the weights by digest
(:class:`ReplicaPeerRound`); the coordinator's round and the mode are
:mod:`protocol.rounds.replicated`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import msgspec
import numpy as np

from ..learning.replicable import MAX_SEGMENTS, Replicable, TaskParams
from ..learning.workloads import models  # lazy: torch loads only when a round trains
from ..policy.replication import (
    ReplicaRejected,
    commitment,
)
from ..wire.messages import RoundAnnounce, SchemaError, Strict, decode, encode
from .base import (
    Outgoing,
    PeerRound,
)

PHASES = COMMIT, REVEAL, EXTRA_COMMIT, EXTRA_REVEAL, WORK = (
    "commit", "reveal", "extra_commit", "extra_reveal", "work")


DOMAIN_COMMIT = "replica/commit"


DOMAIN_REVEAL = "replica/reveal"


DOMAINS = frozenset({DOMAIN_COMMIT, DOMAIN_REVEAL})


PeerId = Annotated[str, msgspec.Meta(max_length=64)]


Segment = Annotated[int, msgspec.Meta(ge=0, lt=MAX_SEGMENTS)]


Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class BadReveal(ReplicaRejected):
    reason = "bad_reveal"


class CommitItem(Strict):
    segment: Segment
    commitment: Digest


class Commits(Strict):
    items: Annotated[list[CommitItem], msgspec.Meta(min_length=1, max_length=64)]


class RevealItem(Strict):
    segment: Segment
    digest: Digest
    salt: Annotated[bytes, msgspec.Meta(min_length=16, max_length=64)]


class Reveals(Strict):
    items: Annotated[list[RevealItem], msgspec.Meta(min_length=1, max_length=64)]


class ExtraAssignment(Strict):
    """Body of the extra_commit notice: contested segments and their extra replicas."""

    segments: Annotated[list[Segment], msgspec.Meta(max_length=MAX_SEGMENTS)]
    replicas: Annotated[list[list[PeerId]], msgspec.Meta(max_length=MAX_SEGMENTS)]


# --- a peer's side -----------------------------------------------------------------------------
def data_digest(workload: Replicable, shared: Any, segments: int) -> bytes:
    """The shared data's digest (a module function so that the simulation can memoize it
    over the one data set its peers share)."""
    return workload.shared_digest(shared, segments)


# (the replica's round, segment, its honest training) -> the weights it reports
Claim = Callable[["ReplicaPeerRound", int, Callable[[], np.ndarray]], np.ndarray]


def honest(pr: ReplicaPeerRound, segment: int, train: Callable[[], np.ndarray]) -> np.ndarray:
    return train()


class ReplicaPeerRound(PeerRound):
    """A replica: train its segments (in the constructor: run it in a worker thread), commit
    to each result's digest, reveal after the commit phase, serve the weights by digest.

    ``claim(self, segment, train)`` returns the weights this peer reports for a segment;
    honest peers return ``train()``. Attack behaviours (peer/attacks.py) pass another
    ``claim``, which may read ``start_weights``, ``ds``, ``params`` and ``round``."""

    def __init__(self, peer_id: str, workload: Replicable, announce: RoundAnnounce,
                 data: Any, blobs: Mapping[bytes, bytes], *, claim: Claim = honest):
        self.peer_id, self.round, self.workload = peer_id, announce.round, workload
        self.params = decode(announce.workload_params, TaskParams)
        self.ds = workload.replica_data(data)  # the shared training data
        if data_digest(workload, self.ds, self.params.segments) != self.params.data_digest:
            raise SchemaError("this peer's training data differs from the coordinator's")
        self.claim = claim
        self.start_weights = workload.decode_model(blobs[self.params.model_digest])
        self.phases = (REVEAL, EXTRA_COMMIT, EXTRA_REVEAL) \
            if self.params.dispute == "replicas" else (REVEAL,)
        self.results: dict[int, tuple[bytes, bytes]] = {}  # segment -> (digest, salt)
        self._blobs: list[bytes] = []
        self.tasks = [k for k, reps in enumerate(self.params.assignment) if peer_id in reps]
        self.extra_tasks: list[int] = []
        self._train(self.tasks)

    def _train(self, segments: list[int]) -> None:
        for k in segments:
            w = self.claim(self, k, lambda k=k: self.workload.train_task(
                self.start_weights, self.ds, self.params, self.round, k))
            blob = models.encode_weights(w)
            self._blobs.append(blob)
            self.results[k] = (hashlib.sha256(blob).digest(), os.urandom(16))

    def blobs(self) -> list[bytes]:
        return list(self._blobs)

    def commits(self, segments: list[int]) -> Outgoing:
        if not segments:
            return []
        items = [CommitItem(k, commitment(self.round, k, self.peer_id, *self.results[k]))
                 for k in segments]
        return [(DOMAIN_COMMIT, encode(Commits(items)))]

    def reveals(self, segments: list[int]) -> Outgoing:
        if not segments:
            return []
        items = [RevealItem(k, *self.results[k]) for k in segments]
        return [(DOMAIN_REVEAL, encode(Reveals(items)))]

    def start(self) -> Outgoing:
        return self.commits(self.tasks)

    def on_notice(self, phase: str, body: bytes, personal: bytes | None) -> Outgoing:
        if phase == REVEAL:
            return self.reveals(self.tasks)
        if phase == EXTRA_COMMIT:
            extra = decode(body, ExtraAssignment)
            self.extra_tasks = [k for k, reps in zip(extra.segments, extra.replicas,
                                                     strict=False) if self.peer_id in reps]
            self._train([k for k in self.extra_tasks if k not in self.results])
            return self.commits(self.extra_tasks)
        if phase == EXTRA_REVEAL:
            return self.reveals(self.extra_tasks)
        return []
