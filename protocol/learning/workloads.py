"""Workloads: what a round computes. One small class each, found by name.

A workload says what a peer contributes and how the coordinator turns the
contributions into a published, JSON-able result. Everything about moving
messages, deadlines, signatures and secrecy lives elsewhere, so a new
workload is a new class here and a name in :data:`WORKLOADS`, not code
threaded through the daemons. A workload serves two round modes:

* clear (``--insecure``): each peer sends ``contribution_schema`` (range
  checked by its schema), the coordinator calls :meth:`Workload.aggregate`;
* secure: each peer turns its data into a float vector of
  :meth:`Workload.vector_len` (:meth:`Workload.vector`), the vectors are
  summed under secure aggregation after clipping every coordinate to
  ``[-clip, clip]``, and the coordinator only sees the sum, which
  :meth:`Workload.finalize` turns into the result.
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
from ..wire.messages import (
    PlainVector,
    RoundAnnounce,
    SchemaError,
    StatsContribution,
    Strict,
    decode,
    encode,
)
from . import aggregators, datasets


class Workload:
    name: ClassVar[str]
    contribution_schema: ClassVar[type[Strict]]
    clip: ClassVar[float]  # per-coordinate bound of secure-mode vectors
    ring_bits: ClassVar[int] = 32  # secure-mode ring Z_2^bits; 32 keeps uploads at 1x float32
    runs_rounds: ClassVar[bool] = True  # False: the coordinator runs jobs instead (prompt)
    takes_unprotected: ClassVar[bool] = False  # values posted in the clear (legacy HTTP API)

    def round_params(self, round: int) -> bytes:
        """Workload parameters the coordinator puts in round ``round``'s announcement."""
        return b""

    def state_blob(self) -> bytes | None:
        """Coordinator: the current state peers must fetch by digest (model weights)."""
        return None

    def restore(self, result: dict[str, Any], blob: bytes | None) -> None:
        """Coordinator after a restart: resume from the last published result and state."""

    def check(self, contribution: Strict) -> None:
        """Semantic checks beyond the schema; raise :class:`SchemaError` to refuse."""

    def aggregate(self, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        """Clear mode: combine accepted contributions (by sender peer id) into the result."""
        raise NotImplementedError

    def vector_len(self) -> int:
        raise NotImplementedError

    def bound(self, vector: np.ndarray) -> np.ndarray:
        """Project a peer's vector onto the workload's bounded input set (before DP noise)."""
        raise NotImplementedError

    def sensitivity(self) -> float:
        """Largest L2 distance between two vectors :meth:`bound` can return (one record's
        influence on the sum when it is replaced): what DP noise is calibrated to."""
        raise NotImplementedError

    def l2_bound(self) -> float | None:
        """The largest L2 norm :meth:`bound` can return, when the workload has one (robust
        secure rounds check each group sum against it: protocol.rounds.robust)."""
        return None

    def range_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(low, high) per coordinate when secure rounds can prove every input lies in them
        (protocol.rounds.verified: a few numbers); None for vectors too long for that."""
        return None

    def finalize(self, total: np.ndarray, n: int) -> dict[str, Any]:
        """Secure mode: the result from the decoded sum of ``n`` peers' vectors."""
        raise NotImplementedError

    # --- peer side ---------------------------------------------------------------------------
    def parse_data(self, text: str) -> Any:
        """Parse a peer's ``--data`` argument into its private input."""
        raise NotImplementedError

    def required_blobs(self, announce: RoundAnnounce) -> list[tuple[bytes, int]]:
        """Peer: (digest, size) of the blobs it must fetch before contributing."""
        return []

    def contribute(self, announce: RoundAnnounce, data: Any,
                   blobs: Mapping[bytes, bytes]) -> Strict:
        """Clear mode: the contribution a peer holding ``data`` sends for ``announce``."""
        raise NotImplementedError

    def vector(self, announce: RoundAnnounce, data: Any,
               blobs: Mapping[bytes, bytes]) -> np.ndarray:
        """Secure mode: the float vector a peer holding ``data`` contributes."""
        raise NotImplementedError


class Stats(Workload):
    """The seed's challenge 1 statistic: count, sums and means of height (cm) and weight (kg).

    Clear mode sums with ``math.fsum`` (exactly rounded), so the published mean
    does not depend on arrival order. Secure mode sums the fixed-point
    encoding of ``[height, weight]`` and reports the encoding's error bound.
    """

    name = "stats"
    contribution_schema = StatsContribution
    clip = 300.0
    ring_bits = 64  # two numbers: a wide ring costs nothing and leaves ~1e-13 quantization

    def aggregate(self, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        values = [c for c in contributions.values() if isinstance(c, StatsContribution)]
        return self._result(len(values), math.fsum(v.height for v in values),
                            math.fsum(v.weight for v in values))

    def vector_len(self) -> int:
        return 2

    def finalize(self, total: np.ndarray, n: int) -> dict[str, Any]:
        return self._result(n, float(total[0]), float(total[1]))

    LOW = np.array([50.0, 20.0])  # the schema's bounds: height cm, weight kg
    HIGH = np.array([250.0, 300.0])

    def bound(self, vector: np.ndarray) -> np.ndarray:
        return np.clip(vector, self.LOW, self.HIGH)

    def sensitivity(self) -> float:
        return float(np.linalg.norm(self.HIGH - self.LOW))

    def range_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.LOW, self.HIGH

    @staticmethod
    def _result(n: int, total_h: float, total_w: float) -> dict[str, Any]:
        return {
            "count": n,
            "total_height": total_h,
            "total_weight": total_w,
            "mean_height": total_h / n if n else None,
            "mean_weight": total_w / n if n else None,
        }

    takes_unprotected = True

    def merge_unprotected(self, result: dict[str, Any],
                          values: list[StatsContribution]) -> dict[str, Any]:
        """Add values that arrived in the clear (the seed's legacy HTTP API): counted apart,
        labelled unprotected, and combined with the protected ones in ``combined``."""
        unprotected = self.aggregate({str(i): v for i, v in enumerate(values)})
        unprotected["label"] = "unprotected: sent in the clear over the legacy HTTP API"
        n = (result.get("count") or 0) + unprotected["count"]
        total_h = (result.get("total_height") or 0.0) + unprotected["total_height"]
        total_w = (result.get("total_weight") or 0.0) + unprotected["total_weight"]
        return {**result, "unprotected": unprotected, "combined": self._result(n, total_h, total_w)}

    def parse_data(self, text: str) -> StatsContribution:
        """``height=170.5,weight=65`` (cm, kg)."""
        fields: dict[str, float] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {part!r}")
            fields[key.strip()] = float(value)
        try:
            return msgspec.convert(fields, StatsContribution)
        except msgspec.ValidationError as exc:
            raise ValueError(f"--data: {exc}") from exc

    def contribute(self, announce: RoundAnnounce, data: Any,
                   blobs: Mapping[bytes, bytes] | None = None) -> StatsContribution:
        if not isinstance(data, StatsContribution):
            raise SchemaError("stats workload needs a StatsContribution")
        return data

    def vector(self, announce: RoundAnnounce, data: Any,
               blobs: Mapping[bytes, bytes] | None = None) -> np.ndarray:
        c = self.contribute(announce, data)
        return np.array([c.height, c.weight], dtype=np.float64)


class _LazyModels:
    """``protocol.learning.models`` imports torch (seconds, hundreds of MB): only fedavg
    pays for it."""

    def __getattr__(self, name: str) -> Any:
        from . import models as real

        return getattr(real, name)


models = _LazyModels()
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


class ModelWorkload(Workload):
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
    """

    contribution_schema = PlainVector
    ring_bits = 32
    epochs: ClassVar[int] = 5
    lr: ClassVar[float] = 0.1
    clip_norm: ClassVar[float] = 2.0

    def __init__(self, *, epochs: int | None = None, lr: float | None = None,
                 clip_norm: float | None = None, aggregator: str = "mean",
                 tolerance: float = 0.2, seed: int = 0, **options: Any):
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
        return {**self.apply_update(update, n), "aggregator": self.aggregator}

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
        p = decode(announce.workload_params, FedAvgParams)
        return [(p.model_digest, p.model_size)]

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
        return models.initial_vector(self.seed)  # torch's seeded initial weights

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
        idx = datasets.dirichlet_partition(ds.train_y, n, alpha, seed)[i]
        return PeerShard(ds.train_x[idx], ds.train_y[idx], f"shard {i}/{n} ({len(idx)} ex.)")

    def train(self, params: np.ndarray, data: Any, *, epochs: int, lr: float,
              seed: int) -> np.ndarray:
        if not isinstance(data, PeerShard):
            raise SchemaError("fedavg needs a PeerShard")
        return models.train(params, data.x, data.y, epochs=epochs, lr=lr, seed=seed)


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


class PromptSearchWorkload(Workload):
    """Genetic prompt search: no rounds; the coordinator runs jobs (coordinator/prompt_jobs)
    and peers serve LLM evaluations (peer --llm-backend)."""

    name = "prompt"
    contribution_schema = PlainVector
    clip = 0.0
    runs_rounds = False

    def parse_data(self, text: str) -> None:
        return None
