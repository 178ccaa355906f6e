"""What remote input broke or was refused, counted per node (``node.faults``, shown by
``GET /health`` under ``contained``), with each (kind, peer) logged at most once a minute.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import Counter
from typing import Any

from libp2p.peer.id import ID

from protocol.policy.ratelimit import LogLimiter

log = logging.getLogger("hypergossip.node")


class Faults:
    """Failures that remote input caused in the stack, by kind (a task or handler name) and
    by peer. Each is logged at most once per (kind, peer) a minute, saying how many were
    muted meanwhile."""

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()
        self.by_peer: Counter[str] = Counter()
        self._log = LogLimiter(60.0)

    def record(self, kind: str, peer: str, exc: BaseException) -> None:
        self.by_kind[kind] += 1
        if len(self.by_peer) < 10_000 or peer in self.by_peer:
            self.by_peer[peer] += 1
        muted = self._log.allow((kind, peer), time.monotonic())
        if muted is not None:
            log.warning("contained bad input from %s in %s: %s: %s%s", peer, kind,
                        type(exc).__name__, str(exc)[:200],
                        f" ({muted} more like it muted)" if muted else "")

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())


# a service (swarm, pubsub, router) -> its node's faults
_faults: weakref.WeakKeyDictionary[Any, Faults] = weakref.WeakKeyDictionary()
_UNATTRIBUTED = Faults()  # services no node registered (none in our own code)


def register(service: Any, faults: Faults) -> None:
    """Count faults of ``service`` (a swarm, pubsub or router) in ``faults``."""
    _faults[service] = faults


def faults_of(service: Any) -> Faults:
    return _faults.get(service, _UNATTRIBUTED)


def peer_name(peer: Any) -> str:
    return peer.to_base58() if isinstance(peer, ID) else "?"
