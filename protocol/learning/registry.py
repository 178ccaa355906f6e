"""Workloads found by name: the name peers and coordinator agree on (``--workload``).

A new workload is a class (see :class:`~protocol.learning.workloads.Workload`) and one
line in :data:`WORKLOADS`, or a :func:`register_workload` call for one defined outside
this package (a bench's vector, a user's model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .incremental import Incremental
from .workloads import FedAvg, PromptSearchWorkload, Stats, Workload

WORKLOADS: dict[str, Callable[..., Workload]] = {
    Stats.name: Stats, FedAvg.name: FedAvg, Incremental.name: Incremental,
    PromptSearchWorkload.name: PromptSearchWorkload}


def register_workload(name: str, factory: Callable[..., Workload]) -> None:
    """Make ``factory`` (a Workload class, or a function returning one) known as ``name``."""
    WORKLOADS[name] = factory


def get_workload(name: str, **options: Any) -> Workload:
    """The workload ``name``; ``options`` go to its constructor (e.g. segments=8)."""
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}") from None
    return factory(**options)
