"""The order summary and order detail read models in the real Postgres equal the independent
oracle (tests/support/orders.expected_orders); replaying every batch changes nothing."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from core.lane import Lane
from core.lookups import LookupProvider, StaticLookups
from core.operations import Batch
from core.runner import Runner
from core.sink import Target
from core.strategy import ErrorPolicy, LaneState, Strategy
from projections.orders import OrderDetail, OrderSummary, PostgresCatalog
from projections.orders.demo import seed_catalog
from sinks.postgres import PostgresSink
from tests.sinks.postgres.conftest import PgEnv
from tests.sinks.postgres.support import (
    customer_orders,
    expected_columns,
    load_history,
    orders_by_status,
    snapshot,
    view_rows,
)
from tests.support.orders import expected_orders, make_catalog, renamed

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class RecordingSink(PostgresSink):
    """Keeps every batch it committed, to replay them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[tuple[Target, Batch]] = []

    async def write(self, target: Target, batch: Batch) -> None:
        await super().write(target, batch)
        self.batches.append((target, batch))


def lanes(pg: PgEnv, sink: PostgresSink, catalog: LookupProvider) -> list[Lane]:
    return [
        Lane(
            OrderSummary(),
            sink,
            pg.store,
            lookups=catalog,
            strategy=Strategy.immediate(max_batch=500, catch_up_batch=500),
        ),
        Lane(
            OrderDetail(),
            sink,
            pg.store,
            lookups=catalog,
            strategy=Strategy.immediate(max_batch=333, catch_up_batch=333),
        ),
    ]


def assert_matches_oracle(
    rows: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]], columns: tuple[str, ...]
) -> None:
    assert rows.keys() == expected.keys()
    for key, doc in expected.items():
        row = rows[key]
        assert row["document"] == doc, key
        assert {c: row[c] for c in columns} == expected_columns(doc, columns), key


async def test_order_read_models_equal_the_oracle(pg: PgEnv) -> None:
    catalog = make_catalog()
    await seed_catalog(pg.store.pool, catalog, pg.schema)
    events = await load_history(pg.store, 2_000, catalog)
    expected = expected_orders(events, catalog)
    async with pg.sink() as sink:
        runner = Runner(pg.store, lanes(pg, sink, PostgresCatalog(pg.store.pool, pg.schema)))
        with anyio.fail_after(120):
            await runner.run(until_caught_up=True)
        head = await pg.store.head()
        for lane in runner.lanes.values():
            assert lane.state is LaneState.IDLE, lane.stats.last_error
            assert await sink.read_checkpoint(lane.target) == head
            assert lane.stats.batches > 5 and lane.stats.parked == 0

        summary = await view_rows(sink.pool, pg.schema, "order_summary")
        assert_matches_oracle(summary, expected, OrderSummary.schema.field_names())
        detail = await view_rows(sink.pool, pg.schema, "order_detail")
        assert_matches_oracle(detail, expected, OrderDetail.schema.field_names())
        last = {e.stream_id: e.stream_version for e in events}
        assert all(detail[k]["version"] == last[k] for k in expected)

        await check_list_queries(sink, pg.schema, expected)


async def check_list_queries(
    sink: PostgresSink, schema: str, expected: dict[str, dict[str, Any]]
) -> None:
    """The list views return the oracle's newest orders, through the declared indexes."""
    for customer in ("c0", "c7", "c49"):
        got = await customer_orders(sink.pool, schema, customer, 10)
        mine = sorted(
            (d["created_at"] for d in expected.values() if d["customer_id"] == customer),
            reverse=True,
        )
        assert [d["created_at"] for d in got] == mine[:10]
        assert all(d["customer_id"] == customer for d in got)
    for status in ("pending", "completed", "cancelled"):
        got = await orders_by_status(sink.pool, schema, status, 25)
        newest = sorted(
            (d["created_at"] for d in expected.values() if d["status"] == status), reverse=True
        )
        assert [d["created_at"] for d in got] == newest[:25]
    async with sink.pool.acquire() as conn, conn.transaction():
        await conn.execute(f'ANALYZE "{schema}".order_summary_g1')
        await conn.execute("SET LOCAL enable_seqscan = off")
        await conn.execute("SET LOCAL enable_bitmapscan = off")
        for column, value in (("customer_id", "c3"), ("status", "completed")):
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    f'EXPLAIN SELECT document FROM "{schema}".order_summary WHERE {column} = $1 '
                    "ORDER BY created_at DESC LIMIT 10",
                    value,
                )
            )
            # Served newest first by an index, never by sorting; a customer's orders by the
            # composite index (a status is not selective: the planner may walk created_at).
            assert "Index Scan" in plan and "Sort" not in plan, plan
            if column == "customer_id":
                assert "order_summary_g1_customer_id_created_at_desc_idx" in plan, plan


async def test_replaying_every_batch_twice_changes_nothing(pg: PgEnv) -> None:
    catalog = make_catalog()
    await seed_catalog(pg.store.pool, catalog, pg.schema)
    events = await load_history(pg.store, 400, catalog)
    lookups = PostgresCatalog(pg.store.pool, pg.schema)
    async with RecordingSink(pg.settings) as sink:
        first = lanes(pg, sink, lookups)[0]
        await first.run(until_caught_up=True)
        head = await pg.store.head()
        assert head is not None and first.checkpoint == head and len(sink.batches) > 3
        before = await snapshot(sink.pool, pg.schema, "order_summary_g1")

        # Every batch again, as a redelivery: the version guard keeps every row as it is.
        for target, batch in sink.batches:
            again = Batch(batch.lane, batch.operations, head, head, batch.events)
            await PostgresSink.write(sink, target, again)
        assert await snapshot(sink.pool, pg.schema, "order_summary_g1") == before

        # The whole log again from no checkpoint, through a new lane.
        await sink.pool.execute(f'DELETE FROM "{pg.schema}".projectionist_checkpoints')
        # Folded with a renamed catalog: every stream starts in the log, so nothing is loaded
        # and the renamed rows reach the sink, where the version guard alone keeps them out.
        second = lanes(pg, sink, StaticLookups(renamed(catalog).lookups()))[0]
        await second.run(until_caught_up=True)
        assert second.checkpoint == head
        assert second.stats.duplicates == 0
        assert await snapshot(sink.pool, pg.schema, "order_summary_g1") == before
        summary = await view_rows(sink.pool, pg.schema, "order_summary")
    expected = expected_orders(events, catalog)
    assert_matches_oracle(summary, expected, OrderSummary.schema.field_names())


async def test_a_document_the_database_refuses_is_parked_by_key(pg: PgEnv) -> None:
    """A customer name with a NUL character (text cannot hold one) makes that customer's
    orders unstorable: under the park policy exactly those are parked, the rest is written."""
    catalog = make_catalog()
    events = await load_history(pg.store, 150, catalog)
    catalog.customers["c3"] = {**catalog.customers["c3"], "name": "bad\x00name"}
    async with pg.sink() as sink:
        lane = Lane(
            OrderSummary(),
            sink,
            pg.store,
            lookups=StaticLookups(catalog.lookups()),
            policy=ErrorPolicy.PARK,
            strategy=Strategy.immediate(max_batch=200, catch_up_batch=200),
        )
        with anyio.fail_after(60):
            await lane.run(until_caught_up=True)
        assert lane.checkpoint == await pg.store.head()
        poisoned = {
            k for k, d in expected_orders(events, catalog).items() if d["customer_id"] == "c3"
        }
        parked = await lane.dead_letters.find(lane.name)
        assert poisoned and {d.stream_id for d in parked} == poisoned
        assert "document" in parked[0].error and "rejected" in parked[0].error
        rows = await view_rows(sink.pool, pg.schema, "order_summary")
        clean = {k: d for k, d in expected_orders(events, catalog).items() if k not in poisoned}
        assert {k: r["document"] for k, r in rows.items()} == clean
