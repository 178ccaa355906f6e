"""The seed's legacy HTTP API: values posted in the clear, for workloads that take them.

Such values are counted apart from the protected ones and labelled unprotected in
the result (``Workload.merge_unprotected``); they are stored, so a restart keeps
them, and a failed round hands them on to the next.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

import msgspec

from protocol.wire.canonical import canonical_json
from protocol.wire.messages import StatsContribution

from .store import Store

log = logging.getLogger("hypergossip.coordinator")
MAX_LEGACY_PER_ROUND = 10_000
LEGACY = "legacy"  # store domain of values posted in the clear over HTTP


class Legacy:
    def __init__(self, store: Store, workload: Any):
        self.store, self.workload = store, workload
        self.values: dict[int, list[StatsContribution]] = {}  # round -> values in the clear

    def offer(self, epoch: int, current: int, value: StatsContribution,
              source: str) -> str | None:
        """Take a value posted in the clear for ``epoch``; None if taken, else why not."""
        if epoch != current:
            return f"epoch {epoch} is not the current epoch ({current})"
        values = self._values(epoch)
        if len(values) >= MAX_LEGACY_PER_ROUND:
            return f"this epoch already holds {MAX_LEGACY_PER_ROUND} legacy values"
        values.append(value)
        payload = canonical_json({"height": value.height, "weight": value.weight})
        self.store.record_message(hashlib.sha256(payload + os.urandom(16)).digest(), epoch,
                                  source[:64], LEGACY, b"", payload)
        log.info("epoch %d: unprotected value over HTTP from %s (%d so far)", epoch, source,
                 len(values))
        return None

    def pending(self, epoch: int) -> int:
        """Values posted for ``epoch`` so far."""
        return len(self._values(epoch))

    def settle(self, number: int, status: str, result: dict[str, Any]) -> dict[str, Any]:
        """Round ``number`` closed: its result with the round's legacy values merged in
        (published), or unchanged with the values moved on to the next round (failed)."""
        values = self._values(number)
        del self.values[number]
        if values and status == "published":
            return self.workload.merge_unprotected(result, values)
        if values:  # a failed round must not lose them: they go to the next one
            self._values(number + 1)  # loads any already stored for it first
            self.store.move_messages(LEGACY, number, number + 1)
            self.values[number + 1].extend(values)
        return result

    def _values(self, number: int) -> list[StatsContribution]:
        if number not in self.values:  # first use since start: reload what was stored
            self.values[number] = [msgspec.json.decode(m["payload"], type=StatsContribution)
                                   for m in self.store.messages(number, LEGACY)]
        return self.values[number]
