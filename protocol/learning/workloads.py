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

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec
import numpy as np

from ..wire.messages import (
    PlainVector,
    RoundAnnounce,
    SchemaError,
    StatsContribution,
    Strict,
)


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

    def starting_blobs(self) -> list[bytes]:
        """Peer: blobs it can make itself that a round may name by digest (a model's
        initial weights, the same bytes on every peer): kept in its blob store from the
        start, so a first round's model needs no fetch (at N=1000 every peer fetching it at
        once spread it too slowly: 969 copies came from the coordinator). A blob that is not
        the announced one is harmless: rounds name blobs by digest. Override it only where
        making them is cheap and touches no shared state (fedavg's numpy-seeded initial
        weights; not a torch model's, whose global RNG other peers' training in the same
        process relies on)."""
        return []

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


class PromptSearchWorkload(Workload):
    """Genetic prompt search: no rounds; the coordinator runs jobs (coordinator/prompt_jobs)
    and peers serve LLM evaluations (peer --llm-backend)."""

    name = "prompt"
    contribution_schema = PlainVector
    clip = 0.0
    runs_rounds = False

    def parse_data(self, text: str) -> None:
        return None
