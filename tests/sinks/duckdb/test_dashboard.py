"""The sales-dashboard SQL of docs/sinks/duckdb.md, run against a real snapshot, answers what
an independent computation over the oracle's documents answers; the doc's Python runs."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from core.eventstore import InMemoryEventStore
from sinks.duckdb import open_current
from tests.sinks.duckdb.conftest import SinkFactory
from tests.sinks.duckdb.support import build_orders, doc_python, doc_sql
from tests.support.orders import Catalog

pytestmark = [pytest.mark.anyio, pytest.mark.duckdb]

Docs = dict[str, dict[str, Any]]


def day(iso: str) -> date:
    return datetime.fromisoformat(iso).astimezone(UTC).date()


def completed(docs: Docs) -> list[dict[str, Any]]:
    return [d for d in docs.values() if d["status"] == "completed"]


def expected_orders_per_day(docs: Docs) -> list[tuple[Any, ...]]:
    return sorted(Counter(day(d["created_at"]) for d in docs.values()).items())


def expected_revenue_per_day(docs: Docs) -> list[tuple[Any, ...]]:
    out: dict[date, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for d in completed(docs):
        out[day(d["completed_at"])][0] += 1
        out[day(d["completed_at"])][1] += Decimal(d["total_amount"])
    return [(k, n, total) for k, (n, total) in sorted(out.items())]


def _per(docs: Docs, key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"orders": set(), "units": 0, "revenue": Decimal(0), "name": None}
    )
    for d in completed(docs):
        for item in d["items"]:
            agg = out[item[key]]
            agg["orders"].add(d["id"])
            agg["units"] += item["quantity"]
            agg["revenue"] += Decimal(item["subtotal"])
            agg["name"] = item["product_name"]
    return out


def expected_revenue_by_category(docs: Docs) -> list[tuple[Any, ...]]:
    rows = [
        (c, len(a["orders"]), a["units"], a["revenue"]) for c, a in _per(docs, "category").items()
    ]
    return sorted(rows, key=lambda r: (-r[3], r[0]))


def expected_top_products(docs: Docs) -> list[tuple[Any, ...]]:
    rows = [(p, a["name"], a["units"], a["revenue"]) for p, a in _per(docs, "product_id").items()]
    return sorted(rows, key=lambda r: (-r[3], r[0]))[:10]


def expected_completion_rate(docs: Docs) -> list[tuple[Any, ...]]:
    status = Counter(d["status"] for d in docs.values())
    n = len(docs)
    rate = round(status["completed"] / n, 4)
    return [(n, status["completed"], status["cancelled"], status["pending"], rate)]


def expected_facts(docs: Docs) -> list[tuple[Any, ...]]:
    return sorted(
        (
            d["id"],
            d["customer_id"],
            i["product_id"],
            i["product_name"],
            i["category"],
            i["quantity"],
            Decimal(i["unit_price"]),
            Decimal(i["subtotal"]),
            day(d["created_at"]),
            day(d["completed_at"]) if d["completed_at"] else None,
            d["status"],
        )
        for d in docs.values()
        for i in d["items"]
    )


EXPECTED = {
    "orders_per_day": expected_orders_per_day,
    "revenue_per_day": expected_revenue_per_day,
    "revenue_by_category": expected_revenue_by_category,
    "top_products": expected_top_products,
    "completion_rate": expected_completion_rate,
}


async def test_dashboard_queries_of_the_doc_answer_like_the_oracle(
    make_sink: SinkFactory, db_path: Path, catalog: Catalog
) -> None:
    sql = doc_sql()
    assert set(EXPECTED) | {"order_line_facts", "freshness"} == set(sql)
    views = {name: body for name, (kind, body) in sql.items() if kind == "view"}
    built = await build_orders(make_sink(), catalog, 1_500, views=views)
    docs = built.expected
    days = expected_orders_per_day(docs)
    assert len(days) >= 5, "the test data should span several days"
    assert any(
        d["completed_at"] and day(d["completed_at"]) != day(d["created_at"]) for d in docs.values()
    )

    con = open_current(db_path, time_zone="America/New_York")  # the doc's SQL says UTC itself
    try:
        for name, compute in EXPECTED.items():
            got = [tuple(r) for r in con.execute(sql[name][1]).fetchall()]
            assert got == compute(docs), name
        facts = sorted(tuple(r) for r in con.execute("SELECT * FROM order_line_facts").fetchall())
        assert facts == expected_facts(docs)
        fresh = con.execute(sql["freshness"][1]).fetchall()
        assert [(r[0], r[1], (r[2], r[3])) for r in fresh] == [
            (built.lane.name, 1, tuple(await built.store.head() or ()))
        ]
    finally:
        con.close()


async def test_python_blocks_of_the_doc_run(make_sink: SinkFactory, db_path: Path) -> None:
    blocks = doc_python()
    assert len(blocks) == 2
    setup, reader = (
        b.replace("/var/lib/projectionist/analytics.duckdb", str(db_path)) for b in blocks
    )
    namespace: dict[str, Any] = {"store": InMemoryEventStore()}
    exec(compile(setup, "duckdb.md", "exec"), namespace)
    sink = namespace["sink"]
    try:
        await namespace["lane"].run(until_caught_up=True)
    finally:
        await sink.close()
    exec(compile(reader, "duckdb.md", "exec"), namespace)
    assert namespace["rows"] == []
