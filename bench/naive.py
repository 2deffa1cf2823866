"""The naive baseline: the seed's projection design for the order summary, over the same log.

For each event, as the seed's ``OrderSummaryProjection`` and ``ProjectionRunner`` do: one
statement on the summary row (an upsert for ``OrderCreated``, a version-guarded ``UPDATE`` for
the others), committed on its own, then one checkpoint upsert, committed on its own. Events
are read 100 at a time (the seed's ``batch_size``). Lookups come from an in-memory catalog
(the seed calls a service per event: this baseline is kinder to itself than the seed). Its
rows are not checked: it measures the cost of the design, not its (weaker) correctness.

It runs over the first ``limit`` events of the log (or until ``max_seconds``), since one round
trip per statement makes a full replay take many minutes; the rate is per event either way.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import asyncpg

from bench.history import BenchLog
from core.position import START
from projections.orders.history import make_catalog

__all__ = ("measure",)

SCHEMA = "bench_naive"
DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.order_summary (
    id text PRIMARY KEY, customer_id text, customer_name text, customer_email text,
    status text, total_amount numeric NOT NULL DEFAULT 0, item_count int NOT NULL DEFAULT 0,
    shipping_address jsonb, created_at timestamptz, updated_at timestamptz,
    completed_at timestamptz, event_version int NOT NULL
);
CREATE TABLE {SCHEMA}.projection_checkpoints (
    projection_name text PRIMARY KEY, last_event_id uuid, last_processed_at timestamptz
);
"""
CREATED = f"""
INSERT INTO {SCHEMA}.order_summary AS s (id, customer_id, customer_name, customer_email,
    status, shipping_address, created_at, updated_at, event_version)
VALUES ($1, $2, $3, $4, 'pending', $5::jsonb, $6, $6, $7)
ON CONFLICT (id) DO UPDATE SET status = 'pending', updated_at = $6, event_version = $7
WHERE s.event_version < $7
"""
ITEM_ADDED = f"""
UPDATE {SCHEMA}.order_summary SET total_amount = total_amount + $2,
    item_count = item_count + $3, updated_at = $4, event_version = $5
WHERE id = $1 AND event_version < $5
"""
TOUCHED = f"""
UPDATE {SCHEMA}.order_summary SET status = coalesce($2, status), updated_at = $3,
    completed_at = CASE WHEN $2 = 'completed' THEN $3 ELSE completed_at END, event_version = $4
WHERE id = $1 AND event_version < $4
"""
CHECKPOINT = f"""
INSERT INTO {SCHEMA}.projection_checkpoints VALUES ('order_summary', $1, now())
ON CONFLICT (projection_name) DO UPDATE SET last_event_id = $1, last_processed_at = now()
"""
STATUS = {"OrderCompleted": "completed", "OrderCancelled": "cancelled"}


async def _handle(conn: asyncpg.Connection, e: Any, customers: dict[str, Any]) -> None:
    data, when, version = e.data, e.recorded_at, e.stream_version
    if e.event_type == "OrderCreated":
        who = customers[data["customer_id"]]
        await conn.execute(
            CREATED,
            e.stream_id,
            data["customer_id"],
            who["name"],
            who["email"],
            json.dumps(data.get("shipping_address")),
            when,
            version,
        )
    elif e.event_type == "OrderItemAdded":
        subtotal = Decimal(data["unit_price"]) * data["quantity"]
        await conn.execute(ITEM_ADDED, e.stream_id, subtotal, data["quantity"], when, version)
    else:
        await conn.execute(TOUCHED, e.stream_id, STATUS.get(e.event_type), when, version)


async def measure(log: BenchLog, limit: int, max_seconds: float) -> dict[str, Any]:
    """Replay the first ``limit`` events the seed's way; the rate and what was covered."""
    customers = make_catalog().customers
    conn = await asyncpg.connect(log.dsn)
    try:
        await conn.execute(DDL)
        done, after = 0, START
        started = time.perf_counter()
        deadline = started + max_seconds
        while done < limit and time.perf_counter() < deadline:
            page = await log.store.read(after, min(100, limit - done))
            if not page:
                break
            for e in page:
                await _handle(conn, e, customers)
                await conn.execute(CHECKPOINT, e.event_id)
                done += 1
                after = e.position
                if time.perf_counter() >= deadline:
                    break
        seconds = time.perf_counter() - started
        await conn.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    finally:
        await conn.close()
    return {
        "events": done,
        "of_events": log.events,
        "partial": done < log.events,
        "seconds": round(seconds, 3),
        "events_per_s": round(done / seconds),
        "commits_per_event": 2,
        "read_page": 100,
    }
