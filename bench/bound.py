"""The bound: how close to the raw ceiling any Python replay of the order summary can get on
this machine, measured in the same run as the ceiling.

The bare loop reads the log through the same fence and order as the store, decodes each
event's JSON with orjson, and folds it into plain dicts with the order fold's arithmetic
(:func:`fold_bare`: the same documents as :class:`projections.orders.OrderSummary`, checked by
``tests/bench/test_bound.py``), with the whole catalog in memory. It has none of the product:
no validation, no envelopes, no checkpoints, no per-stream guard, no batches, no lookups, and
it writes only the final documents, once. Three passes, the best of two each:

* ``read``: the log read alone, in chunks of 1,000 (the lanes' read size);
* ``read_decode``: and each event's data decoded;
* ``read_decode_fold``: and folded into the final documents.

``ratio_alone`` is the ceiling's seconds over a pass's seconds: what a lane would reach if its
writes cost nothing and overlapped nothing; ``ratio_with_write`` adds the ceiling's own write
after the fold (the loop cannot write a final document before it has read the last event).
When ``ratio_alone`` of the full pass is below the issue's 0.8, no Python lane that folds
every event can meet that target on this machine. Run with ``bench/run.py --only bound``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from bench.history import CATALOG_SCHEMA, BenchLog
from bench.places import Services, Where
from bench.postgres_lane import ceiling
from core.naming import quote_ident
from core.operations import PutDocument
from core.sink import Target
from projections.orders import OrderSummary
from sinks.postgres import PostgresSink, PostgresSinkSettings

__all__ = ("Row", "fold_bare", "measure")

CHUNK = 1_000
CENT = Decimal("0.01")
Row = tuple[str, int, str, Any, datetime]
"""``(stream_id, stream_version, event_type, data, recorded_at)``; data as JSON text."""


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT))


def fold_bare(
    rows: Iterable[Row],
    docs: dict[str, list[Any]],
    customers: dict[str, tuple[str, str]],
    products: dict[str, tuple[str, str]],
) -> None:
    """Fold ``rows`` into ``docs`` (stream id -> [version, document]) as the order fold does,
    in plain Python: the least work that yields the same documents."""
    for stream_id, version, event_type, text, recorded_at in rows:
        data = orjson.loads(text)
        when = recorded_at.isoformat()
        if event_type == "OrderCreated":
            name, email = customers[data["customer_id"]]
            docs[stream_id] = [
                version,
                {
                    "id": stream_id,
                    "customer_id": data["customer_id"],
                    "customer_name": name,
                    "customer_email": email,
                    "status": "pending",
                    "items": [],
                    "total_amount": "0.00",
                    "item_count": 0,
                    "shipping_address": data.get("shipping_address", {}),
                    "created_at": when,
                    "updated_at": when,
                    "completed_at": None,
                    "cancelled_at": None,
                    "cancel_reason": None,
                },
            ]
            continue
        entry = docs[stream_id]
        entry[0] = version
        doc = entry[1]
        if event_type == "OrderItemAdded":
            product_id, quantity = data["product_id"], data["quantity"]
            price = Decimal(data["unit_price"])
            charged = quantity * price
            for line in doc["items"]:
                if line["product_id"] == product_id:
                    line["quantity"] += quantity
                    line["unit_price"] = _money(price)
                    line["subtotal"] = _money(Decimal(line["subtotal"]) + charged)
                    break
            else:
                name, category = products[product_id]
                doc["items"].append(
                    {
                        "product_id": product_id,
                        "product_name": name,
                        "category": category,
                        "quantity": quantity,
                        "unit_price": _money(price),
                        "subtotal": _money(charged),
                    }
                )
        elif event_type == "OrderItemRemoved":
            doc["items"] = [i for i in doc["items"] if i["product_id"] != data["product_id"]]
        elif event_type == "OrderCompleted":
            doc["status"] = "completed"
            doc["completed_at"] = when
        elif event_type == "OrderCancelled":
            doc["status"] = "cancelled"
            doc["cancelled_at"] = when
            doc["cancel_reason"] = data.get("reason", "")
        else:
            continue
        if event_type in ("OrderItemAdded", "OrderItemRemoved"):
            items = doc["items"]
            doc["total_amount"] = _money(sum((Decimal(i["subtotal"]) for i in items), Decimal(0)))
            doc["item_count"] = sum(i["quantity"] for i in items)
        doc["updated_at"] = when


async def _pass(
    log: BenchLog, decode: bool, fold: bool, catalog: tuple[Any, Any]
) -> tuple[float, dict[str, list[Any]]]:
    """Seconds of one pass over the whole log, and the documents it folded (if it folds)."""
    table = f"{quote_ident(log.schema)}.events"
    query = (
        "SELECT stream_id, stream_version, event_type, data::text, recorded_at, "
        "transaction_id::text::bigint AS txid, global_position "
        f"FROM {table} WHERE (transaction_id, global_position) > ($1::text::xid8, $2::bigint) "
        "AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) "
        "ORDER BY transaction_id, global_position LIMIT $3"
    )
    docs: dict[str, list[Any]] = {}
    txid, position = 0, 0
    async with log.store.pool.acquire() as conn:
        started = time.perf_counter()
        while True:
            rows = await conn.fetch(query, str(txid), position, CHUNK)
            if not rows:
                break
            txid, position = rows[-1][5], rows[-1][6]
            if fold:
                fold_bare((tuple(r[:5]) for r in rows), docs, *catalog)
            elif decode:
                for r in rows:
                    orjson.loads(r[3])
        seconds = time.perf_counter() - started
    return seconds, docs


async def measure(log: BenchLog, services: Services, where: Where) -> dict[str, Any]:
    """The three passes and the ceiling of their final documents (see the module's doc)."""
    pool = log.store.pool
    s = quote_ident(CATALOG_SCHEMA)
    customers = {
        r[0]: (r[1], r[2]) for r in await pool.fetch(f"SELECT id, name, email FROM {s}.customers")
    }
    products = {
        r[0]: (r[1], r[2]) for r in await pool.fetch(f"SELECT id, name, category FROM {s}.products")
    }
    passes: dict[str, float] = {}
    docs: dict[str, list[Any]] = {}
    for name, decode, fold in (
        ("read", False, False),
        ("read_decode", True, False),
        ("read_decode_fold", True, True),
    ):
        timed = [await _pass(log, decode, fold, (customers, products)) for _ in "ab"]
        passes[name] = min(seconds for seconds, _ in timed)
        docs = timed[-1][1]
    ops = [PutDocument(key, entry[0], entry[1]) for key, entry in sorted(docs.items())]
    projection = OrderSummary()
    target = Target(
        lane="order_summary@postgres", projection=projection.name, schema=projection.schema
    )
    settings = PostgresSinkSettings(dsn=services.dsn, schema=where.read_models, pool_size=2)
    async with PostgresSink(settings) as sink:
        await sink.prepare(target)
        written = min(
            [(await ceiling(sink, where.read_models, target, ops))["upsert_1000"] for _ in "ab"]
        )
    events = log.events
    return {
        "events": events,
        "final_documents": len(ops),
        "ceiling_s": round(written, 3),
        "ceiling_events_per_s": round(events / written),
        "passes": {
            name: {
                "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds),
                "ratio_alone": round(written / seconds, 3),
                "ratio_with_write": round(written / (seconds + written), 3),
            }
            for name, seconds in passes.items()
        },
    }
