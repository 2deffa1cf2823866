"""``projectionist demo``: the main job on a fresh machine.

It fills the catalog, appends a realistic order history with several concurrent writers, runs
every lane until caught up with live progress, then asks each read model what its users ask:
a product search in Elasticsearch, a dashboard in DuckDB, an API read through the Redis cache
and a customer's order list in Postgres. This module is a composition root: it reaches the
reference domain and the sinks' reader helpers by import path (core imports neither).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anyio
from rich.console import Console
from rich.live import Live
from rich.table import Table

from core.app import App, tune_collector
from core.settings import Settings, import_object
from core.status import StatusReport, collect_status, publish_status

__all__ = ("DemoAnswers", "run_demo")


@dataclass
class DemoAnswers:
    """What the demo found, for printing and for the test that checks it."""

    seed: int
    appended: int
    search_text: str
    search_total: int = 0
    search_ids: list[str] = field(default_factory=list)
    top_products: list[tuple[str, str, float]] = field(default_factory=list)
    revenue_per_day: list[tuple[str, int, str]] = field(default_factory=list)
    top_categories: list[tuple[str, str, int]] = field(default_factory=list)
    cached_order: dict[str, Any] | None = None
    customer: str = ""
    customer_orders: list[dict[str, Any]] = field(default_factory=list)


def _progress_table(app: App) -> Table:
    table = Table(title="catching up")
    for col in ("lane", "strategy", "state", "events", "batches", "retries"):
        table.add_column(col)
    for lane in app.lanes:
        s = lane.stats
        table.add_row(
            lane.name,
            lane.strategy.kind,
            lane.state.value,
            str(s.events),
            str(s.batches),
            str(s.retries),
        )
    return table


async def _lagging(app: App) -> bool:
    head = await app.store.head()
    return any(lane.checkpoint != head for lane in app.lanes if lane.state.value != "halted")


async def _catch_up(app: App, console: Console, timeout: float = 120.0) -> None:
    """Run every lane until caught up, again while the head moved on meanwhile (events of
    transactions that held the visibility fence become readable later)."""
    with Live(_progress_table(app), console=console, refresh_per_second=4) as live:
        async with anyio.create_task_group() as group:

            async def refresh() -> None:
                while True:
                    live.update(_progress_table(app))
                    await anyio.sleep(0.25)

            group.start_soon(refresh)
            with anyio.move_on_after(timeout):
                await app.runner.run(until_caught_up=True)
                while await _lagging(app):
                    await anyio.sleep(0.2)
                    await app.runner.run(until_caught_up=True)
            group.cancel_scope.cancel()
        live.update(_progress_table(app))
    await publish_status(app.store, app.lanes, app.owner)


async def _ask(app: App, answers: DemoAnswers, order_ids: list[str], customer: str) -> None:
    settings = app.settings
    search = import_object("sinks.elasticsearch.queries:search", "demo")
    top_terms = import_object("sinks.elasticsearch.queries:top_terms", "demo")
    es: Any = app.sinks["elasticsearch"]
    alias = es.settings.index_name("order_search")
    await anyio.sleep(1.2)  # one refresh interval: the search index is near real time
    page = await search(
        es,
        alias,
        text=answers.search_text,
        fields=("customer_name", "items.product_name"),
        nested=("items",),
        filters={"status": "completed"},
        sort=[("created_at", "desc")],
        size=5,
    )
    answers.search_total = page.total
    answers.search_ids = page.keys
    top = await top_terms(
        es,
        alias,
        path="items",
        term="items.product_id",
        metric="items.quantity",
        label="items.product_name.keyword",
        size=5,
    )
    answers.top_products = [(t.term, t.label or "", t.total) for t in top]

    demo = "projections.orders.demo"
    open_current = import_object("sinks.duckdb.reader:open_current", "demo")
    con = await anyio.to_thread.run_sync(lambda: open_current(settings.duckdb_path))
    try:
        per_day = con.execute(import_object(f"{demo}:REVENUE_PER_DAY_SQL", "demo")).fetchall()
        categories = con.execute(import_object(f"{demo}:TOP_CATEGORIES_SQL", "demo")).fetchall()
    finally:
        con.close()
    answers.revenue_per_day = [(str(d), int(n), f"{Decimal(r):.2f}") for d, n, r in per_day]
    answers.top_categories = [(c, f"{Decimal(r):.2f}", int(u)) for c, r, u in categories]

    reader_cls = import_object("sinks.redis:OrderCacheReader", "demo")
    settings_cls = import_object("sinks.redis:RedisSinkSettings", "demo")
    assert settings.redis_url is not None
    cache_lane = next(lane for lane in app.lanes if lane.name.startswith("order_cache@"))
    prefix = cache_lane.target.options.get("key_prefix", "order")
    async with reader_cls(settings_cls(url=settings.redis_url), prefix) as reader:
        answers.cached_order = await reader.get_order(order_ids[len(order_ids) // 2])

    sql = import_object(f"{demo}:CUSTOMER_ORDERS_SQL", "demo").format(
        schema=settings.read_model_schema
    )
    rows = await app.store.pool.fetch(sql, customer)
    answers.customer = customer
    answers.customer_orders = [dict(r) for r in rows]


def _print(answers: DemoAnswers, console: Console) -> None:
    console.print()
    console.rule("what the read models' users see")
    newest = ", ".join(answers.search_ids[:3])
    console.print(
        f"[bold]Product search[/bold] (Elasticsearch): completed orders mentioning "
        f"{answers.search_text!r}: {answers.search_total}; newest: {newest}"
    )
    for term, label, total in answers.top_products:
        console.print(f"  top product {term} ({label}): {total:.0f} units")
    console.print("[bold]Dashboard[/bold] (DuckDB): revenue of completed orders per day")
    for day, count, revenue in answers.revenue_per_day[-5:]:
        console.print(f"  {day}: {count} orders, {revenue}")
    for category, revenue, units in answers.top_categories:
        console.print(f"  top category {category}: {revenue} ({units} units)")
    order = answers.cached_order or {}
    console.print(
        f"[bold]API read[/bold] (Redis cache): {order.get('id')} {order.get('status')} "
        f"total {order.get('total_amount')} with {len(order.get('items', []))} lines"
    )
    console.print(f"[bold]Customer's orders[/bold] (Postgres): {answers.customer}")
    for row in answers.customer_orders:
        console.print(f"  {row['id']} {row['status']} {row['total_amount']} {row['created_at']}")


async def run_demo(
    settings: Settings, orders: int, console: Console
) -> tuple[DemoAnswers, StatusReport]:
    """Run the whole demo; returns its answers and the final status."""
    demo = "projections.orders.demo"
    make_catalog = import_object("projections.orders.history:make_catalog", "demo")
    seed_catalog = import_object(f"{demo}:seed_catalog", "demo")
    append_history = import_object(f"{demo}:append_history", "demo")
    seed = int(time.time() * 1000) % 1_000_000_007
    async with App(settings) as app:
        tune_collector(settings)
        catalog = make_catalog()
        await seed_catalog(app.store.pool, catalog)
        started = time.monotonic()
        with console.status(f"appending {orders} orders with 4 concurrent writers"):
            appended = await append_history(
                app.store, orders, writers=4, seed=seed, catalog=catalog
            )
        console.print(f"appended {appended} events in {time.monotonic() - started:.1f}s")
        if not await app.store.settle(timeout=60):
            console.print(
                f"[yellow]an open transaction holds the log's fence "
                f"({await app.store.fence_age():.0f}s): lanes see events up to it[/yellow]"
            )
        await _catch_up(app, console)
        rng = random.Random(seed)
        products = sorted(catalog.products.values(), key=lambda p: p["name"])
        word = rng.choice(products)["name"].split()[1]
        answers = DemoAnswers(seed=seed, appended=appended, search_text=word)
        order_ids = [f"order-{seed}-{n:07d}" for n in range(orders)]
        await _ask(app, answers, order_ids, customer=rng.choice(sorted(catalog.customers)))
        _print(answers, console)
        report = await collect_status(app)
    return answers, report
