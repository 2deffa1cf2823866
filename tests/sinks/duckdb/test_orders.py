"""``order_analytics`` in a real DuckDB file equals the independent oracle, and replays change
nothing (through a lane from the start, and straight through the sink with stale versions)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch, DeleteDocument, PutDocument
from core.position import START
from projections.orders import OrderAnalytics
from sinks.duckdb import open_current
from tests.sinks.duckdb.conftest import SinkFactory
from tests.sinks.duckdb.support import (
    ShiftedSource,
    batch_strategy,
    build_orders,
    checkpoint_of,
    dump,
    oracle_facts,
    stored_documents,
    stored_facts,
)
from tests.support.orders import Catalog, renamed

pytestmark = [pytest.mark.anyio, pytest.mark.duckdb]

TABLES = ("order_analytics_g1", "order_lines_g1")
ORDERS = 2_000


async def test_facts_equal_the_oracle_and_replays_change_nothing(
    make_sink: SinkFactory, db_path: Path, catalog: Catalog
) -> None:
    sink = make_sink(chunk_rows=700)
    built = await build_orders(sink, catalog, ORDERS)
    lane, expected = built.lane, built.expected
    assert len(expected) == ORDERS
    assert lane.stats.batches >= 5  # several flushes, so the guard and child replacement ran
    head = await built.store.head()
    assert head is not None
    assert lane.checkpoint == head

    loaded = await sink.load(lane.target, sorted(expected))
    assert {k: v.document for k, v in loaded.items()} == expected
    # The catch-up batches were not published one by one; the snapshot still has them all.
    assert sink.publishing.published < lane.stats.batches
    snapshot = open_current(db_path)
    try:
        assert stored_facts(snapshot) == oracle_facts(expected)
        assert stored_documents(snapshot, "order_analytics_g1") == expected
        assert checkpoint_of(snapshot, lane.name) == head
        before = dump(snapshot, *TABLES)
    finally:
        snapshot.close()

    # A replay of the whole log by a lane whose checkpoint was lost.
    lost = Batch(lane.name, (), head, START)
    await sink.write(lane.target, lost)
    again = Lane(
        OrderAnalytics(),
        sink,
        built.store,
        source=ShiftedSource(built.store),
        lookups=StaticLookups(renamed(catalog).lookups()),
        strategy=batch_strategy(3600, 997),
    )
    await again.run(until_caught_up=True)
    assert again.checkpoint == head
    # Every stream starts in the log, so nothing was loaded: the renamed documents reached the
    # sink and its version guard alone kept what was stored (checked below).
    assert again.stats.duplicates == 0 and again.stats.batches >= 2

    # Stale and equal versions straight into the sink, with other contents: all refused.
    stale: list[PutDocument | DeleteDocument] = []
    for n, (key, doc) in enumerate(sorted(expected.items())):
        version = loaded[key].version - (n % 2)
        changed = {**doc, "status": "tampered", "items": doc["items"][:1]}
        stale.append(PutDocument(key, version, changed) if n % 3 else DeleteDocument(key, version))
    await sink.write(lane.target, Batch(lane.name, tuple(stale), head, head))

    snapshot = open_current(db_path)
    try:
        assert dump(snapshot, *TABLES) == before
        assert stored_facts(snapshot) == oracle_facts(expected)
        keys = "SELECT count(*), count(DISTINCT key) FROM order_analytics_g1"
        assert snapshot.execute(keys).fetchall() == [(ORDERS, ORDERS)]  # one row per key
    finally:
        snapshot.close()


async def test_deleted_order_leaves_a_tombstone_and_no_lines(
    make_sink: SinkFactory, db_path: Path, catalog: Catalog
) -> None:
    sink = make_sink()
    built = await build_orders(sink, catalog, 50)
    key = sorted(built.expected)[0]
    version = (await sink.load(built.lane.target, [key]))[key].version
    head = built.lane.checkpoint
    assert head is not None
    await sink.write(
        built.lane.target, Batch(built.lane.name, (DeleteDocument(key, version + 1),), head, head)
    )
    snapshot = open_current(db_path)
    try:
        assert key not in stored_facts(snapshot).orders
        assert snapshot.execute(
            "SELECT count(*) FROM order_lines WHERE id = ?", [key]
        ).fetchall() == [(0,)]
        assert snapshot.execute(
            "SELECT version, deleted, document FROM order_analytics_g1 WHERE key = ?", [key]
        ).fetchall() == [(version + 1, True, None)]
    finally:
        snapshot.close()
    await sink.close()
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        assert len(stored_documents(con, "order_analytics_g1")) == 49
    finally:
        con.close()
