"""Prometheus metrics: what a node knows about itself, in the text exposition format.

A node's figures are read when scraped (:class:`NodeCollector`: connections, inputs
refused or contained by kind, blob fetches by source and what the node served, libp2p
bytes in and out), so the hot paths pay nothing for them. The coordinator adds its own
(``coordinator.metrics``); a peer serves these on ``--metrics-port``
(:func:`serve_metrics`). Each registry is its node's own, never prometheus_client's
global one: several nodes may share a process (tests, benchmarks).

Label values come from fixed sets (kinds, sources, reasons and domains our code names),
never from what a remote peer sends, so no peer can grow a scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import httpserver
from .libp2p_patches import Traffic


class NodeCollector:
    """A :class:`peer.node.NetworkNode`'s own figures, read at scrape time."""

    def __init__(self, node: Any):
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        yield GaugeMetricFamily("hypergossip_connected_peers",
                                "libp2p peers connected now", value=len(node.connected_peers()))
        faults = CounterMetricFamily(
            "hypergossip_contained_inputs", "Remote inputs refused or contained by this "
            "node's network layer (limits, malformed frames, floods), by kind", labels=["kind"])
        for kind, count in sorted(node.faults.by_kind.items()):
            faults.add_metric([kind], count)
        yield faults
        blobs = node.blobs
        fetched = CounterMetricFamily("hypergossip_blob_fetches",
                                      "Blobs this node fetched, by where the copy came from",
                                      labels=["source"])
        for source, count in sorted(blobs.fetched.items()):
            fetched.add_metric([source], count)
        yield fetched
        served = CounterMetricFamily("hypergossip_blob_requests",
                                     "Blob requests this node answered, by outcome",
                                     labels=["outcome"])
        served.add_metric(["served"], sum(blobs.served.values()))
        served.add_metric(["busy"], blobs.busy)
        served.add_metric(["held"], blobs.held)
        served.add_metric(["not_held"], blobs.not_held)
        served.add_metric(["last_resort"], blobs.last_resort)
        yield served
        yield GaugeMetricFamily("hypergossip_blob_store_bytes", "Bytes of blobs held",
                                value=blobs.size)
        traffic = CounterMetricFamily(
            "hypergossip_libp2p_bytes", "TCP bytes of this process's libp2p connections",
            labels=["direction"])
        traffic.add_metric(["sent"], Traffic.sent)
        traffic.add_metric(["received"], Traffic.received)
        yield traffic


def node_registry(node: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


def metrics_response(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def metrics_app(registry: CollectorRegistry) -> Starlette:
    """``GET /metrics`` and nothing else (a peer's ``--metrics-port``)."""

    async def metrics(_: Request) -> Response:
        return metrics_response(registry)

    return Starlette(routes=[Route("/metrics", metrics, methods=["GET"])])


async def serve_metrics(registry: CollectorRegistry, host: str, port: int, *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` until cancelled (hypercorn's
    trio worker, with the same write and read deadlines as the coordinator's API)."""
    stop = trio.Event()
    await httpserver.serve_http(metrics_app(registry), httpserver.config(host, port),
                                shutdown_trigger=stop.wait, task_status=task_status)
