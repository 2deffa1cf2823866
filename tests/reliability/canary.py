"""The canary projection: per order stream, the ids of its events in the order a lane applied
them. Shipped to every sink, it catches loss, duplication and reordering in one comparison with
:func:`canary_divergence`, whose oracle is the committed log itself (no fold involved)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from core.events import DomainEvent, EventEnvelope
from core.projection import Context, DocumentProjection, handles
from core.schema import DocumentSchema, Field, FieldType
from projections.orders.events import (
    OrderCancelled,
    OrderCompleted,
    OrderCreated,
    OrderItemAdded,
    OrderItemRemoved,
    registry,
)

__all__ = ("CANARY_SCHEMA", "Canary", "canary_divergence", "canary_expected", "events_missing")

CANARY_SCHEMA = DocumentSchema(
    fields=(
        Field(name="id", type=FieldType.KEYWORD, nullable=False),
        Field(name="events", type=FieldType.JSON, nullable=False),
    ),
)
"""``id`` is a text column / keyword everywhere; ``events`` (a list of id strings) is JSON:
``jsonb`` in Postgres, ``JSON`` in DuckDB, a stored but unindexed object in Elasticsearch."""


class Canary(DocumentProjection):
    """``{"id": stream_id, "events": [event_id, ...]}``: each applied event appends its id."""

    name = "canary"
    registry = registry
    stream_prefix = "order-"
    schema = CANARY_SCHEMA

    @handles(OrderCreated, OrderItemAdded, OrderItemRemoved, OrderCompleted, OrderCancelled)
    def applied(
        self, doc: dict[str, Any] | None, event: DomainEvent, ctx: Context
    ) -> dict[str, Any]:
        seen: list[str] = list(doc["events"]) if doc is not None else []
        return {"id": ctx.envelope.stream_id, "events": [*seen, str(ctx.envelope.event_id)]}


def canary_expected(events: Iterable[EventEnvelope]) -> dict[str, list[str]]:
    """The oracle: per ``order-`` stream, its committed event ids in stream-version order."""
    ordered = sorted(
        (e for e in events if e.stream_id.startswith("order-")),
        key=lambda e: (e.stream_id, e.stream_version),
    )
    out: dict[str, list[str]] = {}
    for e in ordered:
        out.setdefault(e.stream_id, []).append(str(e.event_id))
    return out


def canary_divergence(
    events: Iterable[EventEnvelope], stored_docs: Mapping[str, Mapping[str, Any] | None]
) -> int:
    """Streams whose stored canary differs from the oracle (a missing, doubled or misplaced
    event id, a missing document, any other change) plus stored documents of streams the log
    does not have."""
    expected = canary_expected(events)
    differ = sum(
        1
        for stream, ids in expected.items()
        if stored_docs.get(stream) != {"id": stream, "events": ids}
    )
    return differ + len(set(stored_docs) - set(expected))


def events_missing(
    events: Iterable[EventEnvelope], stored_docs: Mapping[str, Mapping[str, Any] | None]
) -> set[str]:
    """Ids of committed order events that the stored canaries do not hold (lost events)."""
    held = {i for doc in stored_docs.values() if doc for i in doc.get("events", ())}
    return {i for ids in canary_expected(events).values() for i in ids} - held
