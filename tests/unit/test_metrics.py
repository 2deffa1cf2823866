"""The metrics endpoint: lane counters at scrape time, health and readiness."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.metrics import serve_metrics
from core.status import LaneStatus, StatusReport
from core.strategy import LaneState
from core.testing import InMemorySink
from tests.support.tally import TallyProjection


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def served() -> tuple[int, Lane]:
    lane = Lane(TallyProjection(), InMemorySink(), InMemoryEventStore())
    lane.stats.events, lane.stats.batches = 42, 3
    port = _free_port()
    report = StatusReport(
        generated_at=datetime.now(UTC),
        head="10/20",
        fence_age_seconds=3.5,
        lanes=[
            LaneStatus(
                lane=lane.name,
                sink="memory",
                strategy="immediate",
                state="idle",
                checkpoint="9/19",
                head="10/20",
                lag_events=7,
                lag_seconds=1.25,
                rate=0.0,
                parked=0,
                retries=0,
                last_error=None,
                owner=None,
            )
        ],
    )
    app: Any = SimpleNamespace(lanes=[lane], last_report=report)
    serve_metrics(app, port)
    return port, lane


def test_metrics_health_and_readiness(served: tuple[int, Lane]) -> None:
    port, lane = served
    status, body = _get(port, "/metrics")
    assert status == 200
    assert 'projectionist_events_total{lane="tally@memory"} 42.0' in body
    assert 'projectionist_lane_state{lane="tally@memory",state="starting"} 1.0' in body
    assert 'projectionist_lag_events{lane="tally@memory"} 7.0' in body
    assert 'projectionist_lag_seconds{lane="tally@memory"} 1.25' in body
    assert "projectionist_fence_age_seconds 3.5" in body
    assert _get(port, "/healthz") == (200, "ok\n")
    assert _get(port, "/readyz")[0] == 503  # still starting
    lane.state = LaneState.IDLE
    assert _get(port, "/readyz") == (200, "ready\n")
    lane.state = LaneState.HALTED
    assert _get(port, "/readyz")[0] == 503


class _CountingSink(InMemorySink):
    def counters(self) -> dict[str, tuple[float, str]]:
        return {"calls_over_memory_limit": (2, "Calls run once without the limit")}


def test_a_sinks_counters_are_gauges_labelled_by_sink_once_per_sink() -> None:
    """Two lanes writing to one sink: its numbers appear once, under the sink's name."""
    sink, store = _CountingSink(name="analytics"), InMemoryEventStore()
    lanes = [Lane(TallyProjection(), sink, store), Lane(TallyProjection(), sink, store)]
    port = _free_port()
    app: Any = SimpleNamespace(lanes=lanes, last_report=None)
    serve_metrics(app, port)
    body = _get(port, "/metrics")[1]
    assert "# HELP projectionist_sink_calls_over_memory_limit Calls run once" in body
    line = 'projectionist_sink_calls_over_memory_limit{sink="analytics"} 2.0'
    assert body.count(line) == 1
