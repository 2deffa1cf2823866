"""A document the sink refuses for good: parked with the events that built it (park policy),
or the lane stopped before the batch (halt policy). Core logic against the in-memory sink."""

from __future__ import annotations

import pytest

from core.deadletters import InMemoryDeadLetters
from core.errors import DocumentRejected
from core.events import NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch, DeleteDocument, PutDocument
from core.position import START
from core.sink import Target
from core.strategy import ErrorPolicy, LaneState, Strategy
from core.testing import InMemorySink
from tests.support.tally import OWNERS, TallyProjection, oracle

pytestmark = pytest.mark.anyio

REFUSED = "tally-3"


class RefusingSink(InMemorySink):
    """Refuses, for good, any batch holding a write of the refused key."""

    def __init__(self) -> None:
        super().__init__()
        self.refusals = 0

    async def write(self, target: Target, batch: Batch) -> None:
        for op in batch.operations:
            if isinstance(op, PutDocument | DeleteDocument) and op.key == REFUSED:
                self.refusals += 1
                raise DocumentRejected(REFUSED, "mapping conflict on field total")
        await super().write(target, batch)


async def fill(store: InMemoryEventStore) -> None:
    for s in range(6):
        await store.append(f"tally-{s}", [NewEvent(event_type="Opened", data={"owner": "o1"})])
    for n in range(3):
        for s in range(6):
            await store.append(
                f"tally-{s}", [NewEvent(event_type="Added", schema_version=2, data={"amount": n})]
            )


def make_lane(store: InMemoryEventStore, sink: InMemorySink, policy: ErrorPolicy) -> Lane:
    return Lane(
        TallyProjection(),
        sink,
        store,
        lookups=StaticLookups(OWNERS),
        policy=policy,
        dead_letters=InMemoryDeadLetters(),
        strategy=Strategy.immediate(max_batch=5, catch_up_batch=5),
    )


async def test_park_policy_parks_the_refused_documents_events_and_writes_the_rest() -> None:
    store = InMemoryEventStore()
    await fill(store)
    sink = RefusingSink()
    lane = make_lane(store, sink, ErrorPolicy.PARK)
    await lane.run(until_caught_up=True)

    events = [e async for e in store.iterate(START)]
    expected = {k: v for k, v in oracle(events).items() if k != REFUSED}
    assert sink.state(lane.target).live_documents() == expected
    assert lane.checkpoint == await store.head()
    letters = await lane.dead_letters.find(lane.name)
    refused = [e for e in events if e.stream_id == REFUSED]
    assert [d.event_id for d in letters] == [e.event_id for e in refused]
    assert "mapping conflict" in letters[0].error
    assert all(d.blocked_by == refused[0].event_id for d in letters[1:])
    assert sink.refusals >= 1

    # A later event of the refused key is held behind the first parked event, never applied.
    await store.append(
        REFUSED, [NewEvent(event_type="Added", schema_version=2, data={"amount": 9})]
    )
    await lane.run(until_caught_up=True)
    letters = await lane.dead_letters.find(lane.name)
    assert len(letters) == len(refused) + 1
    assert letters[-1].blocked_by == refused[0].event_id
    assert REFUSED not in sink.state(lane.target).live_documents()


async def test_halt_policy_stops_the_lane_before_the_batch() -> None:
    store = InMemoryEventStore()
    await fill(store)
    sink = RefusingSink()
    lane = make_lane(store, sink, ErrorPolicy.HALT)
    with pytest.raises(DocumentRejected):
        await lane.run(until_caught_up=True)
    stored = sink.state(lane.target)
    assert REFUSED not in stored.live_documents()
    # Nothing after the refused batch's start is marked done.
    first_refused = [e async for e in store.iterate(START) if e.stream_id == REFUSED][0]
    assert stored.checkpoint is None or stored.checkpoint < first_refused.position
    assert lane.state is not LaneState.IDLE
    assert await lane.dead_letters.find(lane.name) == []
