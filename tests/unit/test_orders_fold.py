"""The orders fold (pure) against the independent oracle, through a real lane in memory."""

from __future__ import annotations

import pytest

from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START
from core.strategy import Strategy
from core.testing import InMemorySink
from projections.orders import OrderDetail
from tests.support.orders import expected_orders, make_catalog, order_history

pytestmark = pytest.mark.anyio


async def test_order_detail_equals_oracle() -> None:
    catalog = make_catalog()
    store = InMemoryEventStore()
    for stream, events in order_history(300, catalog):
        await store.append(stream, events)
    sink = InMemorySink()
    lane = Lane(
        OrderDetail(),
        sink,
        store,
        lookups=StaticLookups(catalog.lookups()),
        strategy=Strategy.immediate(max_batch=97, catch_up_batch=97),
    )
    await lane.run(until_caught_up=True)
    everything = [e async for e in store.iterate(START)]
    assert sink.state(lane.target).live_documents() == expected_orders(everything, catalog)
