"""The benchmark's order log: one fixed-seed order history, appended once into its own schema
of the event store, with the catalog the lookups read beside it.

The history comes from :func:`projections.orders.history.order_history` (the demo's and the
tests' generator) in chunks of 20,000 orders, chunk ``i`` with seed ``seed + i``, so a run of
any size holds the same orders as every other run of that size, with bounded memory while it
is appended. Appends go 2,000 steps per transaction (:func:`bench.timing.append_steps`): a
one-event-per-transaction fill of 1,000,000 events would take most of an hour; the event log
part of the benchmark measures single appends separately.

A log is kept (``keep=True``) with a ``bench_meta`` row; a later run of the same size and seed
reuses it when its event count still matches (anything appended since, such as the freshness
load, makes it stale and it is refilled).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg

from bench.timing import append_steps
from core.events import NewEvent
from core.eventstore.postgres import PostgresEventStore
from core.position import Position
from projections.orders.demo import seed_catalog
from projections.orders.history import make_catalog, order_history

__all__ = ("CATALOG_SCHEMA", "SCHEMA", "SEED", "BenchLog", "drop_log", "open_log", "orders_for")

SCHEMA = "bench_log"
SEED = 11
CATALOG_SCHEMA = "catalog"
"""Where the runner's default lookups (``projections.orders:catalog_lookups``) read."""
EVENTS_PER_ORDER = 4.95
"""The generator's mean: created, 1-5 items, 20% a removal, 75% an ending."""
CHUNK = 20_000


@dataclass
class BenchLog:
    """An open event store holding the benchmark's history."""

    dsn: str
    store: PostgresEventStore
    events: int
    orders: int
    seed: int
    head: Position
    append_seconds: float | None
    """Seconds the fill took (``None``: a kept log was reused)."""

    @property
    def schema(self) -> str:
        return self.store.schema

    @property
    def append_rate(self) -> float | None:
        return self.events / self.append_seconds if self.append_seconds else None


def orders_for(events: int) -> int:
    """Orders whose history holds about ``events`` events."""
    return max(1, round(events / EVENTS_PER_ORDER))


def history_chunks(orders: int, seed: int) -> Iterator[list[tuple[str, list[NewEvent]]]]:
    catalog = make_catalog()
    for i, first in enumerate(range(0, orders, CHUNK)):
        yield order_history(min(CHUNK, orders - first), catalog, seed=seed + i)


async def _reusable(conn: asyncpg.Connection, orders: int, seed: int) -> int | None:
    """The kept log's event count, if it holds exactly this history."""
    if await conn.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.bench_meta") is None:
        return None
    meta = await conn.fetchrow(f"SELECT orders, seed, events FROM {SCHEMA}.bench_meta")
    if meta is None or (meta["orders"], meta["seed"]) != (orders, seed):
        return None
    count = await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.events")
    return int(meta["events"]) if count == meta["events"] else None


async def open_log(dsn: str, events: int, seed: int = SEED, reuse: bool = True) -> BenchLog:
    """The benchmark's log of about ``events`` events, filled now or reused."""
    orders = orders_for(events)
    conn = await asyncpg.connect(dsn)
    try:
        kept = await _reusable(conn, orders, seed) if reuse else None
        if kept is None:
            await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
    finally:
        await conn.close()
    store = await PostgresEventStore.connect(dsn, schema=SCHEMA, pool_size=12)
    await seed_catalog(store.pool, make_catalog(), CATALOG_SCHEMA)
    seconds: float | None = None
    if kept is None:
        count, started = 0, time.perf_counter()
        for steps in history_chunks(orders, seed):
            await append_steps(store, steps)
            count += sum(len(new) for _, new in steps)
            print(f"  appended {count:,} events", flush=True)
        seconds = time.perf_counter() - started
        await store.pool.execute(
            f"CREATE TABLE {SCHEMA}.bench_meta (orders int, seed int, events bigint);"
            f"INSERT INTO {SCHEMA}.bench_meta VALUES ({orders}, {seed}, {count})"
        )
        kept = count
    if not await store.settle(timeout=300):
        print("  warning: an open transaction holds the log's fence; lanes stop before it")
    head = await store.head()
    assert head is not None
    return BenchLog(dsn, store, kept, orders, seed, head, seconds)


async def drop_log(log: BenchLog) -> None:
    await log.store.pool.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
