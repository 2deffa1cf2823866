"""ReadAhead: reading the next chunk in the background never changes what a reader sees."""

from __future__ import annotations

import anyio
import pytest

from core.errors import StoreUnavailable
from core.events import EventEnvelope, NewEvent
from core.eventstore import InMemoryEventStore
from core.position import START, Position
from core.readahead import ReadAhead

pytestmark = pytest.mark.anyio


async def store_with(events: int) -> InMemoryEventStore:
    store = InMemoryEventStore()
    for i in range(events):
        await store.append(f"s-{i % 7}", [NewEvent(event_type="E", data={"i": i})])
    return store


class CountingSource:
    """The store, counting reads and failing the reads it is told to fail."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.reads: list[tuple[Position, int]] = []
        self.fail_next = 0

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        self.reads.append((after, limit))
        if self.fail_next:
            self.fail_next -= 1
            raise StoreUnavailable("the log is down")
        return await self.store.read(after, limit)

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


async def test_full_chunks_come_from_the_read_ahead_and_equal_direct_reads() -> None:
    store = await store_with(100)
    source = CountingSource(store)
    async with anyio.create_task_group() as group:
        ahead = ReadAhead(source, group)
        after, seen = START, []
        while True:
            chunk = await ahead.read(after, 10)
            assert chunk == await store.read(after, 10)
            seen += chunk
            if len(chunk) < 10:
                break
            after = chunk[-1].position
        group.cancel_scope.cancel()
    assert [e.position for e in seen] == [e.position for e in await store.read(START, 1000)]
    assert ahead.reads_ahead_used == 9  # chunks 2..10; the empty 11th is read again
    assert len(source.reads) == 12  # 1 direct + 10 ahead + the head re-read


async def test_a_short_chunk_read_ahead_is_read_again_and_sees_newer_events() -> None:
    store = await store_with(10)
    source = CountingSource(store)
    async with anyio.create_task_group() as group:
        ahead = ReadAhead(source, group)
        first = await ahead.read(START, 10)  # full: reads the next chunk ahead (empty now)
        await anyio.sleep(0.01)
        await store.append("s-new", [NewEvent(event_type="E", data={"late": True})])
        second = await ahead.read(first[-1].position, 10)
        group.cancel_scope.cancel()
    assert [e.stream_id for e in second] == ["s-new"]
    assert ahead.reads_ahead_used == 0


async def test_a_smaller_limit_takes_the_first_events_of_the_chunk() -> None:
    store = await store_with(30)
    source = CountingSource(store)
    async with anyio.create_task_group() as group:
        ahead = ReadAhead(source, group)
        first = await ahead.read(START, 10)
        second = await ahead.read(first[-1].position, 4)
        group.cancel_scope.cancel()
    assert second == await store.read(first[-1].position, 4)
    assert ahead.reads_ahead_used == 1


async def test_a_failed_read_ahead_raises_on_the_read_that_takes_it_then_reads_afresh() -> None:
    store = await store_with(30)
    source = CountingSource(store)
    async with anyio.create_task_group() as group:
        ahead = ReadAhead(source, group)
        first = await ahead.read(START, 10)
        source.fail_next = 0
        await anyio.sleep(0.01)  # the read ahead has run (and succeeded); make the next fail
        second = await ahead.read(first[-1].position, 10)
        source.fail_next = 1
        with pytest.raises(StoreUnavailable):
            await ahead.read(second[-1].position, 10)
        third = await ahead.read(second[-1].position, 10)
        group.cancel_scope.cancel()
    assert third == await store.read(second[-1].position, 10)


async def test_a_read_for_another_position_ignores_the_chunk_read_ahead() -> None:
    store = await store_with(30)
    source = CountingSource(store)
    async with anyio.create_task_group() as group:
        ahead = ReadAhead(source, group)
        await ahead.read(START, 10)
        again = await ahead.read(START, 10)  # e.g. a lane restarting from its checkpoint
        group.cancel_scope.cancel()
    assert again == await store.read(START, 10)
    assert ahead.reads_ahead_used == 0
