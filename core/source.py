"""The lanes' shared view of the log: one reader of the store per runner, whose events are
read and decoded once and held in a bounded, contiguous window that every lane reads through,
whether it is replaying the log from the start or following the head.

A runner's lanes mostly move together: after a start or a rebuild they all replay the same
history, and then they all follow the same tail. Each lane reading the store for itself did
the read and the envelope decoding once per lane; through the window they are done once. Lanes
that fall out of the window (a lane stalled on its store, or far behind the rest) read the
store themselves, exactly as before, and join again once they reach it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from time import monotonic

import anyio

from core.events import EventEnvelope
from core.eventstore.base import EventStore
from core.position import Position

__all__ = ("LogReader", "SharedLog")

log = logging.getLogger("projectionist.source")


@dataclass(slots=True)
class _Cursor:
    """Where one reader last asked to read from, and when (or when its lane last ended a call
    to its store); ``away`` while its lane waits out a store failure."""

    after: Position | None
    """``None``: its lane has arrived but not read yet (it may need anything the window
    holds)."""
    at: float
    working: float | None = None
    """Since when its lane is in a call to its store (``None``: it is not)."""
    depth: int = 0
    """Calls in flight (a call may make another)."""
    away: bool = False


class SharedLog:
    """Serves ``read(after, limit)`` from a window of the log when it can.

    Invariant: the window holds every readable event in ``(start, end]``, in order, without
    holes (the store's fence guarantees that nothing appears behind an event once it is
    readable), so a read served from it equals a read from the store. A read that the window
    covers only in part extends it from the store first, so a short answer always means the
    head of the store, never the end of the window.

    Bounded memory with a convoy: the window holds at most ``capacity`` events. A reader
    that would extend it past that waits for the active readers that still need its oldest
    events. A reader is active unless its lane is :meth:`away` (waiting between attempts at a
    store that fails), has left (:meth:`leave`: halted, stopped, caught up), or has neither
    read nor ended a store call (:meth:`working`) for ``patience`` seconds. A reader that is
    not active no longer holds the others back: it reads the store on its own, and joins again
    once it reaches the window. In one process this costs nothing: the lanes share one core,
    and a lane waiting for the slowest gives it the CPU.

    A lane arrives (:meth:`arrive`) when it starts, so the window keeps its place before its
    first read. Without that, at 1,000,000 events the lane slowest to prepare its target made
    its first read 14,000 events behind the window and read, decoded and folded alone for the
    rest of the rebuild (decision 0007's amendment).
    """

    def __init__(
        self,
        store: EventStore,
        capacity: int = 10_000,
        fetch: int = 2_000,
        patience: float = 5.0,
    ) -> None:
        if capacity < fetch:
            raise ValueError(f"capacity {capacity} must be at least fetch {fetch}")
        self.store = store
        self.capacity = capacity
        self.fetch = fetch
        self.patience = patience
        self._events: list[EventEnvelope] = []
        self._keys: list[Position] = []
        self._start: Position | None = None
        self._end: Position | None = None
        self._lock = anyio.Lock()
        self._begun = 0
        """Extensions begun so far; the number of the newest is its ticket."""
        self._last = 0
        self._last_reached_head = False
        """The ticket of the newest finished extension, and whether it found the head."""
        self._moved = anyio.Event()
        self._cursors: dict[int, _Cursor] = {}
        self._names: dict[int, str] = {}
        self.left_behind = 0
        """Times a reader still inside the window was left behind by the others."""
        self.store_reads = 0
        self.window_reads = 0
        self.waits = 0

    def reader(self, name: str = "a reader") -> LogReader:
        """An :class:`~core.readahead.EventSource` for one lane (``name`` in log lines): its
        reads count as that lane's place in the convoy."""
        reader = LogReader(self)
        self._names[id(reader)] = name
        return reader

    # -- reading ---------------------------------------------------------------------------

    def _covers(self, after: Position | None) -> bool:
        if after is None:  # arrived, not read yet: counts as needing the whole window
            return self._start is not None
        return (
            self._start is not None and self._end is not None and self._start <= after <= self._end
        )

    def _behind(self, cursor: _Cursor, dropped: Position) -> bool:
        return cursor.after is None or cursor.after < dropped

    def _from_window(self, after: Position, limit: int) -> list[EventEnvelope]:
        index = bisect.bisect_right(self._keys, after)
        return self._events[index : index + limit]

    def _held_after(self, after: Position) -> int:
        """How many of the window's events come after ``after`` (no copy of them)."""
        return len(self._keys) - bisect.bisect_right(self._keys, after)

    async def read(
        self, after: Position, limit: int, reader: int | None = None
    ) -> list[EventEnvelope]:
        """What ``store.read(after, limit)`` returns now (or returned to a read of the window
        that began after this one did)."""
        if reader is not None:
            cursor = self._cursors.get(reader)
            if cursor is None:
                self._cursors[reader] = _Cursor(after, monotonic())
            else:  # in place: a read ahead during a flush keeps the lane working
                cursor.after, cursor.at = after, monotonic()
            self._wake()
        if limit <= self.capacity - self.fetch and (
            self._covers(after) or not self._active(exclude=reader)
        ):
            begun = self._begun
            found = self._from_window(after, limit) if self._covers(after) else []
            while len(found) < limit:
                grew = await self._extend(after, begun, reader, limit)
                # another reader may have extended the window while this one waited
                found = self._from_window(after, limit) if self._covers(after) else []
                if not grew:
                    break
            if self._covers(after):
                self.window_reads += 1
                return found
        self.store_reads += 1
        return await self.store.read(after, limit)

    def _wake(self) -> None:
        self._moved.set()
        self._moved = anyio.Event()

    def _until(self, cursor: _Cursor) -> float:
        """When ``cursor`` stops counting as active, unless it reads or works again."""
        if cursor.away:
            return float("-inf")
        return cursor.at + self.patience

    def _active(self, exclude: int | None) -> bool:
        """Whether a reader other than ``exclude`` is reading inside the window."""
        now = monotonic()
        return any(
            key != exclude and now < self._until(c) and self._covers(c.after)
            for key, c in self._cursors.items()
        )

    @contextmanager
    def working(self, reader: int) -> Iterator[None]:
        """``reader``'s lane is in one attempt of a call to its store: when the call ends it
        counts as having just read. (Holding its place during the call too, for up to 30 s,
        was tried and reverted: a 1,000,000-event rebuild then stalled 30 s per window, see
        decision 0007's amendment.)"""
        cursor = self._cursors.get(reader)
        if cursor is None:  # it has not read yet: nothing to hold
            yield
            return
        if cursor.depth == 0:
            cursor.working = monotonic()
        cursor.depth += 1
        try:
            yield
        finally:
            cursor.depth -= 1
            if cursor.depth == 0:
                cursor.working = None
                cursor.at = monotonic()
                self._wake()

    @contextmanager
    def away(self, reader: int) -> Iterator[None]:
        """``reader``'s lane waits between attempts at a failing store: the others do not wait
        for it meanwhile."""
        cursor = self._cursors.get(reader)
        if cursor is None:
            yield
            return
        cursor.away = True
        self._wake()
        try:
            yield
        finally:
            cursor.away = False
            cursor.at = monotonic()

    def arrive(self, reader: int) -> None:
        """``reader``'s lane has started (it prepares its target and reads its checkpoint
        before its first read): the window keeps what it holds for it meanwhile, within the
        usual patience. Without this, the lanes that start first ran up to 14,000 events
        ahead before a slower one's first read, which then read alone for the whole rebuild."""
        if reader not in self._cursors:
            self._cursors[reader] = _Cursor(None, monotonic())

    def leave(self, reader: int) -> None:
        """``reader``'s lane has stopped (halted, cancelled, caught up): forget its place."""
        if self._cursors.pop(reader, None) is not None:
            self._wake()

    # -- growing the window ----------------------------------------------------------------

    async def _extend(self, after: Position, begun: int, reader: int | None, limit: int) -> bool:
        """Read the events past the window's end into it (starting a window at ``after`` when
        no other reader is using it); False when there were none (the head) or the window is
        not this reader's to extend.

        Extensions are serialised by the window's lock, but a reader waits for room (for the
        readers behind) without holding it. Holding it made a deadlock that only the patience
        broke: at 1,000,000 events all five lanes sat idle for 5 s, about three times per
        rebuild, because the lock's holder waited for a lane that was itself queued for the
        lock (decision 0007, second amendment). A reader that gets the lock after another
        extension already brought what it asked for takes it as it is. So does one whose read
        began before an extension that found the head: that answer is as fresh as its own
        would have been.
        """
        while True:
            async with self._lock:
                if self._last > begun and self._last_reached_head:
                    return False
                if self._covers(after) and self._held_after(after) >= limit:
                    return True  # another reader's extension brought it meanwhile
                if not self._covers(after):
                    if self._active(exclude=reader):
                        return False
                    self._events, self._keys = [], []
                    self._start = self._end = after
                wait = self._room_wait(reader)
                if wait is None:
                    return await self._fetch_more()
            self.waits += 1
            deadline, moved = wait
            with anyio.move_on_after(max(0.0, deadline - monotonic())):
                await moved.wait()

    async def _fetch_more(self) -> bool:
        """Under the lock: one store read past the window's end, appended to the window."""
        end = self._end
        assert end is not None
        self._begun += 1
        index = self._begun
        self.store_reads += 1
        new = await self.store.read(end, self.fetch)
        self._last, self._last_reached_head = index, len(new) < self.fetch
        if not new:
            return False
        self._events.extend(new)
        self._keys.extend(e.position for e in new)
        self._end = new[-1].position
        excess = len(self._events) - self.capacity
        if excess > 0:
            self._start = self._keys[excess - 1]
            del self._events[:excess]
            del self._keys[:excess]
        return True

    def _room_wait(self, reader: int | None) -> tuple[float, anyio.Event] | None:
        """Under the lock: ``None`` when the next extension may drop what it must (no other
        active reader still needs those events; the extending reader's own are never dropped,
        see the ``limit`` bound in :meth:`read`), else until when to wait for the readers
        behind, and the event that says one of them moved."""
        excess = len(self._events) + self.fetch - self.capacity
        if excess <= 0:
            return None
        dropped = self._keys[excess - 1]
        now = monotonic()
        waiting_for = [
            c
            for key, c in self._cursors.items()
            if key != reader
            and now < self._until(c)
            and self._covers(c.after)
            and self._behind(c, dropped)
        ]
        if not waiting_for:
            self._note_left_behind(reader, dropped, now)
            return None
        return min(self._until(c) for c in waiting_for), self._moved

    def _note_left_behind(self, reader: int | None, dropped: Position, now: float) -> None:
        """Log each reader the next extension leaves behind: from then on it reads, decodes
        and folds on its own until it reaches the window again."""
        for key, c in self._cursors.items():
            if (
                key != reader
                and c.after is not None
                and self._covers(c.after)
                and c.after < dropped
            ):
                self.left_behind += 1
                why = "waiting out a store failure" if c.away else f"silent for {now - c.at:.1f} s"
                log.info(
                    "shared log: %s left behind at %s (%s); it reads the store on its own",
                    self._names.get(key, "a reader"),
                    c.after,
                    why,
                )

    # -- waiting for the head --------------------------------------------------------------

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


class LogReader:
    """One lane's handle on a :class:`SharedLog`."""

    def __init__(self, log: SharedLog) -> None:
        self.log = log

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        return await self.log.read(after, limit, id(self))

    def working(self) -> AbstractContextManager[None]:
        """Its lane is in one attempt of a store call (see :meth:`SharedLog.working`)."""
        return self.log.working(id(self))

    def away(self) -> AbstractContextManager[None]:
        """Its lane waits between attempts at a failing store (:meth:`SharedLog.away`)."""
        return self.log.away(id(self))

    def arrive(self) -> None:
        """Its lane has started (:meth:`SharedLog.arrive`)."""
        self.log.arrive(id(self))

    def leave(self) -> None:
        """Its lane has stopped (:meth:`SharedLog.leave`)."""
        self.log.leave(id(self))

    @property
    def notifications(self) -> int:
        return self.log.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.log.wait_for_new(timeout, seen, after)
