"""Prometheus metrics per lane, on an HTTP endpoint (``/metrics``; ``/healthz`` answers too)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.strategy import LaneState

if TYPE_CHECKING:
    from collections.abc import Iterator

    from prometheus_client.metrics_core import Metric

    from core.app import App

__all__ = ("LaneCollector", "serve_metrics")


class LaneCollector(Collector):
    """Reads the lanes' counters at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "projectionist_events", "Events processed per lane", labels=["lane"]
        )
        batches = CounterMetricFamily("projectionist_batches", "Batches flushed", labels=["lane"])
        retries = CounterMetricFamily("projectionist_retries", "Transient retries", labels=["lane"])
        parked = GaugeMetricFamily("projectionist_parked", "Parked events", labels=["lane"])
        latency = GaugeMetricFamily(
            "projectionist_batch_seconds", "Mean flush latency, last 100", labels=["lane"]
        )
        state = GaugeMetricFamily(
            "projectionist_lane_state", "1 for the lane's current state", labels=["lane", "state"]
        )
        for lane in self.app.lanes:
            s = lane.stats
            events.add_metric([lane.name], s.events)
            batches.add_metric([lane.name], s.batches)
            retries.add_metric([lane.name], s.retries)
            parked.add_metric([lane.name], s.parked)
            mean = sum(s.batch_seconds) / len(s.batch_seconds) if s.batch_seconds else 0.0
            latency.add_metric([lane.name], mean)
            for st in LaneState:
                state.add_metric([lane.name, st.value], 1.0 if lane.state is st else 0.0)
        yield from (events, batches, retries, parked, latency, state)


def serve_metrics(app: App, port: int) -> CollectorRegistry:
    """Start the metrics endpoint on 127.0.0.1:``port`` in a daemon thread."""
    registry = CollectorRegistry()
    registry.register(LaneCollector(app))
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return registry
