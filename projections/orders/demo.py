"""The orders demo's data and questions: a catalog, a realistic order history appended by
several concurrent writers, and what each read model's users ask of it."""

from __future__ import annotations

import zlib

import anyio
import asyncpg

from core.events import NewEvent
from core.eventstore.base import EventStore
from projections.orders.catalog import CATALOG_DDL
from projections.orders.history import Catalog, make_catalog, order_history

__all__ = (
    "CUSTOMER_ORDERS_SQL",
    "REVENUE_PER_DAY_SQL",
    "TOP_CATEGORIES_SQL",
    "append_history",
    "seed_catalog",
)

CUSTOMER_ORDERS_SQL = """
SELECT id, status, total_amount, item_count, created_at
FROM {schema}.order_summary
WHERE customer_id = $1
ORDER BY created_at DESC, id
LIMIT 5
"""
"""A customer's newest orders, as the list view asks the Postgres summary."""

REVENUE_PER_DAY_SQL = """
SELECT CAST(created_at AS DATE) AS day, count(*) AS orders, sum(total_amount) AS revenue
FROM order_analytics
WHERE status = 'completed'
GROUP BY day
ORDER BY day
"""
"""Revenue of completed orders per day, as the dashboard asks DuckDB (order_analytics view)."""

TOP_CATEGORIES_SQL = """
SELECT l.category, sum(l.subtotal) AS revenue, sum(l.quantity) AS units
FROM order_lines AS l JOIN order_analytics AS o ON o.id = l.id
WHERE o.status = 'completed'
GROUP BY l.category
ORDER BY revenue DESC, l.category
LIMIT 5
"""
"""Top categories by completed revenue (order_lines view)."""


async def seed_catalog(pool: asyncpg.Pool, catalog: Catalog, schema: str = "catalog") -> None:
    """Create the catalog tables and fill them (idempotent)."""
    await pool.execute(CATALOG_DDL(schema))
    async with pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            f'INSERT INTO "{schema}".customers (id, name, email) VALUES ($1, $2, $3) '
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email",
            [(k, v["name"], v["email"]) for k, v in catalog.customers.items()],
        )
        await conn.executemany(
            f'INSERT INTO "{schema}".products (id, name, category) VALUES ($1, $2, $3) '
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category",
            [(k, v["name"], v["category"]) for k, v in catalog.products.items()],
        )


async def append_history(
    store: EventStore,
    orders: int,
    *,
    writers: int = 4,
    seed: int = 11,
    catalog: Catalog | None = None,
) -> int:
    """Append ``orders`` orders' events with ``writers`` concurrent writers; events appended.

    Each writer owns a share of the streams, so per-stream order is kept while the writers'
    transactions interleave in the log.
    """
    catalog = catalog or make_catalog()
    appends = order_history(orders, catalog, seed=seed)
    shares: list[list[tuple[str, list[NewEvent]]]] = [[] for _ in range(writers)]
    for stream, events in appends:
        shares[zlib.crc32(stream.encode()) % writers].append((stream, events))
    counted = 0

    async def write(share: list[tuple[str, list[NewEvent]]]) -> None:
        nonlocal counted
        for stream, events in share:
            result = await store.append(stream, events)
            counted += result.written

    async with anyio.create_task_group() as group:
        for share in shares:
            group.start_soon(write, share)
    return counted
