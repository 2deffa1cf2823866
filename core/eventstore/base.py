"""The event store contract, shared by the Postgres store and the in-memory one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from core.errors import ConfigurationError, InvalidEvent, ProjectionistError, StoreUnavailable
from core.events import EventEnvelope, EventLimits, NewEvent, encode_event
from core.position import Position

__all__ = (
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "StreamAppender",
    "ahead_of_log",
    "check_batch",
    "doom",
    "validate_stream_id",
)

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
    try:
        stream_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigurationError(
            "stream_id", stream_id, "it must be valid Unicode text (no lone surrogates)"
        ) from None


def check_batch(
    stream_id: str, events: Sequence[NewEvent], limits: EventLimits
) -> list[tuple[str, str]]:
    """Validate one append's input; return each event's data and metadata as JSON text.

    Refuses (with :class:`ConfigurationError`) an invalid stream id and (with
    :class:`InvalidEvent`) an empty batch, an event id given twice in the batch, or an event
    that :func:`core.events.encode_event` refuses.
    """
    validate_stream_id(stream_id, limits.max_stream_id_length)
    if not events:
        raise InvalidEvent(f"stream {stream_id!r}: nothing to append")
    if len({e.event_id for e in events}) != len(events):
        raise InvalidEvent(f"stream {stream_id!r}: the batch holds the same event id twice")
    return [encode_event(stream_id, e, limits) for e in events]


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stream's version after it, and whether it wrote anything."""

    stream_id: str
    next_expected_version: int
    written: int


class StreamAppender(ABC):
    """Appends inside one open transaction (several streams may share it).

    An append refused by :func:`check_batch` (nothing sent) leaves the transaction as it was.
    Any other failure of an append dooms the transaction (see :func:`doom`).
    """

    failed: ProjectionistError | None = None
    """The failure that doomed this transaction, if one has."""
    limits: EventLimits
    """What :func:`check_batch` allows."""

    def raise_if_doomed(self) -> None:
        """Raise the failure that doomed this transaction again, if one has."""
        if self.failed is not None:
            raise self.failed

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult:
        """Check the batch (nothing is sent if it is refused), wait for what holds its keys
        (:meth:`_wait_for`), then :meth:`_append` it; any failure of that dooms the
        transaction."""
        self.raise_if_doomed()
        encoded = check_batch(stream_id, events, self.limits)
        await self._wait_for(stream_id, events)
        try:
            return await self._append(stream_id, events, encoded, expected_version)
        except ProjectionistError as exc:
            self.failed = doom(exc)
            raise
        except BaseException:
            # Cancelled mid-statement: the server cancels the statement, which aborts the
            # transaction, or the statement ran and the caller no longer knows its outcome.
            self.failed = doom(
                StoreUnavailable(f"an append to stream {stream_id!r} was interrupted")
            )
            raise

    async def _wait_for(self, stream_id: str, events: Sequence[NewEvent]) -> None:  # noqa: B027
        """Wait until no other open transaction holds these keys (a store whose server waits
        inside the statement does nothing here)."""

    @abstractmethod
    async def _append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        encoded: Sequence[tuple[str, str]],
        expected_version: int | None,
    ) -> AppendResult:
        """Append the checked batch (``encoded`` is :func:`check_batch`'s result)."""


def ahead_of_log(owner: str, position: Position, next_xid: int, *, lane: bool = True) -> str:
    """The message of :class:`~core.errors.CheckpointAheadOfLog`; ``owner`` is a lane's name
    (``lane``) or the store's reader, whose remedy is every lane's rebuild."""
    rebuild = f"`projectionist rebuild {owner}`" if lane else "`projectionist rebuild` each lane"
    return (
        f"{owner} has read up to position {position}, but the event log's next transaction "
        f"id is {next_xid}: the log lost transactions that were read from it (a failover that "
        "lost its last commits, or a restore to an earlier point in time), so new events would "
        "get positions behind it and never be read. Remedy: make sure the log holds what it "
        f"should, then rebuild the read models ({rebuild}); see docs/event-log.md (Restoring "
        "the log)"
    )


def doom(error: ProjectionistError) -> ProjectionistError:
    """``error`` marked as the failure that doomed its transaction.

    Postgres aborts a transaction at a failed statement, and a refused batch may have written
    part of itself before the refusal: so once an append in a transaction has failed, every
    later append in it raises ``error`` again, and the block's end rolls back and raises it
    again even if the block caught it. A doomed transaction never reports a commit.
    """
    error.add_note(
        "the append transaction holding this append is rolled back: nothing appended in it "
        "is committed; run the whole transaction again"
    )
    return error


class EventStore(ABC):
    """An append-only log of events read in a safe global order.

    Contract:

    * ``append`` writes a stream's events in one statement (committed by itself, outside
      :meth:`transaction`) with optimistic concurrency on
      ``expected_version`` and is idempotent by ``event_id``: appending the same events again is
      a no-op that reports ``written=0`` (whatever ``expected_version`` says); a batch that
      reuses some event ids but not all, or ids already used by another stream, is refused with
      :class:`~core.errors.InvalidEvent` and writes nothing. Content is not compared: an id
      names one event for good.
    * ``read(after, limit)`` returns events strictly after ``after`` in position order, and only
      events behind the visibility fence: no event may later appear at a position at or before
      the last one returned. It never skips, never times out, never returns a duplicate.
    * ``head()`` is the newest readable position (``None`` when the log is empty).
    * ``wait_for_new(timeout, seen, after)`` returns when new events may be readable, or after
      ``timeout``; at once when ``notifications`` moved past ``seen`` (a caller reads
      ``notifications`` before it reads the log, so a wake-up between the two is not lost).
      A caller that has read up to ``after`` may be woken early, without a notification, when
      a commit it was woken for is still behind the fence (the fence moves without one).
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

    notifications: int = 0
    """How many wake-ups (commits of appends) this store has seen so far."""

    @abstractmethod
    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None: ...

    @abstractmethod
    async def check_reachable(self, position: Position, owner: str) -> None:
        """Refuse ``position`` (``owner``'s checkpoint) with
        :class:`~core.errors.CheckpointAheadOfLog` when this log's next transaction id is not
        above it: the log lost transactions that ``owner`` has read, and new events would get
        positions behind it, never to be read."""

    async def settle(self, timeout: float) -> bool:
        """Wait until every transaction that committed before this call is behind the fence
        (its events readable); False after ``timeout``. For read-your-writes across writers."""
        return True

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
