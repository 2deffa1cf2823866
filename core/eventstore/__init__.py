"""Event stores: the Postgres one for real use and an in-memory one for core unit tests."""

from core.eventstore.base import (
    ANY,
    NO_STREAM,
    AppendResult,
    EventStore,
    StreamAppender,
    validate_stream_id,
)
from core.eventstore.memory import InMemoryEventStore

__all__ = (
    "ANY",
    "NO_STREAM",
    "AppendResult",
    "EventStore",
    "InMemoryEventStore",
    "StreamAppender",
    "validate_stream_id",
)
