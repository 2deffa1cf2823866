"""The order analytics lane's catch-up rate on the DuckDB sink, against a raw Arrow insert of
the same rows, and how long dashboards wait while the runner flushes.

    .venv/bin/python bench/duckdb_lane.py --events 200000 [--max-batch 200000] [--reader-seconds 20]

1. Generates an order history of about ``--events`` events (tests/support/orders) and appends
   it through the Postgres event store (``--store memory``: the in-memory store instead).
2. Runs ``order_analytics`` from an empty file to the head (DuckDBSink with snapshots, batch
   strategy with ``--max-batch``, static catalog lookups) and times it, with the time spent
   reading the log, loading documents, writing batches (of which publishing snapshots).
3. Inserts the same final rows (read back from the lane's tables as Arrow) into a fresh file
   with the same tables: one transaction of ``INSERT ... SELECT`` from Arrow, then CHECKPOINT.
   Ratio = lane events/s over the raw insert's events/s (same run, same machine).
4. Dashboard phase: the runner keeps going on that file with ``Strategy.batch(1.0)`` while new
   orders are appended, and a separate dashboard process opens the current snapshot in a loop
   (tests/sinks/duckdb/dashboard_process.py); first the same reader alone, as a baseline.
   Reports the longest open+query time, p99, failures and torn reads.

JSON to bench/results/duckdb_lane.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import asyncpg
import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import Clock, Timed, TimedSource, append_steps  # noqa: E402
from core.eventstore import InMemoryEventStore  # noqa: E402
from core.eventstore.base import EventStore  # noqa: E402
from core.eventstore.postgres import PostgresEventStore  # noqa: E402
from core.lane import Lane  # noqa: E402
from core.lookups import StaticLookups  # noqa: E402
from core.sink import Target  # noqa: E402
from core.strategy import Strategy  # noqa: E402
from projections.orders import OrderAnalytics  # noqa: E402
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings  # noqa: E402
from sinks.duckdb.schema import table_set  # noqa: E402
from tests.support.orders import make_catalog, order_history  # noqa: E402

SCHEMA = "bench_duckdb_lane"
EVENTS_PER_ORDER = 4.95
RESULTS = ROOT / "bench" / "results" / "duckdb_lane.json"
LANE = "order_analytics@duckdb"


class TimedSink(Timed, DuckDBSink):
    write_label = "write batches (with publishing)"


async def setup(args: argparse.Namespace) -> tuple[EventStore, int, float]:
    catalog = make_catalog()
    steps = order_history(round(args.events / EVENTS_PER_ORDER), catalog)
    if args.store == "memory":  # small runs only: its appends are O(n)
        store: EventStore = InMemoryEventStore()
    else:
        conn = await asyncpg.connect(args.dsn)
        try:
            exists = await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.events")
            if args.reuse and exists:
                count = await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".events')
                print(f"  reusing {count:,} events in schema {SCHEMA}")
                return await PostgresEventStore.connect(args.dsn, schema=SCHEMA), count, 0.0
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        finally:
            await conn.close()
        store = await PostgresEventStore.connect(args.dsn, schema=SCHEMA, pool_size=4)
    started = time.perf_counter()
    await append_steps(store, steps)
    seconds = time.perf_counter() - started
    count = sum(len(new) for _, new in steps)
    print(f"  appended {count:,} events in {seconds:.1f} s ({count / seconds:,.0f}/s)")
    return store, count, count / seconds


def raw_insert(source: Path, target_file: Path, target: Target) -> dict[str, Any]:
    """Seconds to insert the lane's final rows from Arrow into a fresh file, same tables."""
    tables = table_set(target)
    with duckdb.connect(str(source), read_only=True) as con:
        docs: Any = con.sql(f"SELECT * FROM {tables.table}").to_arrow_table()
        lines: Any = con.sql(f"SELECT * FROM {tables.children[0].table}").to_arrow_table()
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


def reader(path: Path, seconds: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "tests.sinks.duckdb.dashboard_process"]
    done = subprocess.run(
        [*command, str(path), str(seconds), LANE], cwd=ROOT, capture_output=True, check=True
    )
    summary: dict[str, Any] = json.loads(done.stdout)
    summary.pop("by_checkpoint")
    flushes = len(summary.pop("checkpoint_order"))
    return {**summary, "distinct_flushes_seen": flushes}


async def dashboard_phase(
    store: EventStore, sink: DuckDBSink, seconds: float, catalog: Any
) -> dict[str, Any]:
    """Baseline reads with no runner, then reads while the runner flushes every second."""
    baseline = await anyio.to_thread.run_sync(reader, sink.layout.working, min(seconds, 5.0))
    lane = Lane(
        OrderAnalytics(),
        sink,
        store,
        lookups=StaticLookups(catalog.lookups()),
        strategy=Strategy.batch(1.0),
        idle_poll=0.2,
    )
    steps = order_history(50_000, catalog, seed=int(time.time()) % 1_000_000)  # fresh streams
    before = sink.publishing.published
    result: dict[str, Any] = {}
    appended = 0
    finished = anyio.Event()

    async def read() -> None:
        result.update(await anyio.to_thread.run_sync(reader, sink.layout.working, seconds))
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(lane.run)
        tg.start_soon(read)
        deadline = time.monotonic() + seconds + 2
        while time.monotonic() < deadline and appended < len(steps):
            await append_steps(store, steps[appended : appended + 100], per_tx=100)
            appended += 100
            await anyio.sleep(0.2)
        await finished.wait()
        tg.cancel_scope.cancel()
    return {
        "baseline_no_runner": baseline,
        "during_flushes": result,
        "flushes": sink.publishing.published - before,
        "events_appended": sum(len(new) for _, new in steps[:appended]),
        "publish_max_seconds": round(sink.publishing.max_seconds, 4),
    }


def fresh_folder(name: str | None) -> Path:
    folder = Path(name or tempfile.mkdtemp(prefix="duckdb-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("analytics*"), *folder.glob("raw.duckdb*")]:
        old.unlink()
    return folder


async def main(args: argparse.Namespace) -> dict[str, Any]:
    print(f"duckdb lane bench: ~{args.events:,} events, max_batch {args.max_batch}")
    store, events, append_rate = await setup(args)
    folder = fresh_folder(args.dir)
    clock = Clock()
    sink = TimedSink(DuckDBSinkSettings(path=folder / "analytics.duckdb"), clock)
    catalog = make_catalog()
    try:
        async with sink:
            lane = Lane(
                OrderAnalytics(),
                sink,
                store,
                source=TimedSource(store, clock),
                lookups=StaticLookups(catalog.lookups()),
                strategy=Strategy(
                    kind="batch",
                    max_batch=args.max_batch,
                    max_delay=3600,
                    read_size=5_000,
                    catch_up_batch=args.max_batch,
                ),
            )
            started = time.perf_counter()
            await lane.run(until_caught_up=True)
            seconds = time.perf_counter() - started
            rate = events / seconds
            breakdown = {**clock.spent, "fold and the rest": seconds - sum(clock.spent.values())}
            batches = lane.stats.batches
            print(f"  lane catch-up: {seconds:.1f} s, {rate:,.0f} events/s, {batches} batches")
            for what, spent in sorted(breakdown.items(), key=lambda kv: -kv[1]):
                print(f"    {what:<34} {spent:7.2f} s  {100 * spent / seconds:5.1f} %")
            publish = sink.publishing.total_seconds
            print(f"    (of which publishing snapshots      {publish:7.2f} s)")
            await sink.close()
            raw = raw_insert(sink.layout.working, folder / "raw.duckdb", lane.target)
            raw_rate = events / raw["seconds"]
            print(
                f"  raw Arrow insert: {raw['orders']:,} orders + {raw['lines']:,} lines in "
                f"{raw['seconds']:.2f} s = {raw_rate:,.0f} events/s; "
                f"lane/raw = {rate / raw_rate:.3f}"
            )
            file_mb = sink.layout.working.stat().st_size / 1e6
            dashboard = await dashboard_phase(store, sink, args.reader_seconds, catalog)
            during = dashboard["during_flushes"]
            alone = dashboard["baseline_no_runner"]["max_seconds"]
            print(
                f"  dashboard: {during['reads']} reads during {dashboard['flushes']} flushes, "
                f"failures {during['failure_count']}, torn reads {len(during['broken'])}, "
                f"longest open {during['open_max_seconds']:.3f} s, "
                f"longest open+query {during['max_seconds']:.3f} s (p99 "
                f"{during['p99_seconds']:.3f} s; the reader alone: {alone:.3f} s)"
            )
        return {
            "events": events,
            "store": args.store,
            "max_batch": args.max_batch,
            "append_events_per_s": round(append_rate),
            "lane": {
                "seconds": round(seconds, 3),
                "events_per_s": round(rate),
                "batches": lane.stats.batches,
                "breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
                "publishing_s": round(publish, 3),
                "file_mb": round(file_mb, 1),
            },
            "raw_arrow_insert": {
                "seconds": round(raw["seconds"], 3),
                "orders": raw["orders"],
                "lines": raw["lines"],
                "events_per_s": round(raw_rate),
                "lane_ratio": round(rate / raw_rate, 4),
            },
            "dashboard": dashboard,
            "environment": {
                "python": platform.python_version(),
                "duckdb": duckdb.__version__,
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
            },
        }
    finally:
        if isinstance(store, PostgresEventStore):
            if not args.keep:
                async with store.pool.acquire() as conn:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
            await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--max-batch", type=int, default=200_000, help="lane max_batch (batch)")
    parser.add_argument("--reader-seconds", type=float, default=20.0)
    parser.add_argument("--store", choices=("postgres", "memory"), default="postgres")
    parser.add_argument("--dir", help="folder for the files (default: a new temporary folder)")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PROJECTIONIST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:55499/dev"
        ),
    )
    parser.add_argument("--out", default=str(RESULTS), help="where the JSON goes")
    parser.add_argument("--keep", action="store_true", help=f"keep schema {SCHEMA} afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse the log a --keep run left")
    outcome = anyio.run(main, parser.parse_args())
    out = Path(parser.parse_args().out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"  results: {out}")
