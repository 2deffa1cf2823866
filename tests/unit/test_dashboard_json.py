"""The Grafana dashboard in compose/ only queries metrics the runner exports."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.metrics import LaneCollector
from core.status import StatusReport
from core.testing import InMemorySink
from tests.support.tally import TallyProjection

DASHBOARD = Path(__file__).resolve().parents[2] / "compose/grafana/dashboards/projectionist.json"


def test_every_dashboard_query_names_an_exported_metric() -> None:
    lane = Lane(TallyProjection(), InMemorySink(), InMemoryEventStore())
    report = StatusReport(generated_at=datetime.now(UTC), head=None, fence_age_seconds=0, lanes=[])
    app: Any = SimpleNamespace(lanes=[lane], last_report=report)
    exported = set()
    for family in LaneCollector(app).collect():
        exported.add(family.name)
        exported.update(sample.name for sample in family.samples)
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 8
    for panel in panels:
        for target in panel["targets"]:
            names = set(re.findall(r"projectionist_[a-z_]+", target["expr"]))
            assert names, target
            assert names <= exported, (panel["title"], names - exported)
