"""The projection API: pure functions from events to store-neutral operations.

Two kinds:

* :class:`DocumentProjection` folds each stream into one document (key = stream id). Handlers
  get the current document (``None`` before the first) and return the new one, or
  :data:`DELETE`, or :data:`IGNORED`. Handlers must not mutate their input document, and
  nothing mutates a document a handler returned: lanes share them (``fold_family``).
* :class:`RowProjection` turns each event into rows to upsert or delete.

Handlers are registered with :func:`handles`; an event type without a handler is an explicit
"ignored" outcome. Two handlers for one event type in one class fail at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar, TypeVar

from core.errors import ConfigurationError, LookupMissing
from core.events import DomainEvent, EventEnvelope, EventRegistry, RawEvent
from core.naming import validate_name
from core.operations import DeleteRow, UpsertRow
from core.schema import DocumentSchema

__all__ = (
    "DELETE",
    "IGNORED",
    "Context",
    "DocumentProjection",
    "LookupKey",
    "Outcome",
    "Projection",
    "RowProjection",
    "handles",
)

LookupKey = tuple[str, str]
"""``(source, id)``: one entity an enrichment lookup must fetch, e.g. ``("customer", "c-1")``."""


class Outcome(Enum):
    """Explicit non-document results of a handler."""

    DELETE = "delete"
    IGNORED = "ignored"


DELETE = Outcome.DELETE
IGNORED = Outcome.IGNORED

F = TypeVar("F", bound=Callable[..., Any])


def handles(*event_types: type[DomainEvent] | str) -> Callable[[F], F]:
    """Mark a method as the handler of the given event types (classes or type names)."""
    names = tuple(t if isinstance(t, str) else t.event_type for t in event_types)
    if not names:
        raise ConfigurationError("handles", (), "name at least one event type")

    def mark(fn: F) -> F:
        fn.__dict__["_handles"] = names
        return fn

    return mark


@dataclass(slots=True)
class Context:
    """What a handler may know beyond its event: the envelope and this batch's lookups."""

    envelope: EventEnvelope
    lookups: dict[LookupKey, Any]
    used: dict[LookupKey, Any] | None = None
    """When set, every entity the handler looked up, with its value (a shared fold's result
    is reused only by a lane whose lookups hold the same values)."""

    def lookup(self, source: str, entity_id: str) -> Any:
        """The looked-up entity; :class:`LookupMissing` (parked) when there is none."""
        try:
            value = self.lookups[(source, entity_id)]
        except KeyError:
            value = None
        if self.used is not None:
            self.used[(source, entity_id)] = value
        if value is None:
            raise LookupMissing(
                f"{source} {entity_id!r} not found (event {self.envelope.event_id} of stream "
                f"{self.envelope.stream_id!r}); add it to the {source} lookup, then retry the "
                "parked event"
            )
        return value


class Projection:
    """What both kinds share: a validated name, the event registry, handler lookup."""

    name: ClassVar[str]
    registry: ClassVar[EventRegistry]
    stream_prefix: ClassVar[str | None] = None
    """Only streams whose id starts with this are seen (``None``: all streams)."""
    _handlers: ClassVar[dict[str, str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[str, str] = {}
        for base in reversed(cls.__mro__[1:]):
            handlers.update(getattr(base, "_handlers", {}))
        own: dict[str, str] = {}
        for attr, value in vars(cls).items():
            for event_type in getattr(value, "_handles", ()):
                if event_type in own:
                    raise ConfigurationError(
                        f"{cls.__name__}.{attr}",
                        event_type,
                        f"already handled by {cls.__name__}.{own[event_type]}; one handler per "
                        "event type",
                    )
                own[event_type] = attr
        handlers.update(own)
        cls._handlers = handlers
        if "name" in vars(cls):
            validate_name(f"{cls.__name__}.name", cls.name)

    def accepts(self, envelope: EventEnvelope) -> bool:
        """Whether this projection looks at the envelope's stream at all."""
        prefix = self.stream_prefix
        return prefix is None or envelope.stream_id.startswith(prefix)

    def handler_for(self, event_type: str) -> Callable[..., Any] | None:
        attr = self._handlers.get(event_type)
        return getattr(self, attr) if attr else None

    def decode(self, envelope: EventEnvelope) -> DomainEvent | RawEvent:
        return self.registry.decode(envelope)

    def lookups(self, event: DomainEvent) -> Iterable[LookupKey]:
        """Entities the handler of ``event`` will look up (batched by the runner)."""
        return ()


class DocumentProjection(Projection):
    """Folds each stream into one document; the document's version is the stream version."""

    schema: ClassVar[DocumentSchema | None] = None
    fold_family: ClassVar[str | None] = None
    """Projections naming the same family promise that their handlers depend on nothing but
    their arguments (no per-instance settings): the lanes of a runner then fold each event
    once for all of them, whenever the handler function, the document before and the
    looked-up values are the same (:class:`core.fold.SharedFolds`). ``None``: not shared."""

    def key(self, envelope: EventEnvelope) -> str:
        """The document key for the envelope's stream (default: the stream id)."""
        return envelope.stream_id


class RowProjection(Projection):
    """Each handler returns an iterable of :class:`UpsertRow` / :class:`DeleteRow`."""

    tables: ClassVar[dict[str, DocumentSchema]] = {}

    def rows(self, event: DomainEvent, ctx: Context) -> Iterable[UpsertRow | DeleteRow]:
        handler = self.handler_for(event.event_type)
        if handler is None:
            return ()
        result: Iterable[UpsertRow | DeleteRow] = handler(event, ctx)
        return result
