"""docs/status.schema.json is the schema of ``status --json``, kept in step with the code."""

from __future__ import annotations

import json
from pathlib import Path

from core.status import StatusReport

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "status.schema.json"


def test_documented_schema_matches_the_code() -> None:
    assert json.loads(SCHEMA.read_text()) == StatusReport.model_json_schema()
