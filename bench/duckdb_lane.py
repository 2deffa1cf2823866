"""The order analytics lane (DuckDB): catch-up against a raw Arrow insert of the same rows, in
the same run.

Ceiling ``arrow_insert``: the lane's final rows (orders and order lines, read back from its
file as Arrow tables before timing) inserted into a fresh file with the same tables, in one
transaction of ``INSERT ... SELECT`` from Arrow, then ``CHECKPOINT``. The lane's time includes
publishing snapshots for dashboards (``publishing_s``): at most every 30 s while it catches up,
and once at the head.

Run with ``bench/run.py --only catchup --lanes order_analytics``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import duckdb

from bench.history import BenchLog
from bench.lanes import catch_up, figures
from bench.places import Services, Where
from bench.timing import Clock, Timed
from core.sink import Target
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings
from sinks.duckdb.schema import table_set

__all__ = ("measure", "raw_insert")


class TimedSink(Timed, DuckDBSink):
    write_label = "write batches (with publishing)"


def raw_insert(source: Path, target_file: Path, target: Target) -> dict[str, Any]:
    """Seconds to insert the lane's final rows from Arrow into a fresh file, same tables."""
    tables = table_set(target)
    with duckdb.connect(str(source), read_only=True) as con:
        docs: Any = con.sql(f"SELECT * FROM {tables.table}").to_arrow_table()
        lines: Any = con.sql(f"SELECT * FROM {tables.children[0].table}").to_arrow_table()
    target_file.unlink(missing_ok=True)
    with duckdb.connect(str(target_file)) as con:
        for ddl in tables.ddl():
            con.execute(ddl)
        con.execute("CHECKPOINT")
        con.register("raw_docs", docs)
        con.register("raw_lines", lines)
        started = time.perf_counter()
        con.execute("BEGIN TRANSACTION")
        con.execute(f"INSERT INTO {tables.table} SELECT * FROM raw_docs")
        con.execute(f"INSERT INTO {tables.children[0].table} SELECT * FROM raw_lines")
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "orders": docs.num_rows, "lines": lines.num_rows}


async def measure(log: BenchLog, name: str, services: Services, where: Where) -> dict[str, Any]:
    clock = Clock()
    where.folder.mkdir(parents=True, exist_ok=True)
    settings = DuckDBSinkSettings(path=where.duckdb_path, memory_limit=services.duckdb_memory_limit)
    sink = TimedSink(settings, clock)
    async with sink:
        run = await catch_up(log, name, sink, where, clock)
    raw_file = where.folder / f"{where.namespace}_raw.duckdb"
    raw = await anyio.to_thread.run_sync(raw_insert, sink.layout.working, raw_file, run.lane.target)
    out = figures(log, run, raw["orders"], {"arrow_insert": raw["seconds"]}, "arrow_insert")
    out["final_lines"] = raw["lines"]
    out["publishing_s"] = round(sink.publishing.total_seconds, 3)
    out["file_mb"] = round(sink.layout.working.stat().st_size / 1e6, 1)
    return out
