"""Replicable workloads: what a replicated round asks of a workload, and the task it runs.

A replicated round (:mod:`protocol.rounds.replicated`) does not trust any one peer's
training: the public training set is cut into ``segments`` parts, a public beacon assigns
each part to ``replicas`` peers, each replica trains the part from the published model
with a seed fixed by round and part, and a part counts once ``quorum`` replicas commit to
and reveal the same weights' digest. That needs three things of a workload, and nothing
about networks or signatures:

* the shared data (:meth:`Replicable.replica_data`), the same bytes at every replica and at
  the coordinator, and its digest (:meth:`Replicable.shared_digest`), which the announcement
  carries so that a peer holding other data sits out instead of disagreeing;
* the deterministic task (:meth:`Replicable.train_task`): equal inputs give bit-equal
  weights, on every replica (honest replicas of a part must agree digest for digest);
* how the accepted parts' updates make the new model (:meth:`Replicable.combine`,
  :meth:`Replicable.apply_update`).

:class:`~protocol.learning.incremental.Incremental` (the seed's challenge 2) is one;
a :class:`~protocol.learning.federated.ModelWorkload` becomes one with ``replicas=``
(``--replicated``), its ``load_data(k, segments, 0)`` being part ``k``.

The round's :class:`TaskParams` go in its announcement, so anyone can recheck the
assignment from ``beacon`` and ``eligible``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
import numpy as np

from ..crypto.vss.config import rank
from ..policy.replication import assign, beacon
from ..wire.messages import RoundAnnounce, Strict, decode
from .workloads import Workload, models

MODE = "replicated"  # RoundAnnounce.mode of a replicated round
DISPUTE_MODES = ("reexecute", "replicas")
MAX_SEGMENTS = 4096
# eligible peers an announcement lists: beyond, a beacon-seeded draw of this many gets the
# round's tasks (another round, another draw). 3,000 peer ids are 162 KB of the
# announcement's workload parameters, which also carry the assignment (S x r ids)
MAX_ELIGIBLE = 3000

PeerId = Annotated[str, msgspec.Meta(max_length=64)]
Segment = Annotated[int, msgspec.Meta(ge=0, lt=MAX_SEGMENTS)]
Digest = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]


class TaskParams(Strict):
    """The task of one replicated round, carried in its announcement."""

    model_digest: Digest
    model_size: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)]
    data_digest: Digest  # the shared data's digest: replicas must train on the same data
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
    epochs: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1


def task_seed(round: int, segment: int) -> int:
    """The training seed of one task (the same for every replica of it)."""
    return (round * MAX_SEGMENTS + segment) % 2**63


def extra_replicas(params: TaskParams, segment: int, count: int) -> list[str]:
    """Extra replicas of a contested segment: the next ``count`` eligible peers in the
    segment's beacon ranking that were not its replicas (recomputable by anyone)."""
    taken = set(params.assignment[segment])
    ranked = sorted((p for p in params.eligible if p not in taken), key=lambda p: hashlib.sha256(
        b"extra" + params.beacon + segment.to_bytes(4, "big") + p.encode()).digest())
    return ranked[:count]


def fingerprint(obj: Any) -> bytes:
    """SHA-256 of a data set built of arrays (numpy, or anything with ``.numpy()``), numbers,
    strings, bytes, and tuples, lists, dicts or dataclasses of them: what two replicas
    compare before they train. Anything else raises TypeError (the workload should then
    define :meth:`Replicable.shared_digest` itself)."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.digest()


def _feed(h: Any, obj: Any) -> None:
    if hasattr(obj, "numpy") and not isinstance(obj, np.ndarray):  # a torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        h.update(b"A" + a.dtype.str.encode() + repr(a.shape).encode() + a.tobytes())
    elif isinstance(obj, bytes | str | int | float | bool | np.generic) or obj is None:
        h.update(b"S" + type(obj).__name__.encode() + repr(obj).encode())
    elif isinstance(obj, tuple | list):
        h.update(b"L%d" % len(obj))
        for item in obj:
            _feed(h, item)
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for key in sorted(obj, key=repr):
            _feed(h, key)
            _feed(h, obj[key])
    elif hasattr(obj, "__dataclass_fields__"):
        _feed(h, {f: getattr(obj, f) for f in obj.__dataclass_fields__})
    else:
        raise TypeError(f"cannot fingerprint a {type(obj).__name__}: give the workload a "
                        "shared_digest() of its own")


class Replicable(Workload):
    """A workload replicated rounds can run (see the module's docstring for the contract).

    ``replicated`` says whether the coordinator runs its rounds replicated (set by
    :meth:`replicate`); ``weights`` is the coordinator's global model, one flat vector."""

    replicated: bool = False
    segments: int = 4
    replicas: int = 3
    quorum: int = 2
    dispute: str = "reexecute"
    weights: np.ndarray
    # the hyperparameters TaskParams carries to the replicas
    task_lr: float = 0.1
    task_weight_decay: float = 0.0
    task_batch: int = 1
    task_epochs: int = 1

    def replicate(self, *, segments: int, replicas: int, quorum: int | None = None,
                  dispute: str = "reexecute") -> None:
        """Run this workload's rounds replicated: ``segments`` tasks a round, each trained by
        ``replicas`` peers, accepted on ``quorum`` equal digests (default: a majority)."""
        if not 1 <= segments <= MAX_SEGMENTS or not 1 <= replicas <= 64:
            raise ValueError("segments must be in [1, 4096] and replicas in [1, 64]")
        if dispute not in DISPUTE_MODES:
            raise ValueError(f"dispute must be one of {DISPUTE_MODES}")
        quorum = quorum if quorum is not None else (1 if replicas == 1 else replicas // 2 + 1)
        if not 1 <= quorum <= replicas:
            raise ValueError("quorum must be in [1, replicas]")
        self.segments, self.replicas, self.quorum, self.dispute = \
            segments, replicas, quorum, dispute
        self.replicated = True

    # --- what a subclass writes ----------------------------------------------------------
    def replica_data(self, data: Any) -> Any:
        """The shared training data, from a peer's parsed ``--data`` (``None``: the
        coordinator's own copy)."""
        raise NotImplementedError

    def shared_digest(self, shared: Any, segments: int) -> bytes:
        """SHA-256 naming ``shared`` as cut into ``segments`` parts."""
        raise NotImplementedError

    def train_task(self, start: np.ndarray, shared: Any, params: TaskParams, round: int,
                   segment: int) -> np.ndarray:
        """Part ``segment``'s new weights from ``start``: deterministic, float32."""
        raise NotImplementedError

    def combine(self, updates: np.ndarray) -> np.ndarray:
        """The round's update from the accepted parts' updates (one row each)."""
        raise NotImplementedError

    def apply_update(self, update: np.ndarray | None, n: int) -> dict[str, Any]:
        """Add ``update`` to the global weights; the published result."""
        raise NotImplementedError

    # --- the rest ------------------------------------------------------------------------
    def task_data(self) -> Any:
        """The coordinator's copy of the shared data (to re-execute contested parts)."""
        if getattr(self, "_task_data", None) is None:
            self._task_data = self.replica_data(None)
        return self._task_data

    def make_params(self, round: int, prev_state_digest: bytes,
                    eligible: list[str]) -> TaskParams:
        blob = self.state_blob()
        assert blob is not None
        b = beacon(prev_state_digest, round)
        eligible = sorted(set(eligible))
        if len(eligible) > MAX_ELIGIBLE:  # the public seeded draw the cohorts use
            eligible = sorted(rank(eligible, b + b"eligible")[:MAX_ELIGIBLE])
        table = assign(b, self.segments, self.replicas, eligible)
        return TaskParams(
            model_digest=hashlib.sha256(blob).digest(), model_size=len(blob),
            data_digest=self.shared_digest(self.task_data(), self.segments),
            segments=self.segments, replicas=self.replicas, quorum=self.quorum,
            lr=self.task_lr, weight_decay=self.task_weight_decay, batch=self.task_batch,
            beacon=b, eligible=eligible,
            assignment=[table.get(k, []) for k in range(self.segments)], dispute=self.dispute,
            epochs=self.task_epochs)

    def apply(self, round: int, accepted: Mapping[int, np.ndarray]) -> dict[str, Any]:
        """New global weights from the accepted segments' weights; the published result.

        Segments whose weights are not all finite are left out (and listed under
        ``non_finite``): with ``replicas=1`` a segment is accepted as one peer sent it, and
        one such segment must not fail the round."""
        finite = {s: w for s, w in accepted.items() if np.all(np.isfinite(w))}
        update = None
        if finite:
            start = self.weights.astype(np.float64)
            update = self.combine(np.stack([w.astype(np.float64) - start
                                            for w in finite.values()]))
        result = self.apply_update(update, len(finite))
        result["non_finite"] = sorted(s for s in accepted if s not in finite)
        return result

    def required_blobs(self, announce: RoundAnnounce) -> list[tuple[bytes, int]]:
        p = decode(announce.workload_params, TaskParams)
        return [(p.model_digest, p.model_size)]

    def decode_model(self, blob: bytes) -> np.ndarray:
        """A model blob (safetensors, one float32 tensor) as this workload's weights."""
        return models.decode_weights(blob, self.vector_len())
