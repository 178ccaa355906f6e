"""Round modes: how one round of contributions is run, as sans-IO state machines.

Each mode is one module holding its coordinator round, its peer round and its
:class:`~protocol.rounds.base.Mode` (see :mod:`.base` for what a mode provides),
registered below by name: the name an announcement carries (``RoundAnnounce.mode``).
A new mode is one new module and one line in :data:`MODES` (or a :func:`register`
call, for a mode that lives outside this package, e.g. in a test); the coordinator
and the peer find it here and never ask which mode they run.

========== ================ ====================================================
mode       module           what a round does
========== ================ ====================================================
clear      :mod:`.clear`    each peer's contribution in the clear, combined
secagg     :mod:`.secure`   vectors summed under SecAgg+ (Bell et al. 2020)
robust     :mod:`.robust`   SecAgg+ per beacon-drawn group, each group sum
                            bound-checked, a robust aggregator over the group
                            means (secure bucketing)
vss        :mod:`.verified` range-proven inputs summed by a committee
replicated :mod:`.replicated` replicas train, commit, reveal; agreement decides
========== ================ ====================================================

May import :mod:`protocol.wire`, :mod:`protocol.crypto`, :mod:`protocol.learning` and
:mod:`protocol.policy`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.messages import WITHDRAW
from . import clear, replicated, robust, secure, verified
from .base import Mode, UnknownMode

if TYPE_CHECKING:
    from ..learning.workloads import Workload

MODES: dict[str, Mode] = {m.name: m for m in (
    clear.MODE, secure.MODE, robust.MODE, verified.MODE, replicated.MODE)}
# --secure-protocol's choices, in auto's order: range proofs where inputs have ranges
# (stats), robust where they have an L2 bound (fedavg), else the plain secure sum
SECURE = (verified.MODE.name, robust.MODE.name, secure.MODE.name)
_domains: list[frozenset[str]] = []  # peer_domains(), until the registry changes


def register(mode: Mode) -> Mode:
    """Add a mode defined elsewhere (a test's, a bench's) under ``mode.name``."""
    if MODES.get(mode.name, mode) is not mode:
        raise ValueError(f"a different round mode is registered as {mode.name!r}")
    MODES[mode.name] = mode
    _domains.clear()
    return mode


def get(name: str) -> Mode:
    """The mode an announcement names; :class:`UnknownMode` (a remote fault) otherwise."""
    try:
        return MODES[name]
    except KeyError:
        raise UnknownMode(f"unknown round mode {name!r}") from None


def select(workload: Workload, *, secure: bool = True, protocol: str = "auto",
           mode: str = "") -> Mode:
    """The mode a coordinator runs ``workload`` in: ``mode`` when named; else the workload's
    replicated mode when it asks for it (``workload.replicated``: incremental, or a model
    workload given ``replicas``); else clear when not ``secure``; else
    the secure ``protocol`` ("vss", "robust", "secagg"), or for "auto" the first of
    :data:`SECURE` that serves the workload (vss where its inputs have ranges to prove,
    robust where they have an L2 bound, else secagg)."""
    if mode:
        chosen = MODES.get(mode)
        if chosen is None:
            raise ValueError(f"unknown round mode {mode!r} ({', '.join(sorted(MODES))})")
        if not chosen.serves(workload):
            raise ValueError(f"round mode {mode} cannot run workload {workload.name}")
        return chosen
    if getattr(workload, "replicated", False) and replicated.MODE.serves(workload):
        return replicated.MODE
    if not secure:
        return clear.MODE
    if protocol == "auto":
        return next(MODES[m] for m in SECURE if MODES[m].serves(workload))
    if protocol not in SECURE:
        raise ValueError(f"unknown secure protocol {protocol!r} (auto, {', '.join(SECURE)})")
    if not MODES[protocol].serves(workload):
        raise ValueError(f"workload {workload.name} cannot run {protocol} rounds (no input "
                         f"{'ranges' if protocol == 'vss' else 'L2 bound'}): use secagg")
    return MODES[protocol]


def public_domains(workload: Workload) -> frozenset[str]:
    """Round messages that peers of ``workload`` also gossip (for audit), over every mode
    that serves it: a node subscribes to the public topic when this is not empty."""
    return frozenset().union(*(m.public_domains for m in MODES.values() if m.serves(workload)))


def peer_domains() -> frozenset[str]:
    """Every domain a peer may sign a round message for, in any registered mode, and a
    withdrawal from the round (asked for every message the coordinator takes in: kept
    until the next :func:`register`)."""
    if not _domains:
        _domains.append(frozenset({WITHDRAW}).union(*(m.domains for m in MODES.values())))
    return _domains[0]
