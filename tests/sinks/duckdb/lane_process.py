"""A runner process for the reliability tests: ``order_analytics`` from a Postgres event store
into a DuckDB file, announcing each write on stdout so the test can kill it mid-flush.

``python -m tests.sinks.duckdb.lane_process DSN SCHEMA PATH INTERVAL MAX_BATCH [--until-caught-up]``

Prints ``ready``, then ``write-begin`` just before each batch goes to the sink and
``write-end <checkpoint>`` after it returned (committed and published), and ``caught-up``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch
from core.sink import Target
from projections.orders import OrderAnalytics
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings
from tests.sinks.duckdb.support import batch_strategy
from tests.support.orders import make_catalog


class AnnouncingSink(DuckDBSink):
    async def write(self, target: Target, batch: Batch) -> None:
        print("write-begin", flush=True)
        await super().write(target, batch)
        print(f"write-end {batch.checkpoint}", flush=True)


async def main(argv: list[str]) -> None:
    dsn, schema, path, interval, max_batch = argv[:5]
    until_caught_up = "--until-caught-up" in argv
    store = await PostgresEventStore.connect(dsn, schema=schema, pool_size=2, poll_interval=0.2)
    try:
        async with AnnouncingSink(DuckDBSinkSettings(path=Path(path))) as sink:
            lane = Lane(
                OrderAnalytics(),
                sink,
                store,
                lookups=StaticLookups(make_catalog().lookups()),
                strategy=batch_strategy(float(interval), int(max_batch)),
                idle_poll=0.2,
            )
            print("ready", flush=True)
            await lane.run(until_caught_up=until_caught_up)
            print("caught-up", flush=True)
    finally:
        await store.close()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1:])
