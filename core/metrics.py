"""Prometheus metrics per lane on an HTTP endpoint (``/metrics``), with ``/healthz`` and
``/readyz`` for orchestrators."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
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
        lag = GaugeMetricFamily(
            "projectionist_lag_events", "Events behind the head", labels=["lane"]
        )
        lag_seconds = GaugeMetricFamily(
            "projectionist_lag_seconds", "Age of the oldest event not yet applied", labels=["lane"]
        )
        fence = GaugeMetricFamily(
            "projectionist_fence_age_seconds", "Age of the oldest open writing transaction"
        )
        report = getattr(self.app, "last_report", None)
        if report is not None:
            for row in report.lanes:
                lag.add_metric([row.lane], row.lag_events)
                lag_seconds.add_metric([row.lane], row.lag_seconds)
            fence.add_metric([], report.fence_age_seconds)
        yield from (lag, lag_seconds, fence)
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
        yield from _sink_counters(self.app)


def _sink_counters(app: App) -> Iterator[Metric]:
    """``projectionist_sink_<name>{sink=...}`` for every number a lane's sink reports
    (:meth:`core.sink.Sink.counters`), each sink once however many lanes share it."""
    families: dict[str, GaugeMetricFamily] = {}
    sinks = {id(lane.sink): lane.sink for lane in app.lanes}
    for sink in sinks.values():
        for name, (value, about) in sink.counters().items():
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    f"projectionist_sink_{name}", about, labels=["sink"]
                )
            family.add_metric([sink.name], value)
    yield from families.values()


def _checks(app: App) -> dict[str, tuple[int, bytes]]:
    """``/healthz``: the process answers. ``/readyz``: every lane has started and none halted."""
    states = [lane.state for lane in app.lanes]
    ready = all(s not in (LaneState.STARTING, LaneState.HALTED) for s in states)
    return {
        "/healthz": (200, b"ok\n"),
        "/readyz": (200, b"ready\n") if ready else (503, b"not ready\n"),
    }


def serve_metrics(app: App, port: int, host: str = "127.0.0.1") -> CollectorRegistry:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (a daemon thread)."""
    registry = CollectorRegistry()
    registry.register(LaneCollector(app))
    metrics = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start_response: Any) -> Any:
        check = _checks(app).get(environ.get("PATH_INFO", ""))
        if check is None:
            return metrics(environ, start_response)
        status, body = check
        reason = "OK" if status == 200 else "Service Unavailable"
        start_response(f"{status} {reason}", [("Content-Type", "text/plain")])
        return [body]

    server = make_server(host, port, route, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return registry


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""
