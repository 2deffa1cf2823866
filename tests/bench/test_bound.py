"""The bound's bare loop (bench/bound.py) folds exactly the documents the order summary lane
does: otherwise its figure would bound some other, easier work."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.bound import Row, fold_bare
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START
from core.testing import InMemorySink
from projections.orders import OrderSummary
from projections.orders.history import make_catalog, order_history

pytestmark = pytest.mark.anyio


async def test_the_bare_fold_gives_the_lanes_documents() -> None:
    catalog = make_catalog()
    store = InMemoryEventStore()
    for stream, events in order_history(300, catalog, seed=5):
        await store.append(stream, events)
    sink = InMemorySink()
    lane = Lane(OrderSummary(), sink, store, lookups=StaticLookups(catalog.lookups()))
    await lane.run(until_caught_up=True)
    expected = sink.state(lane.target).live_documents()
    rows: list[Row] = [
        (e.stream_id, e.stream_version, e.event_type, json.dumps(e.data), e.recorded_at)
        async for e in store.iterate(START)
    ]
    docs: dict[str, list[Any]] = {}
    customers = {k: (v["name"], v["email"]) for k, v in catalog.customers.items()}
    products = {k: (v["name"], v["category"]) for k, v in catalog.products.items()}
    fold_bare(rows, docs, customers, products)
    assert len(expected) == 300
    assert {key: entry[1] for key, entry in docs.items()} == expected
    assert {e[1]["status"] for e in docs.values()} >= {"completed", "cancelled", "pending"}
