"""What the HTTP API may see of the coordinator: its collaborators, named one by one.

:func:`coordinator.api.build_app` is handed a :class:`View`, never the coordinator: the
endpoints read the store, the node's addresses and faults, the open round's number, the
workload, the admission policy's counts and the reputation; the only things they change
go through the prompt jobs (a queued search) and the legacy values (a value posted in
the clear), each of which checks its own input.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from peer.node import NetworkNode
from protocol.policy.admission import AdmissionPolicy
from protocol.policy.replication import Reputation
from protocol.wire.messages import StatsContribution

from .legacy import Legacy
from .prompt_jobs import PromptJobs
from .rounds import OpenRound
from .store import Store


@dataclass
class View:
    store: Store
    node: NetworkNode
    open: OpenRound
    workload: Any
    admission: AdmissionPolicy
    reputation: Reputation
    prompt_jobs: PromptJobs | None = None
    legacy: Legacy | None = None
    started_at: float = field(default_factory=time.time)
    metrics: Any = None  # a prometheus_client CollectorRegistry, for GET /metrics

    @property
    def peer_id(self) -> str:
        return self.node.peer_id

    def round_number(self) -> int:
        """The open round, else the last one."""
        number = self.open.number
        return number if number is not None else self.store.last_round()

    def legacy_epoch(self) -> int:
        """The round legacy posts go to: the open one, else the next to open."""
        number = self.open.number
        return number if number is not None else self.store.last_round() + 1

    def offer_legacy(self, epoch: int, value: StatsContribution, source: str) -> str | None:
        """Take a value posted in the clear; None if taken, else why not."""
        if self.legacy is None:
            return "this workload takes no values in the clear"
        return self.legacy.offer(epoch, self.legacy_epoch(), value, source)
