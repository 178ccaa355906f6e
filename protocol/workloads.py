"""Workloads: what a round computes. One small class each, found by name.

A workload says what a peer contributes (a strict schema), how the
coordinator checks one contribution beyond its schema, and how it combines
the accepted ones into a published, JSON-able result. Everything about
moving messages, deadlines and signatures lives elsewhere, so a new workload
(the private statistic, model training) is a new class here and a name in
:data:`WORKLOADS`, not code threaded through the daemons.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import msgspec

from .messages import RoundAnnounce, SchemaError, StatsContribution, Strict


class Workload:
    name: ClassVar[str]
    contribution_schema: ClassVar[type[Strict]]

    def round_params(self, round: int) -> bytes:
        """Workload parameters the coordinator puts in round ``round``'s announcement."""
        return b""

    def check(self, contribution: Strict) -> None:
        """Semantic checks beyond the schema; raise :class:`SchemaError` to refuse."""

    def aggregate(self, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        """Combine accepted contributions (by sender peer id) into the published result."""
        raise NotImplementedError

    # --- peer side ---------------------------------------------------------------------------
    def parse_data(self, text: str) -> Any:
        """Parse a peer's ``--data`` argument into its private input."""
        raise NotImplementedError

    def contribute(self, announce: RoundAnnounce, data: Any) -> Strict:
        """The contribution a peer holding ``data`` sends for ``announce``."""
        raise NotImplementedError


class ClearStats(Workload):
    """The seed's challenge 1 statistic in the clear: count, sums and means of height/weight.

    Sums use ``math.fsum`` (exactly rounded), so the published mean does not
    depend on the order contributions arrived in.
    """

    name = "stats"
    contribution_schema = StatsContribution

    def aggregate(self, contributions: Mapping[str, Strict]) -> dict[str, Any]:
        values = [c for c in contributions.values() if isinstance(c, StatsContribution)]
        n = len(values)
        total_h = math.fsum(v.height for v in values)
        total_w = math.fsum(v.weight for v in values)
        return {
            "count": n,
            "total_height": total_h,
            "total_weight": total_w,
            "mean_height": total_h / n if n else None,
            "mean_weight": total_w / n if n else None,
        }

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

    def contribute(self, announce: RoundAnnounce, data: Any) -> StatsContribution:
        if not isinstance(data, StatsContribution):
            raise SchemaError("stats workload needs a StatsContribution")
        return data


WORKLOADS: dict[str, type[Workload]] = {ClearStats.name: ClearStats}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]()
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}") from None
