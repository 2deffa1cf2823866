"""The shared window every lane of a runner reads the log through (core.source.SharedLog):
reads equal the store's, lanes replaying together read the store once, the window stays
bounded, and a stalled lane neither holds the others back nor misses an event."""

from __future__ import annotations

import random

import anyio
import pytest

from core.events import EventEnvelope, NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch
from core.position import START, Position
from core.runner import Runner
from core.sink import Target
from core.source import SharedLog
from core.strategy import Strategy
from core.testing import InMemorySink
from tests.support.tally import OWNERS, TallyProjection, oracle

pytestmark = pytest.mark.anyio


def added() -> NewEvent:
    return NewEvent(event_type="Added", schema_version=2, data={"amount": 1})


class CountingStore(InMemoryEventStore):
    """The in-memory store, counting reads and the events they returned."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.events_read = 0

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        self.reads += 1
        found = await super().read(after, limit)
        self.events_read += len(found)
        return found


async def fill(store: InMemoryEventStore, events: int) -> None:
    for n in range(events):
        if n < 50:
            event = NewEvent(event_type="Opened", data={"owner": f"o{n % 10}"})
        else:
            event = NewEvent(event_type="Added", schema_version=2, data={"amount": n})
        await store.append(f"tally-{n % 50}", [event])


async def test_reads_equal_store_reads_for_readers_moving_at_random() -> None:
    store = InMemoryEventStore()
    await fill(store, 200)
    shared = SharedLog(store, capacity=40, fetch=10, patience=0.05)
    readers = [shared.reader() for _ in range(4)]
    places = [START] * 4
    rng = random.Random(3)
    for step in range(400):
        if step % 7 == 0:  # the log grows while they read
            await store.append(
                f"tally-{step % 50}",
                [added()],
            )
        i = rng.randrange(4)
        limit = rng.choice([1, 3, 10, 25])
        with anyio.fail_after(2):
            got = await readers[i].read(places[i], limit)
        assert got == await store.read(places[i], limit)
        if got:
            places[i] = got[-1].position
        if rng.random() < 0.05:
            places[i] = START  # a reader starting over (a rebuild) falls out of the window
    assert shared.window_reads > 0


async def test_lanes_replaying_together_read_the_store_about_once() -> None:
    store = CountingStore()
    await fill(store, 3_000)
    sinks = [InMemorySink(f"s{i}") for i in range(4)]
    lanes = [
        Lane(
            TallyProjection(),
            sink,
            store,
            lookups=StaticLookups(OWNERS),
            strategy=Strategy.immediate(max_batch=100, catch_up_batch=500),
        )
        for sink in sinks
    ]
    runner = Runner(store, lanes)
    assert runner.shared is not None
    runner.shared.fetch, runner.shared.capacity = 200, 600  # a window much smaller than the log
    with anyio.fail_after(20):
        await runner.run(until_caught_up=True)
    read_by_lanes = store.events_read
    everything = await store.read(START, 10_000)
    for lane, sink in zip(lanes, sinks, strict=True):
        assert lane.checkpoint == everything[-1].position
        assert sink.state(lane.target).live_documents() == oracle(everything)
    # Four lanes alone would read 12,000 events; through the window about 3,000.
    assert read_by_lanes < 1.5 * len(everything), read_by_lanes
    assert len(runner.shared._events) <= 600


async def test_a_stalled_reader_holds_the_others_back_only_for_its_patience() -> None:
    store = CountingStore()
    await fill(store, 500)
    shared = SharedLog(store, capacity=60, fetch=20, patience=0.3)
    slow, fast = shared.reader(), shared.reader()
    first = await slow.read(START, 5)  # then it stalls (its store is down, say)
    place = START
    started = anyio.current_time()
    with anyio.fail_after(5):
        while True:
            got = await fast.read(place, 10)
            assert got == await store.read(place, 10)
            if len(got) < 10:
                break
            place = got[-1].position
    assert shared.waits >= 1  # it did wait for the stalled reader...
    assert anyio.current_time() - started < 3  # ...but only for its patience
    # The stalled reader comes back far behind the window: it reads the store, and misses
    # nothing.
    reads = store.reads
    got = await slow.read(first[-1].position, 50)
    assert got == await store.read(first[-1].position, 50)
    assert store.reads == reads + 2  # its own read, and the check above


async def test_a_short_answer_means_the_head_of_the_store_not_the_end_of_the_window() -> None:
    store = InMemoryEventStore()
    await fill(store, 100)
    shared = SharedLog(store, capacity=30, fetch=10)
    a, b = shared.reader(), shared.reader()
    got = await a.read(START, 5)  # the window now ends 10 events in
    assert len(got) == 5
    more = await b.read(START, 25)  # more than the window holds: extended, not cut short
    assert more == await store.read(START, 25)
    await store.append("tally-1", [added()])
    head = await store.head()
    assert head is not None
    tail = await a.read((await store.read(START, 100))[-1].position, 10)
    assert [e.position for e in tail] == [head]


async def test_lanes_share_the_decoded_event_of_an_envelope_they_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = InMemoryEventStore()
    await fill(store, 3)
    first = await store.read(START, 1)
    again = [first[0].model_copy()]
    registry = TallyProjection.registry
    monkeypatch.setattr(registry, "shared", False)
    assert registry.decode(first[0]) is not registry.decode(first[0])  # one lane: no memo
    Runner(store, [Lane(TallyProjection(), InMemorySink(n), store) for n in "ab"])
    assert registry.shared  # two lanes of the registry in one runner
    decoded = registry.decode(first[0])
    assert registry.decode(first[0]) is decoded  # the same envelope: decoded once
    assert registry.decode(again[0]) == decoded  # an equal envelope read again: decoded again
    assert registry.decode(again[0]) is not decoded


class SlowSink(InMemorySink):
    """Every write takes ``seconds`` (a catch-up batch into a large table, say)."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name)
        self.seconds = seconds

    async def write(self, target: Target, batch: Batch) -> None:
        await anyio.sleep(self.seconds)
        await super().write(target, batch)


async def test_a_lane_whose_flushes_outlast_the_patience_stays_in_the_convoy() -> None:
    """A lane busy with its store keeps its place: the others wait for it instead of leaving
    it to read (and decode, and fold) the log alone. At 1,000,000 events the detail lane,
    whose flushes outlasted the 5 s patience, fell out and did twice the work."""
    store = CountingStore()
    await fill(store, 2_000)
    sinks = [SlowSink("slow", seconds=0.15), InMemorySink("fast")]
    lanes = [
        Lane(
            TallyProjection(),
            sink,
            store,
            lookups=StaticLookups(OWNERS),
            strategy=Strategy.immediate(max_batch=100, catch_up_batch=100),
        )
        for sink in sinks
    ]
    runner = Runner(store, lanes)
    assert runner.shared is not None
    shared = runner.shared
    shared.fetch, shared.capacity, shared.patience = 100, 400, 0.05  # flushes outlast it
    with anyio.fail_after(30):
        await runner.run(until_caught_up=True)
    read_by_lanes = store.events_read
    everything = await store.read(START, 10_000)
    for lane, sink in zip(lanes, sinks, strict=True):
        assert lane.checkpoint == everything[-1].position
        assert sink.state(lane.target).live_documents() == oracle(everything)
    assert shared.waits > 0  # the fast lane waited for the slow one...
    # ...so the log was read about once (each lane alone: twice).
    assert read_by_lanes < 1.2 * len(everything), read_by_lanes


async def test_a_lane_working_too_long_stops_holding_the_others() -> None:
    store = CountingStore()
    await fill(store, 500)
    shared = SharedLog(store, capacity=60, fetch=20, patience=0.05, working_patience=0.4)
    slow, fast = shared.reader(), shared.reader()
    await slow.read(START, 5)
    place = START
    started = anyio.current_time()
    with slow.working(), anyio.fail_after(5):  # a store call that hangs
        while True:
            got = await fast.read(place, 10)
            assert got == await store.read(place, 10)
            if len(got) < 10:
                break
            place = got[-1].position
        held = anyio.current_time() - started
    assert shared.waits >= 1
    assert 0.3 < held < 3, held  # held for working_patience, not for the whole call
