"""The lanes' view of the log: lanes behind the head read the store themselves; lanes at the
head share one reader of the live tail, whose events are decoded once and held in a bounded,
contiguous window."""

from __future__ import annotations

import bisect

import anyio

from core.events import EventEnvelope
from core.eventstore.base import EventStore
from core.position import Position

__all__ = ("SharedTail",)


class SharedTail:
    """Serves ``read(after, limit)`` from a window of the newest events when it can.

    Invariant: the window holds every readable event in ``(window_start, window_end]``, in
    order, without holes (the store's fence guarantees nothing appears behind a read event), so
    a read served from it equals a read from the store.
    """

    def __init__(self, store: EventStore, capacity: int = 20_000, fetch: int = 2_000) -> None:
        self.store = store
        self.capacity = capacity
        self.fetch = fetch
        self._events: list[EventEnvelope] = []
        self._keys: list[Position] = []
        self._start: Position | None = None
        self._end: Position | None = None
        self._lock = anyio.Lock()
        self.store_reads = 0
        self.window_reads = 0

    def _covers(self, after: Position) -> bool:
        return (
            self._start is not None and self._end is not None and self._start <= after <= self._end
        )

    def _from_window(self, after: Position, limit: int) -> list[EventEnvelope]:
        index = bisect.bisect_right(self._keys, after)
        return self._events[index : index + limit]

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        if self._covers(after):
            found = self._from_window(after, limit)
            if found:
                self.window_reads += 1
                return found
            await self._extend(after)
            self.window_reads += 1
            return self._from_window(after, limit)
        self.store_reads += 1
        events = await self.store.read(after, limit)
        if len(events) < limit:
            # The caller is at the head: seed the window from here if there is none.
            async with self._lock:
                if self._start is None or not self._covers(after):
                    self._reset(after, events)
        return events

    def _reset(self, after: Position, events: list[EventEnvelope]) -> None:
        if self._start is not None and self._end is not None and after < self._start:
            return  # keep the newer window; a slower lane reads the store until it catches up
        self._events = list(events)
        self._keys = [e.position for e in events]
        self._start = after
        self._end = events[-1].position if events else after

    async def _extend(self, after: Position) -> None:
        async with self._lock:
            if self._end is None or after < self._end:
                return  # another lane extended the window while this one waited
            self.store_reads += 1
            new = await self.store.read(self._end, self.fetch)
            if not new:
                return
            self._events.extend(new)
            self._keys.extend(e.position for e in new)
            self._end = new[-1].position
            excess = len(self._events) - self.capacity
            if excess > 0:
                self._start = self._keys[excess - 1]
                del self._events[:excess]
                del self._keys[:excess]

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(self, timeout: float, seen: int | None = None) -> None:
        await self.store.wait_for_new(timeout, seen)
