"""Helpers of the DuckDB sink tests: facts as stored vs facts from the independent oracle, the
dashboard SQL of docs/sinks/duckdb.md, and filling the Postgres event store quickly."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from core.events import EventEnvelope, NewEvent
from core.eventstore import InMemoryEventStore
from core.eventstore.base import EventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import Position
from core.strategy import Strategy
from projections.orders import OrderAnalytics
from tests.support.orders import Catalog, expected_orders, order_history

DOC = Path(__file__).resolve().parents[3] / "docs" / "sinks" / "duckdb.md"
ORDER_COLUMNS = (
    "id",
    "customer_id",
    "customer_name",
    "customer_email",
    "status",
    "total_amount",
    "item_count",
    "created_at",
    "updated_at",
    "completed_at",
)
LINE_COLUMNS = ("product_id", "product_name", "category", "quantity", "unit_price", "subtotal")
_DECIMALS = {"total_amount", "unit_price", "subtotal"}
_TIMES = {"created_at", "updated_at", "completed_at"}


def _norm(column: str, value: Any) -> Any:
    """A value in one comparable form, from either side (the oracle's strings or DuckDB's)."""
    if value is None:
        return None
    if column in _DECIMALS:
        return Decimal(value).normalize()
    if column in _TIMES:
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return value


@dataclass
class Facts:
    orders: dict[str, tuple[Any, ...]]
    lines: list[tuple[Any, ...]]


def oracle_facts(documents: dict[str, dict[str, Any]]) -> Facts:
    orders = {k: tuple(_norm(c, doc[c]) for c in ORDER_COLUMNS) for k, doc in documents.items()}
    lines = sorted(
        (k, *(_norm(c, item[c]) for c in LINE_COLUMNS))
        for k, doc in documents.items()
        for item in doc["items"]
    )
    return Facts(orders, lines)


def stored_facts(con: duckdb.DuckDBPyConnection) -> Facts:
    """What the views of a file (or snapshot) show."""
    cols = ", ".join(ORDER_COLUMNS)
    orders = {
        row[0]: tuple(_norm(c, v) for c, v in zip(ORDER_COLUMNS, row, strict=True))
        for row in con.execute(f"SELECT {cols} FROM order_analytics").fetchall()
    }
    lcols = ", ".join(LINE_COLUMNS)
    lines = sorted(
        (row[0], *(_norm(c, v) for c, v in zip(LINE_COLUMNS, row[1:], strict=True)))
        for row in con.execute(f"SELECT id, {lcols} FROM order_lines").fetchall()
    )
    return Facts(orders, lines)


def stored_documents(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    rows = con.execute(f"SELECT key, document FROM {table} WHERE NOT deleted").fetchall()
    return {k: json.loads(d) for k, d in rows}


def checkpoint_of(con: duckdb.DuckDBPyConnection, lane: str) -> Position | None:
    rows = con.execute(
        "SELECT transaction_id, global_position FROM projectionist_checkpoints WHERE lane = ?",
        [lane],
    ).fetchall()
    return Position(*rows[0]) if rows else None


def dump(con: duckdb.DuckDBPyConnection, *tables: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables``, sorted: for "nothing changed" comparisons."""
    return {t: sorted(map(tuple, con.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


def doc_sql() -> dict[str, tuple[str, str]]:
    """``name -> (kind, sql)`` for every ``-- view:``/``-- query:`` block of the sink's doc."""
    out: dict[str, tuple[str, str]] = {}
    for block in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.DOTALL):
        head, _, body = block.partition("\n")
        match = re.fullmatch(r"-- (view|query): (\w+)", head.strip())
        if match:
            out[match[2]] = (match[1], body.strip())
    return out


def doc_python() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    return [textwrap.dedent(b) for b in blocks]


def batch_strategy(interval: float, size: int) -> Strategy:
    """A batch strategy that flushes every ``size`` events, also while catching up."""
    return Strategy(
        kind="batch",
        max_batch=size,
        max_delay=interval,
        read_size=min(size, 5_000),
        catch_up_batch=size,
    )


class ShiftedSource:
    """An event source over a store that moves ``recorded_at`` by a few days per stream (and
    hours per version), so per-day dashboards see many days and orders that complete on
    another day than they were placed."""

    def __init__(self, store: EventStore) -> None:
        self.store = store

    @staticmethod
    def shift(e: EventEnvelope) -> EventEnvelope:
        n = int(e.stream_id.rsplit("-", 1)[-1])
        delta = timedelta(days=n % 9, hours=7 * e.stream_version + n % 5)
        return e.model_copy(update={"recorded_at": e.recorded_at - timedelta(days=30) + delta})

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        return [self.shift(e) for e in await self.store.read(after, limit)]

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


async def append_history(
    store: EventStore, history: Sequence[tuple[str, list[NewEvent]]], per_transaction: int = 250
) -> None:
    """Append ``history`` in order, several appends per transaction (fast, same result)."""
    for start in range(0, len(history), per_transaction):
        async with store.transaction() as tx:
            for stream, events in history[start : start + per_transaction]:
                await tx.append(stream, events)


async def everything(store: EventStore) -> list[EventEnvelope]:
    out: list[EventEnvelope] = []
    after = Position(0, 0)
    while True:
        chunk = await store.read(after, 5_000)
        if not chunk:
            return out
        out.extend(chunk)
        after = chunk[-1].position


@dataclass
class Built:
    """A file caught up on an in-memory log of generated orders."""

    lane: Lane
    store: InMemoryEventStore
    events: list[EventEnvelope]
    expected: dict[str, dict[str, Any]]


async def build_orders(sink: Any, catalog: Catalog, orders: int, **lane_options: Any) -> Built:
    """Run ``order_analytics`` over ``orders`` generated orders (days shifted) into ``sink``."""
    store = InMemoryEventStore()
    await append_history(store, order_history(orders, catalog))
    lane = Lane(
        OrderAnalytics(),
        sink,
        store,
        source=ShiftedSource(store),
        lookups=StaticLookups(catalog.lookups()),
        strategy=batch_strategy(3600, 1_500),
        options=lane_options,
    )
    await lane.run(until_caught_up=True)
    events = [ShiftedSource.shift(e) for e in await everything(store)]
    return Built(lane, store, events, expected_orders(events, catalog))
