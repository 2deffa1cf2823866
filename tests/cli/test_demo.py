"""The demo's answers equal the same questions computed independently from the event log."""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from core.demo import run_demo
from core.eventstore.postgres import PostgresEventStore
from core.position import START
from core.settings import DEFAULT_LANES, DEFAULT_SINKS, Settings, SinkSettings
from tests.support.orders import expected_orders, make_catalog

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.elasticsearch,
    pytest.mark.duckdb,
]


def isolated_settings(namespace: str, dsn: str, es: str, redis: str, duckdb_dir: Path) -> Settings:
    lanes = [
        lane.model_copy(update={"options": {"key_prefix": f"{namespace}order"}})
        if lane.sink == "redis"
        else lane
        for lane in DEFAULT_LANES
    ]
    sinks = dict(DEFAULT_SINKS)
    sinks["elasticsearch"] = SinkSettings(
        factory=DEFAULT_SINKS["elasticsearch"].factory, options={"index_prefix": f"{namespace}_"}
    )
    return Settings(
        postgres_dsn=dsn,
        elasticsearch_url=es,
        redis_url=redis,
        duckdb_path=duckdb_dir / f"{namespace}.duckdb",
        event_store_schema=namespace,
        read_model_schema=f"{namespace}_rm",
        sinks=sinks,
        lanes=lanes,
    )


def _words(text: str) -> set[str]:
    return set(text.lower().split())


async def test_demo_answers_equal_an_independent_fold(
    namespace: str, postgres_dsn: str, elasticsearch_url: str, redis_url: str, duckdb_dir: Path
) -> None:
    settings = isolated_settings(namespace, postgres_dsn, elasticsearch_url, redis_url, duckdb_dir)
    console = Console(file=io.StringIO(), width=160)
    answers, report = await run_demo(settings, 150, console)

    assert all(lane.lag_events == 0 for lane in report.lanes), report
    assert {lane.state for lane in report.lanes} == {"idle"}

    store = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    try:
        events = [e async for e in store.iterate(START)]
    finally:
        await store.close()
    assert len(events) == answers.appended
    orders = expected_orders(events, make_catalog())

    # The API read through the cache is the whole order document.
    assert answers.cached_order is not None
    assert answers.cached_order == orders[answers.cached_order["id"]]

    # A customer's newest orders from the Postgres summary.
    mine = sorted(
        (o for o in orders.values() if o["customer_id"] == answers.customer),
        key=lambda o: (datetime.fromisoformat(o["created_at"]), o["id"]),
        reverse=True,
    )
    got = [(r["id"], r["status"], f"{r['total_amount']:.2f}") for r in answers.customer_orders]
    want = [(o["id"], o["status"], o["total_amount"]) for o in mine[:5]]
    assert sorted(got) == sorted(want)

    completed = [o for o in orders.values() if o["status"] == "completed"]
    # The dashboard: revenue per day and top categories of completed orders.
    per_day: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    categories: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for o in completed:
        day = per_day[datetime.fromisoformat(o["created_at"]).date().isoformat()]
        day[0] += 1
        day[1] += Decimal(o["total_amount"])
        for line in o["items"]:
            categories[line["category"]][0] += Decimal(line["subtotal"])
            categories[line["category"]][1] += line["quantity"]
    assert answers.revenue_per_day == [(d, n, f"{r:.2f}") for d, (n, r) in sorted(per_day.items())]
    top = sorted(categories.items(), key=lambda kv: (-kv[1][0], kv[0]))[:5]
    assert answers.top_categories == [(c, f"{r:.2f}", u) for c, (r, u) in top]

    # The product search: completed orders with the word in a product or customer name.
    word = answers.search_text.lower()
    matching = [
        o
        for o in completed
        if word in _words(o["customer_name"])
        or any(word in _words(line["product_name"]) for line in o["items"])
    ]
    assert answers.search_total == len(matching)
    assert answers.search_total > 0
    quantities: dict[str, int] = defaultdict(int)
    for o in orders.values():
        for line in o["items"]:
            quantities[line["product_id"]] += line["quantity"]
    best = sorted(quantities.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t, int(q)) for t, _, q in answers.top_products] == best
