"""docs/event-log.md shows the event log's DDL exactly as the store runs it."""

from __future__ import annotations

import re
from pathlib import Path

from core.eventstore.postgres_schema import schema_ddl

PAGE = Path(__file__).resolve().parents[2] / "docs" / "event-log.md"


def test_documented_schema_is_the_one_the_store_creates() -> None:
    text = PAGE.read_text()
    section = text[text.index("## The schema") :]
    documented = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert documented is not None
    ddl = schema_ddl("projectionist")
    assert 'CREATE TABLE IF NOT EXISTS "projectionist".events' in documented.group(1)
    assert documented.group(1).strip() in ddl
