"""The coordinator's Prometheus metrics, served at ``GET /metrics``.

Events are counted where they happen: rounds closed by status (the publisher), round
and phase durations (the round driver), messages accepted by domain and refused by
reason (the intake). What is a state rather than an event (admitted peers, sessions and
their queued frames, the open round, prompt jobs, LLM calls and cache hits) is read when
scraped, as are the network node's own figures (:mod:`peer.metrics`). Every label value
comes from a fixed set our code names (statuses, modes, phases, domains, refusal
reasons), so nothing a peer sends can add a series.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from peer.metrics import node_registry

# seconds: a clear round on loopback takes well under one, a SecAgg+ round of a thousand
# peers on two cores ten minutes
ROUND_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
PHASE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class CoordinatorMetrics:
    def __init__(self, node: Any):
        self.registry = node_registry(node)
        r = self.registry
        self.rounds = Counter("hypergossip_rounds", "Rounds closed, by status",
                              ["status"], registry=r)
        self.round_seconds = Histogram(
            "hypergossip_round_duration_seconds", "A round from its opening to its result",
            ["mode"], buckets=ROUND_BUCKETS, registry=r)
        self.phase_seconds = Histogram(
            "hypergossip_phase_duration_seconds", "A round's phases: 'announce' from the "
            "opening to the first notice, each notice's phase until the next step, 'work' "
            "the coordinator's own fetches and computation", ["mode", "phase"],
            buckets=PHASE_BUCKETS, registry=r)
        self.accepted = Counter("hypergossip_messages_accepted",
                                "Signed messages from peers taken in, by domain", ["domain"],
                                registry=r)
        self.rejected = Counter("hypergossip_messages_rejected",
                                "Messages from peers refused, by reason", ["reason"],
                                registry=r)

    def watch(self, coordinator: Any) -> None:
        """Read ``coordinator``'s state at each scrape."""
        self.registry.register(_StateCollector(coordinator))


class _StateCollector:
    def __init__(self, coordinator: Any):
        self.c = coordinator

    def collect(self) -> Iterator[Metric]:
        c = self.c
        yield GaugeMetricFamily("hypergossip_admitted_peers", "Peers admitted (enrolled)",
                                value=c.store.count_admitted())
        yield GaugeMetricFamily("hypergossip_live_peers", "Admitted peers connected now "
                                "(or within the liveness grace)", value=len(c.live_peers()))
        yield GaugeMetricFamily("hypergossip_sessions", "Peers' open sessions",
                                value=len(c.sessions.peers()))
        yield GaugeMetricFamily("hypergossip_session_queued_frames", "Frames queued on "
                                "sessions, not yet written", value=c.sessions.queued())
        number = c.open.number
        yield GaugeMetricFamily("hypergossip_open_round", "The open round's number (0: none)",
                                value=number or 0)
        yield GaugeMetricFamily("hypergossip_last_round", "The last round opened",
                                value=c.store.last_round())
        jobs = c.prompt_jobs
        if jobs is not None:
            yield GaugeMetricFamily("hypergossip_prompt_jobs_queued",
                                    "Prompt jobs waiting", value=c.store.queue_length())
            calls = CounterMetricFamily("hypergossip_llm_calls", "LLM outputs made for prompt "
                                        "jobs, by where (here, or verified on peers)",
                                        labels=["where"])
            for where in ("here", "peers"):
                calls.add_metric([where], jobs.llm_calls[where])
            yield calls
            yield CounterMetricFamily("hypergossip_llm_cache_hits", "LLM outputs taken from "
                                      "the shared cache instead", value=jobs.cache_hits)
