"""A tiny domain for the core's unit tests: tallies that add numbers, reset and close."""

from __future__ import annotations

from typing import Any

from core.events import DomainEvent, EventRegistry
from core.projection import DELETE, Context, DocumentProjection, LookupKey, handles

registry = EventRegistry()


@registry.register
class Opened(DomainEvent):
    event_type = "Opened"
    owner: str


@registry.register
class Added(DomainEvent):
    event_type = "Added"
    schema_version = 2
    amount: int


@registry.upcaster("Added", 1)
def _added_v1(data: dict[str, Any]) -> dict[str, Any]:
    return {"amount": data["n"]}


@registry.register
class Closed(DomainEvent):
    event_type = "Closed"


@registry.register
class Poison(DomainEvent):
    event_type = "Poison"


class TallyProjection(DocumentProjection):
    name = "tally"
    registry = registry
    stream_prefix = "tally-"

    def lookups(self, event: DomainEvent) -> list[LookupKey]:
        return [("owner", event.owner)] if isinstance(event, Opened) else []

    @handles(Opened)
    def opened(self, doc: dict[str, Any] | None, event: Opened, ctx: Context) -> dict[str, Any]:
        owner = ctx.lookup("owner", event.owner)
        return {"owner": owner["name"], "total": 0, "count": 0, "ids": [str(ctx.envelope.event_id)]}

    @handles(Added)
    def added(self, doc: dict[str, Any] | None, event: Added, ctx: Context) -> dict[str, Any]:
        assert doc is not None
        return {
            **doc,
            "total": doc["total"] + event.amount,
            "count": doc["count"] + 1,
            "ids": [*doc["ids"], str(ctx.envelope.event_id)],
        }

    @handles(Closed)
    def closed(self, doc: dict[str, Any] | None, event: Closed, ctx: Context) -> object:
        return DELETE

    @handles(Poison)
    def poison(self, doc: dict[str, Any] | None, event: Poison, ctx: Context) -> dict[str, Any]:
        raise RuntimeError("poisoned on purpose")


OWNERS = {"owner": {f"o{i}": {"name": f"Owner {i}"} for i in range(10)}}


def oracle(events: list[Any]) -> dict[str, dict[str, Any]]:
    """Independent fold (by stream, in version order) of committed tally events."""
    docs: dict[str, dict[str, Any] | None] = {}
    for e in sorted(events, key=lambda e: (e.stream_id, e.stream_version)):
        if not e.stream_id.startswith("tally-"):
            continue
        doc = docs.get(e.stream_id)
        if e.event_type == "Opened":
            docs[e.stream_id] = {
                "owner": OWNERS["owner"][e.data["owner"]]["name"],
                "total": 0,
                "count": 0,
                "ids": [str(e.event_id)],
            }
        elif e.event_type == "Added" and doc is not None:
            amount = e.data["amount"] if e.schema_version == 2 else e.data["n"]
            docs[e.stream_id] = {
                **doc,
                "total": doc["total"] + amount,
                "count": doc["count"] + 1,
                "ids": [*doc["ids"], str(e.event_id)],
            }
        elif e.event_type == "Closed":
            docs[e.stream_id] = None
    return {k: v for k, v in docs.items() if v is not None}
