"""The order summary lane's catch-up rate on the Postgres sink, against the raw ceiling.

    .venv/bin/python bench/postgres_lane.py --events 200000 [--batch 1000] [--profile]

1. Generates an order history of about ``--events`` events (tests/support/orders) and appends
   it through the event store, many streams per transaction.
2. Runs the order summary lane from an empty checkpoint to the head (PostgresEventStore,
   PostgresCatalog lookups, PostgresSink, immediate strategy) and times it, with the time
   spent reading the log, loading documents, looking up, writing, and folding (the rest).
3. Writes the same final rows (read back from the lane's table) with plain asyncpg and no
   runner: (a) one set-based upsert per 1,000 rows, one transaction each, as the sink's
   statement; (b) COPY into an empty table. Arrays and records are built before timing.
4. Prints events/s and the ratios; JSON to bench/results/postgres_lane.json. ``--profile``
   reruns the lane under cProfile and records the top functions.

The DSN comes from ``--dsn``, else PROJECTIONIST_POSTGRES_DSN, else the dev database.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import Clock, Timed, TimedLookups, TimedSource, append_steps  # noqa: E402
from core.eventstore.postgres import PostgresEventStore  # noqa: E402
from core.fold import Pending  # noqa: E402
from core.lane import Lane  # noqa: E402
from core.operations import PutDocument  # noqa: E402
from core.sink import Target  # noqa: E402
from core.strategy import Strategy  # noqa: E402
from projections.orders import OrderSummary, PostgresCatalog  # noqa: E402
from projections.orders.demo import seed_catalog  # noqa: E402
from sinks.postgres import PostgresSink, PostgresSinkSettings  # noqa: E402
from sinks.postgres.encode import encode_operations  # noqa: E402
from sinks.postgres.schema import layout_for  # noqa: E402
from tests.support.orders import make_catalog, order_history  # noqa: E402

SCHEMA = "bench_pg_lane"
EVENTS_PER_ORDER = 4.95  # the generator's mean: created, 1-5 items, 20% removal, 75% ending
RESULTS = ROOT / "bench" / "results" / "postgres_lane.json"


class TimedSink(Timed, PostgresSink):
    pass


async def setup(dsn: str, events: int, reuse: bool) -> tuple[PostgresEventStore, int, float]:
    """A fresh schema with the catalog and about ``events`` events (or, with ``reuse``, the
    log a ``--keep`` run left); returns the store, the event count and the append rate."""
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.events")
        if reuse and exists:
            count = await conn.fetchval(f'SELECT count(*) FROM "{SCHEMA}".events')
            print(f"  reusing {count:,} events in schema {SCHEMA}")
            store = await PostgresEventStore.connect(dsn, schema=SCHEMA, pool_size=4)
            await readable(store, count)
            return store, count, 0.0
        await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
    finally:
        await conn.close()
    store = await PostgresEventStore.connect(dsn, schema=SCHEMA, pool_size=4)
    catalog = make_catalog()
    await seed_catalog(store.pool, catalog, SCHEMA)
    steps = order_history(round(events / EVENTS_PER_ORDER), catalog)
    started = time.perf_counter()
    await append_steps(store, steps, progress=True)
    seconds = time.perf_counter() - started
    count = sum(len(new) for _, new in steps)
    await readable(store, count)
    print(f"  appended {count:,} events in {seconds:.1f} s ({count / seconds:,.0f}/s)")
    return store, count, count / seconds


def time_core_bookkeeping(clock: Clock) -> None:
    """Time the lane's per-flush bookkeeping (core.fold.Pending), which the profile shows."""
    for name in ("flushed", "operations"):
        inner = getattr(Pending, name)

        def timed(self: Pending, *args: Any, _inner: Any = inner, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return _inner(self, *args, **kwargs)
            finally:
                clock.add("pending bookkeeping", started)

        setattr(Pending, name, timed)


async def readable(store: PostgresEventStore, count: int) -> None:
    """Wait until all ``count`` events are behind the visibility fence (another session's open
    transaction holds it back), so the lane's catch-up sees the whole log."""
    fence = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())"
    query = f'SELECT count(*) FROM "{SCHEMA}".events WHERE {fence}'
    while await store.pool.fetchval(query) < count:
        print("  waiting for the visibility fence", flush=True)
        await asyncio.sleep(1.0)


async def run_lane(
    store: PostgresEventStore, settings: PostgresSinkSettings, batch: int, clock: Clock
) -> tuple[float, Lane, TimedSink]:
    sink = TimedSink(settings, clock)
    await sink.open()
    lookups = TimedLookups(PostgresCatalog(store.pool, SCHEMA), clock)
    lane = Lane(
        OrderSummary(),
        sink,
        store,
        source=TimedSource(store, clock),
        lookups=lookups,
        strategy=Strategy.immediate(max_batch=batch),
    )
    await sink.reset(lane.target)
    started = time.perf_counter()
    await lane.run(until_caught_up=True)
    return time.perf_counter() - started, lane, sink


async def final_rows(sink: PostgresSink, target: Target) -> list[Any]:
    """The lane's final documents, as the operations that would write them."""
    rows = await sink.pool.fetch(
        f'SELECT key, version, document::text FROM "{SCHEMA}".order_summary_g1 ORDER BY key'
    )
    return [PutDocument(r[0], r[1], json.loads(r[2])) for r in rows]


async def ceiling(sink: PostgresSink, target: Target, ops: list[Any]) -> dict[str, float]:
    """Seconds to write the final rows: set-based upserts per 1,000 rows, and COPY."""
    layout = layout_for(SCHEMA, target)
    rows = encode_operations("bench", layout.fields, ops)
    chunks = [rows.columns(i, i + 1_000) for i in range(0, len(rows), 1_000)]
    columns = ["key", "version", "deleted", "document", *(f.name for f in layout.fields)]
    records = list(zip(*rows.columns(0, len(rows)), strict=True))
    out: dict[str, float] = {}
    async with sink.pool.acquire() as conn:
        src = f'"{SCHEMA}".order_summary_g1'
        for table in ("ceiling_upsert", "ceiling_copy"):
            await conn.execute(f'DROP TABLE IF EXISTS "{SCHEMA}".{table}')
            await conn.execute(f'CREATE TABLE "{SCHEMA}".{table} (LIKE {src} INCLUDING ALL)')
        upsert = layout.upsert().replace('"order_summary_g1"', '"ceiling_upsert"')
        started = time.perf_counter()
        for args in chunks:
            async with conn.transaction():
                await conn.execute(upsert, *args)
        out["upsert_1000"] = time.perf_counter() - started
        started = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "ceiling_copy", schema_name=SCHEMA, columns=columns, records=records
            )
        out["copy"] = time.perf_counter() - started
    return out


def profile_text(profiler: cProfile.Profile, limit: int = 25) -> str:
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer)
    stats.sort_stats("tottime").print_stats(limit)
    return buffer.getvalue()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    dsn = args.dsn
    print(f"postgres lane bench: ~{args.events:,} events, batch {args.batch}")
    store, events, append_rate = await setup(dsn, args.events, args.reuse)
    settings = PostgresSinkSettings(dsn=dsn, schema=SCHEMA, pool_size=4)
    try:
        clock = Clock()
        time_core_bookkeeping(clock)
        seconds, lane, sink = await run_lane(store, settings, args.batch, clock)
        lane_rate = events / seconds
        others = sum(clock.spent.values())
        breakdown = {**clock.spent, "fold and the rest": seconds - others}
        print(
            f"  lane catch-up: {seconds:.1f} s, {lane_rate:,.0f} events/s, "
            f"{lane.stats.batches} batches, {sink.operations_written:,} row writes"
        )
        for what, spent in sorted(breakdown.items(), key=lambda kv: -kv[1]):
            print(f"    {what:<18} {spent:7.2f} s  {100 * spent / seconds:5.1f} %")
        ops = await final_rows(sink, lane.target)
        raw = await ceiling(sink, lane.target, ops)
        amplification = sink.operations_written / len(ops)
        print(f"  write amplification: {amplification:.2f} row writes per final row")
        result: dict[str, Any] = {
            "events": events,
            "orders": len(ops),
            "write_amplification": round(amplification, 3),
            "batch": args.batch,
            "append_events_per_s": round(append_rate),
            "lane": {
                "seconds": round(seconds, 3),
                "events_per_s": round(lane_rate),
                "batches": lane.stats.batches,
                "row_writes": sink.operations_written,
                "breakdown_s": {k: round(v, 3) for k, v in breakdown.items()},
            },
            "ceiling": {},
        }
        for name, spent in raw.items():
            rate = events / spent
            same_writes = spent * amplification
            result["ceiling"][name] = {
                "seconds": round(spent, 3),
                "seconds_for_the_lanes_row_writes": round(same_writes, 3),
                "rows_per_s": round(len(ops) / spent),
                "events_per_s": round(rate),
                "lane_ratio": round(lane_rate / rate, 4),
            }
            print(
                f"  ceiling {name:<12} {spent:6.2f} s, {len(ops) / spent:,.0f} rows/s = "
                f"{rate:,.0f} events/s; lane/ceiling = {lane_rate / rate:.3f}"
            )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            again, _, again_sink = await run_lane(store, settings, args.batch, Clock())
            profiler.disable()
            await again_sink.close()
            text = profile_text(profiler)
            result["profile"] = {"seconds_under_profiler": round(again, 3), "top": text}
            print(text)
        await sink.close()
        result["environment"] = {
            "python": platform.python_version(),
            "postgres": await store.pool.fetchval("SHOW server_version"),
            "cpus": os.cpu_count(),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        }
        return result
    finally:
        if not args.keep:
            async with store.pool.acquire() as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000, help="lane max_batch (immediate)")
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "PROJECTIONIST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:55499/dev"
        ),
    )
    parser.add_argument("--profile", action="store_true", help="rerun the lane under cProfile")
    parser.add_argument("--keep", action="store_true", help=f"keep schema {SCHEMA} afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse the log a --keep run left")
    outcome = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"  results: {RESULTS.relative_to(ROOT)}")
