"""What the lane benchmarks share: a clock of seconds per activity, and a source and lookups
that record their time in it, so each report splits a catch-up into where it went."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from core.events import EventEnvelope
from core.eventstore.base import EventStore
from core.lookups import LookupProvider
from core.operations import Batch
from core.position import Position
from core.sink import StoredDocument, Target


async def append_steps(
    store: EventStore, steps: list[Any], per_tx: int = 2_000, progress: bool = False
) -> None:
    """Append ``(stream, events)`` steps, ``per_tx`` of them per transaction."""
    for first in range(0, len(steps), per_tx):
        async with store.transaction() as tx:
            for stream, new in steps[first : first + per_tx]:
                await tx.append(stream, new)
        if progress and first % 20_000 == 0:
            print(f"  appending: {first:,}/{len(steps):,} steps", flush=True)


class Clock:
    """Seconds spent per activity."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def add(self, what: str, started: float) -> None:
        self.spent[what] = self.spent.get(what, 0.0) + time.perf_counter() - started


class TimedSource:
    """The event store as a lane's source, timing its reads as "read log"."""

    def __init__(self, store: EventStore, clock: Clock) -> None:
        self.store, self.clock = store, clock

    async def read(self, after: Position, limit: int) -> list[EventEnvelope]:
        started = time.perf_counter()
        try:
            return await self.store.read(after, limit)
        finally:
            self.clock.add("read log", started)

    @property
    def notifications(self) -> int:
        return self.store.notifications

    async def wait_for_new(
        self, timeout: float, seen: int | None = None, after: Position | None = None
    ) -> None:
        await self.store.wait_for_new(timeout, seen, after)


class TimedLookups(LookupProvider):
    """Lookups timed as "lookups"."""

    def __init__(self, inner: LookupProvider, clock: Clock) -> None:
        self.inner, self.clock = inner, clock

    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]:
        started = time.perf_counter()
        try:
            return await self.inner.fetch(source, ids)
        finally:
            self.clock.add("lookups", started)


class Timed:
    """Mixin for a sink class: times ``load`` and ``write`` in ``self.clock`` and counts the
    operations written (``TimedSink(Timed, PostgresSink)``)."""

    write_label = "write batches"
    clock: Clock
    operations_written: int = 0

    def __init__(self, settings: Any, clock: Clock) -> None:
        super().__init__(settings)  # type: ignore[call-arg]
        self.clock = clock
        self.operations_written = 0

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        started = time.perf_counter()
        try:
            return await super().load(target, keys)  # type: ignore[misc, no-any-return]
        finally:
            self.clock.add("load documents", started)

    async def write(self, target: Target, batch: Batch) -> None:
        started = time.perf_counter()
        try:
            await super().write(target, batch)  # type: ignore[misc]
            self.operations_written += len(batch.operations)
        finally:
            self.clock.add(self.write_label, started)
