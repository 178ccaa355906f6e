"""Model workloads: federated averaging of any model kept as one flat vector.

:class:`ModelWorkload` is the public way to bring a model (four methods, Flower's
convention); :class:`FedAvg`, the built-in digits MLP, is one. Updates travel as
little-endian float32 vectors (clear rounds) or secure-aggregation inputs; the global
weights as a one-tensor safetensors blob fetched by digest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import msgspec
import numpy as np

from ..wire import tensors
from ..wire.messages import PlainVector, RoundAnnounce, SchemaError, Strict, decode, encode
from . import aggregators, datasets
from .replicable import MODE as REPLICATED
from .replicable import Replicable, TaskParams, fingerprint, task_seed
from .workloads import models

MLP_PARAMETERS = 784 * 64 + 64 + 64 * 10 + 10  # models.mlp(hidden=64)


class FedAvgParams(Strict):
    model_digest: Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
    model_size: Annotated[int, msgspec.Meta(ge=1, le=64 * 1024 * 1024)]
    epochs: Annotated[int, msgspec.Meta(ge=1, le=100)]
    lr: Annotated[float, msgspec.Meta(gt=0, le=10)]
    clip_norm: Annotated[float, msgspec.Meta(gt=0)]
    seed: int


@dataclass(frozen=True)
class PeerShard:
    """A peer's private training examples (never leave the peer)."""

    x: np.ndarray
    y: np.ndarray
    label: str


class ModelWorkload(Replicable):
    """Bring your own model: federated averaging of any model kept as one flat float
    vector. A subclass says four things, as in Flower's ClientApp/ServerApp convention:

    * :meth:`initial_parameters`: the model's starting weights (coordinator);
    * :meth:`load_data`: a peer's private data, part ``part`` of ``parts`` (peer);
    * :meth:`train`: new weights from the round's weights on that data (peer);
    * :meth:`evaluate`: metrics of the weights on held-out data (coordinator), e.g.
      ``{"accuracy": 0.93}``; the dashboard plots the first it knows.

    hypergossip does the rest in every round mode: peers fetch the weights by digest,
    contribute ``clip_l2(train(w) - w, clip_norm)`` (in the clear, or under robust or plain
    secure aggregation, with DP when asked), the coordinator adds the combined update
    and publishes the metrics and the new weights' digest. A peer's ``--data`` is
    ``part=I/N[,seed=S]``. Updates that are not finite, of the wrong length or over the
    clip norm are refused before they count; a subclass that raises fails its round with
    the reason logged (peer: it withdraws; coordinator: the round is published failed).

    Replicated rounds (``replicas=R``, ``--replicated``), for a ``train`` that is
    deterministic (equal inputs, bit-equal weights): the training set is public, cut into
    ``segments`` parts, part ``k`` being ``load_data(k, segments, 0)``; each part is
    trained from the round's weights by ``R`` peers with ``seed`` fixed by round and part,
    accepted when a quorum of them commit to and reveal the same weights (disputes are
    re-executed by the coordinator), and the parts' updates combined by ``aggregator``.
    No peer's training is trusted, and none is private: use it for public data.
    """

    contribution_schema = PlainVector
    ring_bits = 32
    epochs: ClassVar[int] = 5
    lr: ClassVar[float] = 0.1
    clip_norm: ClassVar[float] = 2.0

    def __init__(self, *, epochs: int | None = None, lr: float | None = None,
                 clip_norm: float | None = None, aggregator: str = "mean",
                 tolerance: float = 0.2, seed: int = 0, replicas: int | None = None,
                 segments: int = 4, quorum: int | None = None, dispute: str = "reexecute",
                 **options: Any):
        if epochs is not None:
            self.epochs = epochs  # type: ignore[misc]
        if lr is not None:
            self.lr = lr  # type: ignore[misc]
        if clip_norm is not None:
            self.clip_norm = clip_norm  # type: ignore[misc]
        aggregators.get_aggregator(aggregator)  # fail early on a bad name
        if not 0 <= tolerance < 0.5:
            raise ValueError("tolerance must be in [0, 0.5)")
        # clear mode: how the accepted updates are combined, told to withstand this fraction
        self.aggregator, self.tolerance = aggregator, tolerance
        self.seed, self.options = seed, options
        self._weights: np.ndarray | None = None  # the initial weights when first asked
        self._blob: bytes | None = None
        self.task_lr, self.task_epochs = self.lr, self.epochs
        if replicas is not None:
            self.replicate(segments=segments, replicas=replicas, quorum=quorum,
                           dispute=dispute)

    # --- what a subclass writes ----------------------------------------------------------
    def initial_parameters(self) -> np.ndarray:
        """The model's starting weights, one flat vector (coordinator)."""
        raise NotImplementedError

    def load_data(self, part: int, parts: int, seed: int) -> Any:
        """A peer's private data: part ``part`` of ``parts`` (0-based)."""
        raise NotImplementedError

    def train(self, params: np.ndarray, data: Any, *, epochs: int, lr: float,
              seed: int) -> np.ndarray:
        """New weights after training ``params`` on ``data`` (peer)."""
        raise NotImplementedError

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        """Metrics of ``params`` on held-out data (coordinator, after every round)."""
        return {}

    # --- the rest ------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """The global model (the coordinator's): the initial parameters until a round or a
        restore sets them. Peers never ask: they fetch it by digest."""
        if self._weights is None:
            w = np.asarray(self.initial_parameters(), dtype=np.float32)
            if w.ndim != 1 or not w.size or not np.all(np.isfinite(w)):
                raise ValueError(f"{type(self).__name__}.initial_parameters() must return a "
                                 f"non-empty 1-d finite vector, got shape {w.shape}")
            self._weights = w
        return self._weights

    @weights.setter
    def weights(self, value: np.ndarray) -> None:
        self._weights = value

    @property
    def clip(self) -> float:  # type: ignore[override]
        return self.clip_norm  # each coordinate of a clipped update is within its L2 norm

    def vector_len(self) -> int:
        return len(self.weights)

    def bound(self, vector: np.ndarray) -> np.ndarray:
        return models.clip_l2(vector, self.clip_norm)

    def sensitivity(self) -> float:
        return 2 * self.clip_norm

    def l2_bound(self) -> float:
        return self.clip_norm

    def state_blob(self) -> bytes:
        if self._blob is None:
            self._blob = models.encode_weights(self.weights)
        return self._blob

    def round_params(self, round: int) -> bytes:
        blob = self.state_blob()
        return encode(FedAvgParams(hashlib.sha256(blob).digest(), len(blob), self.epochs,
                                   self.lr, self.clip_norm, seed=round))

    def check(self, contribution: Strict) -> None:
        assert isinstance(contribution, PlainVector)
        v = _plain(contribution, self.vector_len())
        if float(np.linalg.norm(v)) > self.clip_norm * (1 + 1e-5):
            raise SchemaError(f"update norm exceeds the clip bound {self.clip_norm}")

    def aggregate(self, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        """Clear mode: the accepted updates (each checked: finite, within the clip norm)
        combined by ``aggregator`` (:mod:`protocol.learning.aggregators`), told to
        tolerate ``f = floor(tolerance * n)`` Byzantine inputs (where it takes ``f``)."""
        vectors = [_plain(c, self.vector_len()) for c in contributions.values()
                   if isinstance(c, PlainVector)]
        if not vectors:
            return self.apply_update(None, 0)
        n = len(vectors)
        f = aggregators.tolerable(math.floor(self.tolerance * n), n)
        update = aggregators.combine(self.aggregator, np.stack(vectors), f=f)
        return {**self.apply_update(update, n), "aggregator": self.aggregator,
                "tolerance": self.tolerance}

    def finalize(self, total: np.ndarray, n: int) -> dict[str, Any]:
        return self.apply_update(total / n if n else None, n)

    def apply_update(self, update: np.ndarray | None, n: int) -> dict[str, Any]:
        """Add ``update`` (the round's combined update of ``n`` peers) to the global weights;
        the published result."""
        new = self.weights if update is None else (self.weights + update).astype(np.float32)
        metrics = self.evaluate(new)  # before the weights change: a failure changes nothing
        bad = {k: v for k, v in dict(metrics).items() if not (isinstance(k, str) and isinstance(
            v, int | float) and math.isfinite(v))}
        if bad:
            raise ValueError(f"{type(self).__name__}.evaluate() returned non-finite or "
                             f"non-numeric metrics: {bad}")
        if update is not None:
            self.weights, self._blob = new, None
        blob = self.state_blob()
        return {"count": n, **metrics,
                "update_norm": float(np.linalg.norm(update)) if update is not None else 0.0,
                "model_digest": hashlib.sha256(blob).hexdigest(), "model_bytes": len(blob)}

    def restore(self, result: dict[str, Any], blob: bytes | None) -> None:
        if blob is not None:
            self.weights = models.decode_weights(blob, self.vector_len())
            self._blob = blob

    # --- peer ------------------------------------------------------------------------------
    def parse_data(self, text: str) -> Any:
        """``part=I/N[,seed=S]``: this peer's share of the workload's data."""
        opts = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        try:
            i, n = (int(v) for v in opts["part"].split("/"))
            seed = int(opts.get("seed", 0))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{self.name} --data wants part=I/N[,seed=S]: {exc}") from exc
        if not 0 <= i < n:
            raise ValueError("part I/N needs 0 <= I < N")
        return self.load_data(i, n, seed)

    def required_blobs(self, announce: RoundAnnounce) -> list[tuple[bytes, int]]:
        if announce.mode == REPLICATED:
            return super().required_blobs(announce)
        p = decode(announce.workload_params, FedAvgParams)
        return [(p.model_digest, p.model_size)]

    # --- replicated rounds (protocol.learning.replicable) --------------------------------
    def replica_data(self, data: Any) -> SharedParts:
        if getattr(self, "_shared", None) is None:
            self._shared = SharedParts(self)
        return self._shared  # the public parts, whatever this peer's own --data

    def shared_digest(self, shared: Any, segments: int) -> bytes:
        assert isinstance(shared, SharedParts)
        return shared.digest(segments)

    def train_task(self, start: np.ndarray, shared: Any, params: TaskParams, round: int,
                   segment: int) -> np.ndarray:
        assert isinstance(shared, SharedParts)
        new = np.asarray(self.train(start.copy(), shared.part(segment, params.segments),
                                    epochs=params.epochs, lr=params.lr,
                                    seed=task_seed(round, segment)))
        if new.shape != start.shape or not np.all(np.isfinite(new)):
            raise ValueError(f"{type(self).__name__}.train() returned {new.shape} values "
                             f"(finite: {bool(np.all(np.isfinite(new)))}), expected "
                             f"{start.shape[0]} finite ones")
        return new.astype(np.float32)

    def combine(self, updates: np.ndarray) -> np.ndarray:
        n = len(updates)
        f = aggregators.tolerable(math.floor(self.tolerance * n), n)
        return aggregators.combine(self.aggregator, updates, f=f)

    def decode_model(self, blob: bytes) -> np.ndarray:
        return _weights(blob)

    def _update(self, announce: RoundAnnounce, data: Any, blobs: Mapping[bytes, bytes]
                ) -> np.ndarray:
        p = decode(announce.workload_params, FedAvgParams)
        start = _weights(blobs[p.model_digest])
        new = np.asarray(self.train(start.copy(), data, epochs=p.epochs, lr=p.lr,
                                    seed=p.seed), dtype=np.float64)
        if new.shape != start.shape or not np.all(np.isfinite(new)):
            raise ValueError(f"{type(self).__name__}.train() returned {new.shape} values "
                             f"(finite: {bool(np.all(np.isfinite(new)))}), expected "
                             f"{start.shape[0]} finite ones")
        return models.clip_l2(new - start, p.clip_norm)

    def vector(self, announce: RoundAnnounce, data: Any,
               blobs: Mapping[bytes, bytes]) -> np.ndarray:
        return self._update(announce, data, blobs)

    def contribute(self, announce: RoundAnnounce, data: Any,
                   blobs: Mapping[bytes, bytes]) -> PlainVector:
        v = self._update(announce, data, blobs)
        return PlainVector(vector=v.astype("<f4").tobytes())


class FedAvg(ModelWorkload):
    """Federated averaging of an MLP on 28x28 digits (McMahan et al. 2017), with each
    peer's update clipped in L2 norm (as in DP-FedAvg, McMahan et al. 2018) so that the
    secure sum is bounded and DP noise can be calibrated: a :class:`ModelWorkload` like
    any user's.

    Each round: peers fetch the global weights by digest, train ``epochs`` of SGD on their
    private shard, and contribute ``clip(new - global)``; the coordinator adds the mean
    update to the global weights and publishes the new weights' digest and the test
    accuracy. Unweighted mean: a peer's influence does not depend on its data size.
    """

    name = "fedavg"

    def __init__(self, *, data_dir: str | None = None, **kw: Any):
        super().__init__(**kw)
        self.data_dir = data_dir
        self._test: tuple[np.ndarray, np.ndarray] | None = None

    def initial_parameters(self) -> np.ndarray:
        return models.initial_vector(self.seed)  # torch's initial distribution, numpy-seeded

    def starting_blobs(self) -> list[bytes]:
        return [self.state_blob()]  # its initial weights: numpy, seeded, ~2 ms, no torch

    def vector_len(self) -> int:
        return MLP_PARAMETERS  # a peer knows it without building the model (or torch)

    def evaluate(self, params: np.ndarray) -> dict[str, float]:
        x, y = self._test_split()
        return {"accuracy": models.accuracy(params, x, y)}

    def _test_split(self) -> tuple[np.ndarray, np.ndarray]:
        if self._test is None:
            ds = datasets.load(self.data_dir)
            self._test = (ds.test_x, ds.test_y)
        return self._test

    def parse_data(self, text: str) -> PeerShard:
        """``part=I/N[,alpha=0.5][,seed=0][,data_dir=PATH]``: this peer holds the I-th of N
        Dirichlet(alpha) non-IID shards of the training split (of real MNIST under
        data_dir, else the embedded digits)."""
        opts = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        try:
            i, n = (int(v) for v in opts["part"].split("/"))
            alpha, seed = float(opts.get("alpha", 0.5)), int(opts.get("seed", 0))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"fedavg --data wants part=I/N[,alpha=A][,seed=S]: {exc}") from exc
        if not 0 <= i < n:
            raise ValueError("part I/N needs 0 <= I < N")
        ds = datasets.load(opts.get("data_dir"))
        idx = datasets.dirichlet_part(ds.train_y, n, alpha, seed, i)
        return PeerShard(ds.train_x[idx], ds.train_y[idx], f"shard {i}/{n} ({len(idx)} ex.)")

    def load_data(self, part: int, parts: int, seed: int) -> PeerShard:
        """Replicated rounds' part ``part`` of ``parts``: every ``parts``-th training example
        from ``part`` (the peers' own shards in federated rounds are non-IID: parse_data)."""
        ds = datasets.load(self.data_dir)
        idx = datasets.segment(len(ds.train_y), parts, part)
        return PeerShard(ds.train_x[idx], ds.train_y[idx], f"part {part}/{parts}")

    def train(self, params: np.ndarray, data: Any, *, epochs: int, lr: float,
              seed: int) -> np.ndarray:
        if not isinstance(data, PeerShard):
            raise SchemaError("fedavg needs a PeerShard")
        return models.train(params, data.x, data.y, epochs=epochs, lr=lr, seed=seed)


class SharedParts:
    """Replicated rounds: the public training set as the workload's ``load_data`` cuts it,
    part by part (loaded once each)."""

    def __init__(self, workload: ModelWorkload):
        self.workload = workload
        self._parts: dict[tuple[int, int], Any] = {}
        self._digests: dict[int, bytes] = {}

    def part(self, k: int, parts: int) -> Any:
        if (k, parts) not in self._parts:
            self._parts[k, parts] = self.workload.load_data(k, parts, 0)
        return self._parts[k, parts]

    def digest(self, parts: int) -> bytes:
        """SHA-256 over every part's fingerprint: equal only for equal training sets."""
        if parts not in self._digests:
            self._digests[parts] = hashlib.sha256(b"".join(
                fingerprint(self.part(k, parts)) for k in range(parts))).digest()
        return self._digests[parts]


def _weights(blob: bytes) -> np.ndarray:
    arrays = tensors.decode(blob)
    if set(arrays) != {"weights"} or arrays["weights"].ndim != 1:
        raise SchemaError("model blob must hold one 1-d 'weights' tensor")
    return arrays["weights"].astype(np.float32)


def _plain(c: PlainVector, length: int) -> np.ndarray:
    if len(c.vector) != 4 * length:
        raise SchemaError(f"vector has {len(c.vector) // 4} values, expected {length}")
    v = np.frombuffer(c.vector, dtype="<f4").astype(np.float64)
    if not np.all(np.isfinite(v)):
        raise SchemaError("vector holds NaN or infinity")
    return v
