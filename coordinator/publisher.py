"""Publishing a round's outcome: the signed result, the new state, the books kept.

For each closed round: merge values posted in the clear (workloads that take them),
account the privacy spent (DP rounds), keep the new model by digest, save the
reputation events, seal the :class:`RoundResult` (inline, or by digest when too big
for gossip), store it, prune old rounds, and send it.
"""

from __future__ import annotations

import logging
from typing import Any

from peer.node import NetworkNode
from protocol.audit.log import Refusal
from protocol.crypto import dp
from protocol.policy.replication import Reputation
from protocol.rounds.base import Outcome, RoundLogic
from protocol.wire.canonical import canonical_json, state_digest
from protocol.wire.messages import RESULT, BlobRef, RoundResult, encode

from .legacy import Legacy
from .meter import Meter
from .metrics import CoordinatorMetrics
from .outbox import Outbox
from .roundlog import LogWriter
from .store import Store

log = logging.getLogger("hypergossip.coordinator")


class Publisher:
    def __init__(self, store: Store, node: NetworkNode, outbox: Outbox, workload: Any,
                 reputation: Reputation, legacy: Legacy | None, *, inline_result_max: int,
                 retain_rounds: int, meter: Meter, metrics: CoordinatorMetrics,
                 log_retain: int = 0, log_keep: int = 32, lie: str = "",
                 round_log: bool = True):
        self.store, self.node, self.outbox, self.workload = store, node, outbox, workload
        self.reputation, self.legacy, self.meter = reputation, legacy, meter
        self.metrics = metrics
        self.inline_result_max, self.retain_rounds = inline_result_max, retain_rounds
        self._rep_saved = len(reputation.history)
        self.log_keep = log_keep
        self.log = LogWriter(store, outbox, retain=log_retain, keep=log_keep,
                             lie=lie) if round_log else None
        self.head: bytes | None = None  # the round log's latest signed head

    def publish_failed(self, number: int, error: str) -> None:
        self._publish(number, {}, Outcome("failed", 0, {"error": error}))

    def publish_legacy(self, number: int) -> None:
        """An epoch of values posted over the legacy HTTP API alone (no peer's input)."""
        self._publish(number, {}, Outcome("published", 0, {
            "count": 0, "note": "no peer took part: values posted over the legacy HTTP API "
            "alone"}))

    def publish(self, rnd: RoundLogic, outcome: Outcome, refusals: list[Refusal] | None = None,
                uncounted: int = 0) -> None:
        """Publish ``rnd``'s outcome; ``refusals`` (and ``uncounted`` more) go to its record
        in the round log."""
        self._publish(rnd.number, dict(rnd.rejected), outcome, refusals or [], uncounted)

    def _publish(self, number: int, rejected: dict[str, int], outcome: Outcome,
                 refusals: list[Refusal] | None = None, uncounted: int = 0) -> None:
        with self.meter.timed("publish", number):
            if self.legacy is not None:
                outcome.result = self.legacy.settle(number, outcome.status, outcome.result)
            if "dp" in outcome.result:
                self._account_dp(outcome.result["dp"])
            if outcome.status == "published" and \
                    (blob := self.workload.state_blob()) is not None:
                self.node.blobs.put(blob)  # the new model, fetched by digest next round
                self.store.set_meta("state_blob", self.store.put_blob(blob))
                # the models the last --log-keep rounds started from: auditors replay them
                self.store.prune_blobs(keep=self.store.get_meta("state_blob") or "",
                                       recent=self.log_keep + 2)
            self.save_reputation()
            state = canonical_json(outcome.result)
            digest = state_digest(outcome.result)
            inline, ref = state, None
            if len(state) > self.inline_result_max:
                # too big for gossip: peers fetch it by digest from us or a neighbour
                self.node.blobs.put(state)
                inline, ref = b"", BlobRef(digest=digest, size=len(state))
            result = RoundResult(round=number, workload=self.workload.name,
                                 status=outcome.status, accepted=outcome.accepted,
                                 rejected=rejected, state_digest=digest, result=inline,
                                 blob=ref)
            wire = self.outbox.seal(RESULT, number, encode(result))
            self.store.close_round(number, outcome.status, outcome.accepted, rejected,
                                   outcome.result, digest, wire)
            self._prune(number)
            if self.log is not None:
                self.head, forged = self.log.write(number, wire, refusals or [], uncounted)
            self.outbox.result(number, wire)
            if self.log is not None and self.head is not None:
                self.outbox.head(number, self.head, forged)
            self.metrics.rounds.labels(outcome.status).inc()
        log.info("round %d %s: %d accepted, rejected %s, result %s", number, outcome.status,
                 outcome.accepted, rejected or "none", outcome.result)

    def _account_dp(self, info: dict[str, Any]) -> None:
        """Privacy spent over every DP round published so far."""
        dp_rounds = int(self.store.get_meta("dp_rounds") or 0) + 1
        self.store.set_meta("dp_rounds", str(dp_rounds))
        info["rounds_so_far"] = dp_rounds
        info["cumulative_epsilon"] = dp.epsilon(info["noise_multiplier"], info["delta"],
                                                dp_rounds)

    def _prune(self, number: int) -> None:
        retain = self.retain_rounds
        if retain and number % max(1, min(100, retain // 4)) == 0 and number > retain:
            gone = self.store.prune_rounds(before=number - retain + 1)
            log.info("kept the last %d rounds in the database; forgot %d older ones", retain,
                     gone)

    def save_reputation(self) -> None:
        new_events = self.reputation.history[self._rep_saved:]
        if new_events:
            self.store.add_reputation(new_events)
            self._rep_saved = len(self.reputation.history)
