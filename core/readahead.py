"""Reading the next chunk of the log while a lane folds and writes the current one.

A lane behind the head spends its time in three places that need not wait for one another:
the log read (the database's CPU and the wire), the fold (this process), the write (the
store). :class:`ReadAhead` overlaps the first with the other two.
"""

from __future__ import annotations

from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from core.events import EventEnvelope
from core.position import Position

__all__ = ("EventSource", "ReadAhead")


class EventSource(Protocol):
    """What a lane reads the log through: the store itself or a shared tail."""

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]: ...
    @property
    def notifications(self) -> int: ...

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None: ...


class _Chunk:
    """One background read and its outcome."""

    def __init__(self, after: Position, limit: int) -> None:
        self.after = after
        self.limit = limit
        self.done = anyio.Event()
        self.events: list[EventEnvelope] = []
        self.error: Exception | None = None

    async def fill(self, source: EventSource) -> None:
        try:
            self.events = await source.read(self.after, self.limit)
        except Exception as exc:  # handed to the reader, who decides about retries
            self.error = exc
        finally:
            self.done.set()

    async def result(self) -> list[EventEnvelope]:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.events


class ReadAhead:
    """An :class:`EventSource` that, after a full read, reads the following chunk in the
    background of ``group``.

    Contract: ``read(after, limit)`` returns exactly what ``source.read(after, limit)`` would
    return now or, when the chunk was read ahead, what it returned then, which is the same
    events (the log never changes behind a position the fence let a reader pass). Only full
    chunks are taken from a read ahead: a chunk that came back short (the head) is read again,
    so a reader at the head sees the log as of its own read and waits on the notification
    counter it sampled before that read. An error of a background read is raised by the
    ``read`` that takes it, and nothing is read ahead after it. At most one chunk is held.
    """

    def __init__(self, source: EventSource, group: TaskGroup) -> None:
        self.source = source
        self._group = group
        self._ahead: _Chunk | None = None
        self.reads_ahead_used = 0

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        ahead, self._ahead = self._ahead, None
        events: list[EventEnvelope] | None = None
        if ahead is not None and ahead.after == after and ahead.limit >= limit:
            found = await ahead.result()
            if len(found) >= limit:
                events = found[:limit]
                self.reads_ahead_used += 1
        if events is None:
            events = await self.source.read(after, limit)
        if len(events) == limit:
            chunk = _Chunk(events[-1].position, limit)
            self._ahead = chunk
            self._group.start_soon(chunk.fill, self.source)
        return events

    @property
    def notifications(self) -> int:
        return self.source.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.source.wait_for_new(timeout, seen, after)
