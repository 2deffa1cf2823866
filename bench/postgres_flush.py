"""The Postgres sink's two write paths, one flush at a time, in one run.

``python -m bench.postgres_flush`` (with the services' variables, e.g. through
``scripts/with-services-env``) writes the same small batches (default 1,500 batches of 10
order-summary rows, each moving the checkpoint) through the sink's one-statement path and
through its transactional path (``BEGIN``, compare-and-set, one upsert, ``COMMIT``), in turn,
twice, and prints the milliseconds per flush. It is the figure behind the one-statement
write (decision 0008): what a lane at the head pays per flush, on an otherwise idle database.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import asyncpg

from core.operations import Batch, PutDocument
from core.position import Position
from core.sink import Target
from projections.orders import OrderSummary
from sinks.postgres import PostgresSink
from sinks.postgres.config import PostgresSinkSettings
from sinks.postgres.encode import encode_operations

SCHEMA = "bench_flush"


class _InTransaction(PostgresSink):
    """The sink with every batch sent down its transactional path (one upsert per batch)."""

    async def write(self, target: Target, batch: Batch) -> None:
        stm = self._for(target)
        rows = encode_operations(batch.lane, stm.layout.fields, batch.operations)
        await self._write_in_transaction(stm, target, batch, rows, "bench")


PATHS: dict[str, type[PostgresSink]] = {"transaction": _InTransaction, "statement": PostgresSink}


def _document(key: str, count: int) -> dict[str, Any]:
    return {
        "id": key,
        "customer_id": "c1",
        "status": "pending",
        "total_amount": "1.00",
        "item_count": count,
        "created_at": "2025-01-01T00:00:00+00:00",
        "updated_at": "2025-01-01T00:00:00+00:00",
    }


async def flushes(dsn: str, path: str, batches: int, rows: int) -> list[float]:
    """Seconds per ``write`` of ``batches`` batches of ``rows`` rows through ``path``."""
    settings = PostgresSinkSettings(dsn=dsn, schema=SCHEMA, chunk_rows=max(rows, 1))
    target = Target(lane=f"flush_{path}", projection=f"flush_{path}", schema=OrderSummary.schema)
    seconds: list[float] = []
    async with PATHS[path](settings) as sink:
        await sink.prepare(target)
        await sink.reset(target)
        checkpoint: Position | None = None
        for i in range(batches):
            keys = [f"o{(i * rows + j) % 5_000}" for j in range(rows)]
            ops = tuple(PutDocument(k, i + 1, _document(k, i)) for k in keys)
            moved = Position(i + 1, 1)
            started = time.perf_counter()
            await sink.write(target, Batch(target.lane, ops, checkpoint, moved))
            seconds.append(time.perf_counter() - started)
            checkpoint = moved
    return seconds


async def main(batches: int, rows: int) -> None:
    dsn = os.environ.get("PROJECTIONIST_POSTGRES_DSN")
    if not dsn:
        raise SystemExit("set PROJECTIONIST_POSTGRES_DSN (scripts/with-services-env does)")
    try:
        for round_ in (1, 2):
            for path in PATHS:
                ms = sorted(s * 1e3 for s in await flushes(dsn, path, batches, rows))
                print(
                    f"round {round_} {path:11s} {rows} rows per flush: "
                    f"mean {statistics.mean(ms):.2f} ms, p50 {ms[len(ms) // 2]:.2f} ms, "
                    f"p99 {ms[int(len(ms) * 0.99)]:.2f} ms",
                    flush=True,
                )
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
        finally:
            await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=1_500)
    parser.add_argument("--rows", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(main(args.batches, args.rows))
