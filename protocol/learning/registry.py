"""Workloads found by name: the name peers and coordinator agree on (``--workload``).

``--workload`` takes any of:

* a built-in name (:data:`WORKLOADS`: stats, fedavg, incremental, prompt), or one a
  :func:`register_workload` call made known (a bench's vector);
* the name of a workload an installed package declares under the ``hypergossip.workloads``
  entry-point group (``[project.entry-points."hypergossip.workloads"] wine =
  "mypkg.wine:Wine"`` in its pyproject.toml), as the built-ins are declared in ours;
* ``package.module:Class``, imported from the Python path (the user's own module).

Each resolves to a :class:`~protocol.learning.workloads.Workload` subclass (or a function
returning an instance); :class:`~protocol.learning.federated.ModelWorkload` is the short
way to bring a model. The workload's ``name`` attribute is what goes on the wire, so a
peer started with ``examples.wine:Wine`` and a coordinator started with ``wine`` (an
entry point to the same class) take part in the same rounds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from .federated import FedAvg
from .incremental import Incremental
from .workloads import PromptSearchWorkload, Stats, Workload

ENTRY_POINTS = "hypergossip.workloads"
WORKLOADS: dict[str, Callable[..., Workload]] = {
    Stats.name: Stats, FedAvg.name: FedAvg, Incremental.name: Incremental,
    PromptSearchWorkload.name: PromptSearchWorkload}


class WorkloadNotFound(ValueError):
    """``--workload`` names nothing we can load; the message says what was tried."""


def register_workload(name: str, factory: Callable[..., Workload]) -> None:
    """Make ``factory`` (a Workload class, or a function returning one) known as ``name``."""
    WORKLOADS[name] = factory


def installed() -> dict[str, str]:
    """Workloads installed packages declare: name -> ``module:attr``."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}


def known() -> list[str]:
    return sorted(set(WORKLOADS) | set(installed()))


def resolve(spec: str) -> Callable[..., Workload]:
    """The factory ``spec`` names (see the module's docstring for the three forms)."""
    if spec in WORKLOADS:
        return WORKLOADS[spec]
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name == spec:
            return _checked(ep.load(), f"entry point {spec} = {ep.value}")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise WorkloadNotFound(f"unknown workload {spec!r}; known: {known()}, or give "
                               "package.module:Class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WorkloadNotFound(f"workload {spec!r}: cannot import {module_name}: {exc}") \
            from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise WorkloadNotFound(f"workload {spec!r}: {module_name} has no {attr}")
        obj = getattr(obj, part)
    return _checked(obj, spec)


def _checked(obj: Any, what: str) -> Callable[..., Workload]:
    if isinstance(obj, type) and not issubclass(obj, Workload):
        raise WorkloadNotFound(f"workload {what}: {obj.__name__} is not a Workload subclass "
                               "(protocol.learning.workloads.Workload, or "
                               "protocol.learning.federated.ModelWorkload)")
    if not callable(obj):
        raise WorkloadNotFound(f"workload {what} is neither a class nor a function")
    return obj


def get_workload(spec: str, **options: Any) -> Workload:
    """The workload ``spec`` names, built with ``options`` (e.g. segments=8)."""
    workload = resolve(spec)(**options)
    if not isinstance(workload, Workload):
        raise WorkloadNotFound(f"workload {spec!r} made a {type(workload).__name__}, not a "
                               "Workload")
    name = getattr(workload, "name", None)
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        raise WorkloadNotFound(f"workload {spec!r} needs a name (1-64 characters): the one "
                               "peers and coordinator agree on")
    return workload
