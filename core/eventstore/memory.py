"""An in-memory event store with the same contract as the Postgres one, for core unit tests.

It models transactions and the visibility fence: a transaction takes its id at its first
append and, while open, holds back every reader from its id onwards, exactly as
``pg_snapshot_xmin`` does in Postgres. Like Postgres, an append sees only committed events
and its own transaction's, and waits while another open transaction has staged events of the
same stream or the same event ids (Postgres waits on the unique keys); a failed append dooms
its transaction (:func:`~core.eventstore.base.doom`). Two transactions that wait on each other
wait for good (Postgres would detect the deadlock): tests must not build one.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from time import monotonic

import anyio

from core.errors import (
    CheckpointAheadOfLog,
    ConcurrencyError,
    InvalidEvent,
)
from core.events import EventEnvelope, EventLimits, NewEvent
from core.eventstore.base import (
    ANY,
    AppendResult,
    EventStore,
    StreamAppender,
    ahead_of_log,
)
from core.position import Position

__all__ = ("InMemoryEventStore",)


class _MemoryTransaction(StreamAppender):
    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        self.limits = store.limits
        self.xid: int | None = None
        self.started = monotonic()
        self.staged: list[EventEnvelope] = []
        self.ended = anyio.Event()

    async def _wait_for(self, stream_id: str, events: Sequence[NewEvent]) -> None:
        while (holder := self._store._holder(self, stream_id, events)) is not None:
            await holder.ended.wait()

    async def _append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        encoded: Sequence[tuple[str, str]],
        expected_version: int | None,
    ) -> AppendResult:
        return self._store._stage(self, stream_id, events, encoded, expected_version)


class InMemoryEventStore(EventStore):
    """Events in a sorted list; transactions and the fence simulated. Not thread-safe."""

    def __init__(self, limits: EventLimits | None = None) -> None:
        self.limits = limits or EventLimits()
        self._events: list[EventEnvelope] = []
        self._keys: list[Position] = []
        self._streams: dict[str, list[EventEnvelope]] = {}
        self._by_id: dict[str, EventEnvelope] = {}
        self._open: list[_MemoryTransaction] = []
        self._next_xid = 1000
        self._next_gpos = 1
        self._changed = anyio.Event()

    def _version_of(self, stream_id: str, tx: _MemoryTransaction) -> int:
        """The stream's version as ``tx`` sees it: committed events and its own."""
        versions = [e.stream_version for e in self._streams.get(stream_id, ())]
        versions.extend(e.stream_version for e in tx.staged if e.stream_id == stream_id)
        return max(versions, default=0)

    def _holder(
        self, tx: _MemoryTransaction, stream_id: str, events: Sequence[NewEvent]
    ) -> _MemoryTransaction | None:
        """Another open transaction that has staged events of ``stream_id`` or any of these
        event ids: ``tx`` waits for it to end, as Postgres waits on a unique key."""
        ids = {str(e.event_id) for e in events}
        for other in self._open:
            if other is not tx and any(
                e.stream_id == stream_id or str(e.event_id) in ids for e in other.staged
            ):
                return other
        return None

    def _stage(
        self,
        tx: _MemoryTransaction,
        stream_id: str,
        events: Sequence[NewEvent],
        encoded: Sequence[tuple[str, str]],
        expected_version: int | None,
    ) -> AppendResult:
        mine = {str(e.event_id): e for e in tx.staged}
        known = [self._by_id.get(str(e.event_id)) or mine.get(str(e.event_id)) for e in events]
        if all(known):
            if any(k is None or k.stream_id != stream_id for k in known):
                raise InvalidEvent(f"stream {stream_id!r}: event ids already used elsewhere")
            last = max(k.stream_version for k in known if k is not None)
            return AppendResult(stream_id, last, 0)
        if any(known):
            raise InvalidEvent(
                f"stream {stream_id!r}: some of these event ids were already appended and some "
                "were not; an event id may be appended once, with the same batch"
            )
        current = self._version_of(stream_id, tx)
        if expected_version is not None and expected_version != current:
            raise ConcurrencyError(stream_id, expected_version, current)
        if tx.xid is None:
            tx.xid = self._next_xid
            self._next_xid += 1
        now = datetime.now(UTC)
        for offset, (event, (data, metadata)) in enumerate(zip(events, encoded, strict=True), 1):
            envelope = EventEnvelope(
                event_id=event.event_id,
                stream_id=stream_id,
                stream_version=current + offset,
                event_type=event.event_type,
                schema_version=event.schema_version,
                data=json.loads(data),
                metadata=json.loads(metadata),
                recorded_at=now,
                position=Position(tx.xid, self._next_gpos),
            )
            self._next_gpos += 1
            tx.staged.append(envelope)
        return AppendResult(stream_id, current + len(events), len(events))

    def _commit(self, tx: _MemoryTransaction) -> None:
        for envelope in tx.staged:
            index = bisect.bisect(self._keys, envelope.position)
            self._keys.insert(index, envelope.position)
            self._events.insert(index, envelope)
            self._streams.setdefault(envelope.stream_id, []).append(envelope)
            self._streams[envelope.stream_id].sort(key=lambda e: e.stream_version)
            self._by_id[str(envelope.event_id)] = envelope
        self._wake()

    def _wake(self) -> None:
        self.notifications += 1
        self._changed.set()
        self._changed = anyio.Event()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[StreamAppender]:
        tx = _MemoryTransaction(self)
        self._open.append(tx)
        try:
            yield tx
            tx.raise_if_doomed()
        except BaseException:
            self._open.remove(tx)
            tx.ended.set()
            self._wake()
            raise
        self._open.remove(tx)
        tx.ended.set()
        self._commit(tx)

    async def append(
        self, stream_id: str, events: Sequence[NewEvent], expected_version: int | None = ANY
    ) -> AppendResult:
        async with self.transaction() as tx:
            return await tx.append(stream_id, events, expected_version)

    def _fence(self) -> Position:
        open_xids = [tx.xid for tx in self._open if tx.xid is not None]
        return Position(min(open_xids, default=self._next_xid), 0)

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        start = bisect.bisect_right(self._keys, after)
        end = bisect.bisect_left(self._keys, self._fence())
        return self._events[start : min(end, start + limit)]

    async def read_stream(
        self, stream_id: str, from_version: int = 1, to_version: int | None = None
    ) -> list[EventEnvelope]:
        top = to_version if to_version is not None else 1 << 62
        return [
            e for e in self._streams.get(stream_id, ()) if from_version <= e.stream_version <= top
        ]

    async def head(self) -> Position | None:
        end = bisect.bisect_left(self._keys, self._fence())
        return self._keys[end - 1] if end else None

    async def count_between(self, after: Position, upto: Position) -> int:
        return max(
            0, bisect.bisect_right(self._keys, upto) - bisect.bisect_right(self._keys, after)
        )

    async def check_reachable(self, position: Position, owner: str) -> None:
        if position.transaction_id >= self._next_xid:
            raise CheckpointAheadOfLog(ahead_of_log(owner, position, self._next_xid))

    async def fence_age(self) -> float:
        ages = [monotonic() - tx.started for tx in self._open if tx.xid is not None]
        return max(ages, default=0.0)

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        """The fence moves here only when a transaction ends, which wakes every reader: no
        use for ``after``."""
        if seen is not None and self.notifications > seen:
            return
        with anyio.move_on_after(timeout):
            await self._changed.wait()
