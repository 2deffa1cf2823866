"""The event store contract, shared by the Postgres store and the in-memory one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from core.errors import ConfigurationError
from core.events import EventEnvelope, NewEvent
from core.position import Position

__all__ = ("ANY", "NO_STREAM", "AppendResult", "EventStore", "StreamAppender", "validate_stream_id")

ANY: int | None = None
"""``expected_version=ANY``: append at the stream's current end, whatever it is."""
NO_STREAM = 0
"""``expected_version=NO_STREAM``: the stream must not exist yet."""


def validate_stream_id(stream_id: str, max_length: int) -> None:
    """Refuse an empty, overlong or control-character stream id."""
    if not isinstance(stream_id, str) or not stream_id:
        raise ConfigurationError("stream_id", stream_id, "a non-empty string is required")
    if len(stream_id) > max_length:
        raise ConfigurationError(
            "stream_id", stream_id[:40] + "...", f"at most {max_length} characters are allowed"
        )
    if any(ord(ch) < 32 for ch in stream_id):
        raise ConfigurationError("stream_id", stream_id, "control characters are not allowed")


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stream's version after it, and whether it wrote anything."""

    stream_id: str
    next_expected_version: int
    written: int


class StreamAppender(ABC):
    """Appends inside one open transaction (several streams may share it)."""

    @abstractmethod
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult: ...


class EventStore(ABC):
    """An append-only log of events read in a safe global order.

    Contract:

    * ``append`` writes a stream's events in one statement with optimistic concurrency on
      ``expected_version`` and is idempotent by ``event_id``: appending the same events again is
      a no-op that reports ``written=0``; an event id reused for other content is refused.
    * ``read(after, limit)`` returns events strictly after ``after`` in position order, and only
      events behind the visibility fence: no event may later appear at a position at or before
      the last one returned. It never skips, never times out, never returns a duplicate.
    * ``head()`` is the newest readable position (``None`` when the log is empty).
    * ``wait_for_new(timeout)`` returns when new events may be readable, or after ``timeout``.
    """

    @abstractmethod
    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[StreamAppender]:
        """One transaction for appends to several streams; all commit or none."""

    @abstractmethod
    async def read(self, after: Position, limit: int) -> list[EventEnvelope]: ...

    @abstractmethod
    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[EventEnvelope]:
        """Committed events of one stream with ``from_version <= version <= to_version``."""

    @abstractmethod
    async def head(self) -> Position | None: ...

    @abstractmethod
    async def count_between(self, after: Position, upto: Position) -> int:
        """How many readable events lie in ``(after, upto]``: a lane's lag in events."""

    @abstractmethod
    async def fence_age(self) -> float:
        """Seconds the oldest open writing transaction has held the fence back (0 if none)."""

    @abstractmethod
    async def wait_for_new(self, timeout: float) -> None: ...

    async def iterate(self, after: Position, page: int = 1000) -> AsyncIterator[EventEnvelope]:
        """Every readable event after ``after``, page by page, until the current head."""
        while True:
            events = await self.read(after, page)
            for event in events:
                yield event
            if len(events) < page:
                return
            after = events[-1].position

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the in-memory store has none."""
