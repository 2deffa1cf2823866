"""docs/sinks/postgres.md states the column types the sink creates, and its queries run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.schema import FieldType
from core.sink import Target
from projections.orders import OrderDetail, OrderSummary
from sinks.postgres import SQL_TYPES
from tests.sinks.postgres.conftest import PgEnv

PAGE = Path(__file__).resolve().parents[3] / "docs" / "sinks" / "postgres.md"

SPELLED = {"timestamptz": "timestamp with time zone"}


def test_documented_column_types_are_the_ones_created() -> None:
    text = PAGE.read_text()
    table = text[text.index("| field type | column |") :].split("\n\n")[0]
    documented: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        types, column = (cell.strip() for cell in line.strip("|").split("|")[:2])
        sql = re.findall(r"`([^`]+)`", column)[0]
        for name in re.findall(r"`([^`]+)`", types):
            documented[name] = SPELLED.get(sql, sql)
    assert documented == {t.value: SQL_TYPES[t] for t in FieldType}


@pytest.mark.anyio
@pytest.mark.postgres
async def test_documented_queries_run_on_the_views(pg: PgEnv) -> None:
    text = PAGE.read_text()
    section = text[text.index("### Reading") :]
    block = re.search(r"```sql\n(.*?)```", section, re.DOTALL)
    assert block is not None
    statements = [
        " ".join(line for line in s.splitlines() if not line.startswith("--")).strip()
        for s in block.group(1).split(";")
    ]
    async with pg.sink() as sink:
        for projection in (OrderSummary, OrderDetail):
            await sink.prepare(
                Target(lane="l", projection=projection.name, schema=projection.schema)
            )
        for statement in filter(None, statements):
            sql = statement.replace("read_models.", f'"{pg.schema}".')
            args = ("c1", 10) if "$2" in sql else ("order-1",)
            assert await sink.pool.fetch(sql, *args) == []
