"""Helpers shared by the event store tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from core.events import EventEnvelope, EventLimits, NewEvent
from core.eventstore import EventStore
from core.eventstore.postgres import PostgresEventStore
from core.position import START, Position

LIMITS = EventLimits(max_payload_bytes=10_000, max_depth=16, max_stream_id_length=64)
"""Small limits, so the bad-input tests stay small."""

PgStoreFactory = Callable[..., Awaitable[PostgresEventStore]]
"""``await make(**connect_kwargs)``: see the ``pg_store_factory`` fixture."""

SETTLE_SECONDS = 30.0
"""How long a test waits for committed events to pass the fence. The fence is cluster-wide:
another session's open transaction (a colleague's test on the same server) holds it back."""


def event(n: int = 0, event_type: str = "Noted", **data: Any) -> NewEvent:
    return NewEvent(event_type=event_type, data={"n": n, **data}, metadata={"by": "test"})


def events(count: int, event_type: str = "Noted") -> list[NewEvent]:
    return [event(i, event_type) for i in range(count)]


async def read_all(store: EventStore, after: Position = START) -> list[EventEnvelope]:
    """Every event readable now after ``after`` (through ``store.read`` only)."""
    out: list[EventEnvelope] = []
    while True:
        page = await store.read(after, 500)
        out.extend(page)
        if len(page) < 500:
            return out
        after = page[-1].position


async def read_until(store: EventStore, count: int, after: Position = START) -> list[EventEnvelope]:
    """Read until at least ``count`` events are readable after ``after`` (or the settle time
    passes: then return what is there, for the caller's assertion to show)."""
    deadline = monotonic() + SETTLE_SECONDS
    while True:
        found = await read_all(store, after)
        if len(found) >= count or monotonic() > deadline:
            return found
        await store.wait_for_new(0.1)
