"""The Postgres lanes (order_summary, order_detail): catch-up against the raw ceilings of the
same store, in the same run.

Ceilings: the lane's final rows (read back from its table, encoded before timing) written by
plain asyncpg into empty tables of the same shape, with no runner and no checkpoint:

* ``upsert_1000``: the sink's own set-based ``INSERT ... SELECT FROM unnest ... ON CONFLICT``
  statement, 1,000 rows per statement, one transaction each (the judged ceiling);
* ``copy``: one ``COPY`` of every row into an empty table (no conflict handling at all).

Run with ``bench/run.py --only catchup --lanes order_summary,order_detail``.
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench.history import BenchLog
from bench.lanes import catch_up, figures
from bench.places import Services, Where
from bench.timing import Clock, Timed
from core.operations import PutDocument
from core.sink import Target
from sinks.postgres import PostgresSink, PostgresSinkSettings
from sinks.postgres.encode import encode_operations
from sinks.postgres.schema import layout_for

__all__ = ("ceiling", "final_rows", "measure")

ROWS_PER_STATEMENT = 1_000


class TimedSink(Timed, PostgresSink):
    pass


async def final_rows(sink: PostgresSink, schema: str, target: Target) -> list[PutDocument]:
    """The lane's final documents, as the operations that would write them."""
    layout = layout_for(schema, target)
    table = layout.qualified(layout.table)
    rows = await sink.pool.fetch(f"SELECT key, version, document::text FROM {table} ORDER BY key")
    return [PutDocument(r[0], r[1], json.loads(r[2])) for r in rows]


async def ceiling(
    sink: PostgresSink, schema: str, target: Target, ops: list[PutDocument]
) -> dict[str, float]:
    """Seconds to write ``ops``: set-based upserts of 1,000 rows, and one COPY."""
    layout = layout_for(schema, target)
    rows = encode_operations("bench", layout.fields, ops)
    step = ROWS_PER_STATEMENT
    chunks = [rows.columns(i, i + step) for i in range(0, len(rows), step)]
    columns = ["key", "version", "deleted", "document", *(f.name for f in layout.fields)]
    records = list(zip(*rows.columns(0, len(rows)), strict=True))
    source = layout.qualified(layout.table)
    out: dict[str, float] = {}
    async with sink.pool.acquire() as conn:
        for name in ("ceiling_upsert", "ceiling_copy"):
            await conn.execute(f"DROP TABLE IF EXISTS {layout.qualified(name)}")
            await conn.execute(
                f"CREATE TABLE {layout.qualified(name)} (LIKE {source} INCLUDING ALL)"
            )
        upsert = layout.upsert().replace(source, layout.qualified("ceiling_upsert"))
        started = time.perf_counter()
        for args in chunks:
            async with conn.transaction():
                await conn.execute(upsert, *args)
        out["upsert_1000"] = time.perf_counter() - started
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "ceiling_copy", schema_name=schema, columns=columns, records=records
            )
        out["copy"] = time.perf_counter() - started
        for name in ("ceiling_upsert", "ceiling_copy"):
            await conn.execute(f"DROP TABLE {layout.qualified(name)}")
    return out


async def measure(log: BenchLog, name: str, services: Services, where: Where) -> dict[str, Any]:
    """Catch-up of lane ``name`` (a Postgres projection) and the raw ceilings."""
    clock = Clock()
    schema = where.read_models
    settings = PostgresSinkSettings(dsn=services.dsn, schema=schema, pool_size=4)
    async with TimedSink(settings, clock) as sink:
        run = await catch_up(log, name, sink, where, clock)
        ops = await final_rows(sink, schema, run.lane.target)
        raw = await ceiling(sink, schema, run.lane.target, ops)
    return figures(log, run, len(ops), raw, judged="upsert_1000")
