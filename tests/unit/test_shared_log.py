"""The shared window every lane of a runner reads the log through (core.source.SharedLog):
reads equal the store's, lanes replaying together read the store once, the window stays
bounded, and a stalled lane neither holds the others back nor misses an event."""

from __future__ import annotations

import random
from functools import partial

import anyio
import pytest
from anyio.abc import TaskGroup

from core.errors import StoreUnavailable
from core.events import EventEnvelope, NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch
from core.position import START, Position
from core.retry import Backoff
from core.runner import Runner
from core.sink import Target
from core.source import LogReader, SharedLog
from core.strategy import Strategy
from core.testing import FlakySink, InMemorySink
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


class SlowStore(CountingStore):
    """A store whose reads take a round trip's time, so that readers interleave."""

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        await anyio.sleep(0.01)
        return await super().read(after, limit)


async def fill(store: InMemoryEventStore, events: int) -> None:
    for n in range(events):
        if n < 50:
            event = NewEvent(event_type="Opened", data={"owner": f"o{n % 10}"})
        else:
            event = NewEvent(event_type="Added", schema_version=2, data={"amount": n})
        await store.append(f"tally-{n % 50}", [event])


def tally_lanes(store: InMemoryEventStore, sinks: list[InMemorySink], batch: int) -> list[Lane]:
    return [
        Lane(
            TallyProjection(),
            sink,
            store,
            lookups=StaticLookups(OWNERS),
            strategy=Strategy.immediate(max_batch=100, catch_up_batch=batch),
        )
        for sink in sinks
    ]


async def replay(
    store: CountingStore, runner: Runner, lanes: list[Lane], sinks: list[InMemorySink]
) -> tuple[int, int]:
    """Run the lanes to the head; check every read model; (events the lanes read, events)."""
    with anyio.fail_after(30):
        await runner.run(until_caught_up=True)
    read_by_lanes = store.events_read
    everything = await store.read(START, 10_000)
    for lane, sink in zip(lanes, sinks, strict=True):
        assert lane.checkpoint == everything[-1].position
        assert sink.state(lane.target).live_documents() == oracle(everything)
    return read_by_lanes, len(everything)


async def read_to_the_head(reader: LogReader, store: InMemoryEventStore) -> None:
    """Read through ``reader`` 10 events at a time, each read equal to the store's."""
    place = START
    while True:
        got = await reader.read(place, 10)
        assert got == await store.read(place, 10)
        if len(got) < 10:
            return
        place = got[-1].position


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
    lanes = tally_lanes(store, sinks, 500)
    runner = Runner(store, lanes)
    assert runner.shared is not None
    runner.shared.fetch, runner.shared.capacity = 200, 600  # a window much smaller than the log
    read_by_lanes, events = await replay(store, runner, lanes, sinks)
    # Four lanes alone would read 12,000 events; through the window about 3,000.
    assert read_by_lanes < 1.5 * events, read_by_lanes
    assert len(runner.shared._events) <= 600


async def test_a_stalled_reader_holds_the_others_back_only_for_its_patience() -> None:
    store = CountingStore()
    await fill(store, 500)
    shared = SharedLog(store, capacity=60, fetch=20, patience=0.3)
    slow, fast = shared.reader(), shared.reader()
    first = await slow.read(START, 5)  # then it stalls (its store is down, say)
    started = anyio.current_time()
    with anyio.fail_after(5):
        await read_to_the_head(fast, store)
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


class WatchedSink(FlakySink):
    """Records, at each write, what the shared log knows of its lane, and after a failed
    write, what it knows while the lane waits to retry."""

    def __init__(self, fail_before: set[int]) -> None:
        super().__init__("watched", fail_before=fail_before)
        self.log: SharedLog | None = None
        self.reader: LogReader | None = None
        self.during_writes: list[tuple[bool, bool]] = []
        self.between_attempts: list[tuple[bool, bool]] = []

    def cursor(self) -> tuple[bool, bool]:
        """(working, away) of the lane's cursor."""
        assert self.log is not None and self.reader is not None
        c = self.log._cursors[id(self.reader)]
        return c.working is not None, c.away

    async def write(self, target: Target, batch: Batch) -> None:
        self.during_writes.append(self.cursor())
        try:
            await super().write(target, batch)
        except StoreUnavailable:  # the lane now backs off (50-100 ms): look meanwhile
            assert self.group is not None
            self.group.start_soon(self._look_during_backoff)
            raise

    async def _look_during_backoff(self) -> None:
        await anyio.sleep(0.02)
        self.between_attempts.append(self.cursor())

    group: TaskGroup | None = None


async def test_a_lane_tells_the_shared_log_when_it_works_and_when_it_waits_out_a_failure() -> None:
    """Its place in the convoy is held while it writes (a slow catch-up flush does not cost
    it the shared window, as it did at 1,000,000 events), and given up while it waits to
    retry a failing store (the other lanes do not wait for it)."""
    store = CountingStore()
    await fill(store, 300)
    sink = WatchedSink(fail_before={2})
    (lane,) = tally_lanes(store, [sink], 100)
    lane.backoff = Backoff(base=0.1, cap=0.1)
    runner = Runner(store, [lane])
    assert runner.shared is not None and isinstance(lane.source, LogReader)
    sink.log, sink.reader = runner.shared, lane.source
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            sink.group = group
            await runner.run(until_caught_up=True)
    assert sink.during_writes and all(w == (True, False) for w in sink.during_writes)
    assert sink.between_attempts == [(False, True)]
    assert id(lane.source) not in runner.shared._cursors  # it left when it was done


async def test_a_lane_working_too_long_stops_holding_the_others() -> None:
    store = CountingStore()
    await fill(store, 500)
    shared = SharedLog(store, capacity=60, fetch=20, patience=0.4)
    slow, fast = shared.reader(), shared.reader()
    await slow.read(START, 5)
    started = anyio.current_time()
    with slow.working(), anyio.fail_after(5):  # a store call that hangs
        await read_to_the_head(fast, store)
        held = anyio.current_time() - started
    assert shared.waits >= 1
    assert 0.3 < held < 3, held  # held for the patience, not for the whole call


async def test_a_lane_waiting_out_a_failure_or_gone_holds_nobody() -> None:
    """A lane between attempts at a failing store (or stopped) is not waited for, however
    long the patience: the others go on at once."""
    store = CountingStore()
    await fill(store, 500)
    shared = SharedLog(store, capacity=60, fetch=20, patience=60)
    down, gone, fast = shared.reader(), shared.reader(), shared.reader()
    await down.read(START, 5)
    await gone.read(START, 5)
    gone.leave()
    with down.away(), anyio.fail_after(5):
        await read_to_the_head(fast, store)
    assert shared.waits == 0


class SlowToStart(InMemorySink):
    """Its target takes ``seconds`` to prepare (an index to create, say)."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name)
        self.seconds = seconds

    async def prepare(self, target: Target) -> None:
        await anyio.sleep(self.seconds)
        await super().prepare(target)


async def test_a_lane_slow_to_start_finds_the_window_waiting_for_it() -> None:
    """The lanes that start first do not run ahead of one still preparing its target: at
    1,000,000 events one lane's first read came 14,000 events behind the window, and it read,
    decoded and folded alone for the whole rebuild."""
    store = CountingStore()
    await fill(store, 2_000)
    sinks: list[InMemorySink] = [SlowToStart("slow", seconds=0.3), InMemorySink("fast")]
    lanes = tally_lanes(store, sinks, 100)
    runner = Runner(store, lanes)
    assert runner.shared is not None
    runner.shared.fetch, runner.shared.capacity = 100, 300
    read_by_lanes, events = await replay(store, runner, lanes, sinks)
    assert runner.shared.waits > 0  # the fast lane waited for the slow one's first read
    assert read_by_lanes < 1.2 * events, read_by_lanes  # alone: about twice


async def test_readers_queued_to_extend_the_window_do_not_wait_on_each_other() -> None:
    """Three readers need the window extended at once, and the store takes a while to answer.
    Before, the reader holding the window's lock waited there for a reader that the next
    extension would leave behind, and that reader was queued for the lock: nobody moved until
    the patience ran out, and the reader was left to read the store alone. Seen at 1,000,000
    events: all five lanes idle for 5 s, and the slowest left behind, about three times per
    rebuild (decision 0007, second amendment)."""
    store = SlowStore()
    await fill(store, 40)
    positions = [e.position for e in await store.read(START, 40)]
    log = SharedLog(store, capacity=10, fetch=2, patience=5.0)
    filler = log.reader("filler")
    assert len(await filler.read(START, 8)) == 8
    assert len(await filler.read(positions[1], 8)) == 8
    log.leave(id(filler))  # the window holds events 1-10

    async def front(name: str) -> None:
        reader = log.reader(name)
        assert len(await reader.read(positions[7], 8)) == 8  # events 9-16: two extensions
        log.leave(id(reader))

    async def slow() -> None:
        reader = log.reader("b")
        assert len(await reader.read(positions[2], 8)) == 8  # events 4-11: one extension
        assert len(await reader.read(positions[10], 8)) == 8  # and on, as a lane does
        log.leave(id(reader))

    started = anyio.current_time()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for task in (partial(front, "a"), partial(front, "c"), slow):
                group.start_soon(task)  # queued for the lock in this order
                await anyio.sleep(0.001)
    assert log.left_behind == 0
    assert anyio.current_time() - started < 2.5, "a reader waited out the patience"
