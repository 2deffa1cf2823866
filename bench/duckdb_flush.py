"""The DuckDB sink's flush into a large table: the key without an index, with a primary key,
and the upsert the sink used before, in one run.

``python -m bench.duckdb_flush`` fills one fresh file per variant with order-analytics
documents and their lines through the sink (default 200,000 orders: about what a 1,000,000-
event history makes), then times flushes like a catch-up's (default 10 flushes of 1,200
documents: two thirds newer versions of stored orders, one third new orders), each a whole
``DuckDBSink.write`` (encoding, checkpoint compare-and-set, statements, ``COMMIT``):

* ``no_index``: the sink as it is (decision 0010): ``key`` has no index; the winners' rows are
  deleted, then inserted;
* ``primary_key``: the same statements on a table made with ``key VARCHAR PRIMARY KEY``, as
  files made before decision 0010 have it;
* ``upsert``: what the sink did before on that table, ``INSERT ... ON CONFLICT (key) DO
  UPDATE ... WHERE version < excluded.version``.

It prints milliseconds per flush (median and max). Snapshots are not published (that cost is
the file copy, measured by ``bench/run.py``). ``--memory-limit`` sets the sink's ``memory_limit``
(default ``none``: DuckDB's own, 80% of the RAM).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from core.naming import quote_ident
from core.operations import Batch, PutDocument
from core.position import Position
from core.sink import Target
from projections.orders import OrderAnalytics
from sinks.duckdb import DuckDBSink, DuckDBSinkSettings
from sinks.duckdb.encode import Encoded
from sinks.duckdb.schema import WINNER_KEYS, TableSet, table_set

TARGET = Target("order_analytics@duckdb", "order_analytics", OrderAnalytics.schema)
FILL_BATCH = 20_000


@dataclasses.dataclass(frozen=True, slots=True)
class _UpsertTables(TableSet):
    """The tables with the document statement the sink used before decision 0010."""

    def replace_sql(self, source: str) -> tuple[str, str]:
        t = quote_ident(self.table)
        cols = ", ".join(quote_ident(c) for c in self.columns)
        sets = ", ".join(f"{quote_ident(c)} = excluded.{quote_ident(c)}" for c in self.columns[1:])
        upsert = (
            f"INSERT INTO {t} ({cols}) SELECT {cols} FROM {source} WHERE key IN ({WINNER_KEYS}) "
            f"ON CONFLICT (key) DO UPDATE SET {sets} WHERE {t}.version < excluded.version"
        )
        return ("SELECT 1", upsert)


class _UpsertSink(DuckDBSink):
    @staticmethod
    def _apply(con: duckdb.DuckDBPyConnection, tables: TableSet, encoded: Encoded) -> None:
        fields = {f.name: getattr(tables, f.name) for f in dataclasses.fields(tables)}
        DuckDBSink._apply(con, _UpsertTables(**fields), encoded)


VARIANTS: dict[str, tuple[type[DuckDBSink], bool]] = {
    "no_index": (DuckDBSink, False),
    "primary_key": (DuckDBSink, True),
    "upsert": (_UpsertSink, True),
}


def _order(n: int, version: int) -> dict[str, Any]:
    items = [
        {
            "product_id": f"p{j}",
            "product_name": f"Product {j}",
            "category": "books",
            "quantity": version,
            "unit_price": "3.50",
            "subtotal": f"{3.5 * version:.2f}",
        }
        for j in range(n % 5 + 1)
    ]
    return {
        "id": f"o{n}",
        "customer_id": f"c{n % 1000}",
        "customer_name": "Ada Lovelace",
        "customer_email": "ada@example.com",
        "status": "pending" if version == 1 else "paid",
        "total_amount": f"{3.5 * version * len(items):.2f}",
        "item_count": len(items),
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-02T00:00:00+00:00",
        "completed_at": None,
        "items": items,
    }


def _with_primary_key(path: Path) -> None:
    """Create the documents table as files made before decision 0010 have it."""
    ddl = table_set(TARGET).ddl()[0].replace("key VARCHAR NOT NULL", "key VARCHAR PRIMARY KEY")
    with duckdb.connect(str(path)) as con:
        con.execute(ddl)


async def flushes(
    folder: Path, variant: str, orders: int, count: int, size: int, memory_limit: str | None
) -> list[float]:
    """Seconds per ``write`` of ``count`` flushes of ``size`` documents, after the fill."""
    sink_class, primary_key = VARIANTS[variant]
    path = folder / f"{variant}.duckdb"
    if primary_key:
        _with_primary_key(path)
    settings = DuckDBSinkSettings(path=path, publish_snapshots=False, memory_limit=memory_limit)
    rng = random.Random(7)
    seconds: list[float] = []
    async with sink_class(settings) as sink:
        await sink.prepare(TARGET)
        checkpoint: Position | None = None
        step = 0

        async def write(ops: tuple[PutDocument, ...]) -> None:
            nonlocal checkpoint, step
            step += 1
            moved = Position(step, 1)
            await sink.write(TARGET, Batch(TARGET.lane, ops, checkpoint, moved, catching_up=True))
            checkpoint = moved

        for start in range(0, orders, FILL_BATCH):
            end = min(orders, start + FILL_BATCH)
            await write(tuple(PutDocument(f"o{n}", 1, _order(n, 1)) for n in range(start, end)))
        for i in range(count):
            stored = rng.sample(range(orders), size * 2 // 3)
            new = range(orders + i * size, orders + i * size + size - len(stored))
            ops = tuple(PutDocument(f"o{n}", 2 + i, _order(n, 2 + i)) for n in [*stored, *new])
            started = time.perf_counter()
            await write(ops)
            seconds.append(time.perf_counter() - started)
    return seconds


async def main(orders: int, count: int, size: int, memory_limit: str | None) -> None:
    print(
        f"{count} flushes of {size} documents into {orders:,} stored orders, memory_limit "
        f"{memory_limit or 'DuckDB default'} (ms per flush)"
    )
    with tempfile.TemporaryDirectory(prefix="projectionist-duckdb-flush-") as folder:
        for variant in VARIANTS:
            timed = await flushes(Path(folder), variant, orders, count, size, memory_limit)
            ms = [s * 1000 for s in timed]
            print(f"  {variant:12s} median {statistics.median(ms):7.1f}   max {max(ms):7.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=200_000, help="stored orders (200,000)")
    parser.add_argument("--flushes", type=int, default=10, help="timed flushes (10)")
    parser.add_argument("--size", type=int, default=1_200, help="documents per flush (1,200)")
    parser.add_argument("--memory-limit", default="none", help='e.g. "100MB" (none)')
    args = parser.parse_args()
    limit = None if args.memory_limit.lower() == "none" else args.memory_limit
    asyncio.run(main(args.orders, args.flushes, args.size, limit))
