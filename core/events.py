"""Events: what is appended (:class:`NewEvent`), what is read (:class:`EventEnvelope`), and the
typed domain events a registry decodes envelopes into, with upcasters for old schema versions.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ConfigurationError, InvalidEvent
from core.position import Position

__all__ = (
    "DomainEvent",
    "EventEnvelope",
    "EventLimits",
    "EventRegistry",
    "NewEvent",
    "RawEvent",
    "UndecodableData",
    "check_payload",
    "encode_event",
)

JSON = dict[str, Any]


class EventLimits(BaseModel):
    """Bounds on what an append accepts; anything larger is refused with :class:`InvalidEvent`."""

    model_config = ConfigDict(frozen=True)

    max_payload_bytes: int = Field(default=1_048_576, gt=0)
    max_depth: int = Field(default=64, gt=0)
    max_stream_id_length: int = Field(default=200, gt=0)


def _json_problem(value: Any, limit: int) -> str | None:
    """Why ``value`` cannot be stored as it is, or ``None``: nesting deeper than ``limit``, a
    NUL character (JSONB cannot hold one) or a non-string object key (JSON would silently turn
    it into a string). Iterative, so any depth is safe."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "holds a NUL character, which JSONB cannot store"
        elif isinstance(item, dict):
            if depth > limit:
                return f"nests deeper than max_depth={limit}; flatten it"
            for key, inner in item.items():
                if not isinstance(key, str):
                    return f"has a non-string key {type(key).__name__}, which is not JSON"
                if "\x00" in key:
                    return "holds a NUL character, which JSONB cannot store"
                stack.append((inner, depth + 1))
        elif isinstance(item, list | tuple):
            if depth > limit:
                return f"nests deeper than max_depth={limit}; flatten it"
            stack.extend((inner, depth + 1) for inner in item)
    return None


def _encode(where: str, name: str, part: JSON, limits: EventLimits) -> str:
    problem = _json_problem(part, limits.max_depth)
    if problem is not None:
        raise InvalidEvent(f"{where}: {name} {problem}")
    try:
        text = json.dumps(part, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except RecursionError:
        raise InvalidEvent(
            f"{where}: {name} nests deeper than this process can encode; lower max_depth"
        ) from None
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"{where}: {name} is not JSON ({exc})") from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidEvent(f"{where}: {name} is not valid UTF-8 text ({exc.reason})") from None
    if size > limits.max_payload_bytes:
        raise InvalidEvent(
            f"{where}: {name} is {size} bytes, over max_payload_bytes="
            f"{limits.max_payload_bytes}; store large blobs elsewhere and append a reference"
        )
    return text


def encode_event(stream_id: str, event: NewEvent, limits: EventLimits) -> tuple[str, str]:
    """Validate one event against ``limits``; return its data and metadata as JSON text.

    Data and metadata must each be JSON (string keys; no NaN or infinity; no NUL character;
    valid UTF-8), nest no deeper than ``max_depth`` and encode to at most
    ``max_payload_bytes``; the event type holds no control character. Raises
    :class:`InvalidEvent` naming the stream, the event type and the rule broken.
    """
    where = f"stream {stream_id!r}, event {event.event_type!r}"
    if any(ord(ch) < 32 for ch in event.event_type):
        raise InvalidEvent(f"{where}: the event type holds a control character")
    return (
        _encode(where, "data", event.data, limits),
        _encode(where, "metadata", event.metadata, limits),
    )


def check_payload(stream_id: str, event: NewEvent, limits: EventLimits) -> str:
    """Validate one event as :func:`encode_event` does and return its data as JSON text."""
    return encode_event(stream_id, event, limits)[0]


class NewEvent(BaseModel):
    """An event to append. Its ``event_id`` makes the append idempotent."""

    model_config = ConfigDict(frozen=True)

    event_type: str = Field(min_length=1, max_length=200)
    data: JSON = Field(default_factory=dict)
    metadata: JSON = Field(default_factory=dict)
    schema_version: int = Field(default=1, ge=1)
    event_id: UUID = Field(default_factory=uuid4)


class EventEnvelope(BaseModel):
    """One stored event as read from the log, with its position.

    Stores build envelopes from trusted rows with ``model_construct`` (no validation on the hot
    path); everything else goes through normal validation.
    """

    model_config = ConfigDict(frozen=True)

    event_id: UUID
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    data: JSON
    metadata: JSON
    recorded_at: datetime
    position: Position

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> EventEnvelope:
        """An envelope from a store's own row, without validation: what ``model_construct``
        does for a complete set of fields, minus its per-field default handling (the hot path
        of every read). ``values`` must hold every field, already of its type."""
        envelope = cls.__new__(cls)
        object.__setattr__(envelope, "__dict__", values)
        object.__setattr__(envelope, "__pydantic_fields_set__", _ENVELOPE_FIELDS)
        object.__setattr__(envelope, "__pydantic_extra__", None)
        object.__setattr__(envelope, "__pydantic_private__", None)
        return envelope


_ENVELOPE_FIELDS = frozenset(EventEnvelope.model_fields)


class DomainEvent(BaseModel):
    """Base for typed domain events. Subclasses set ``event_type`` and ``schema_version``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    def to_new_event(self, **kwargs: Any) -> NewEvent:
        """The event ready to append (``kwargs`` pass ``event_id`` or ``metadata``)."""
        return NewEvent(
            event_type=self.event_type,
            schema_version=self.schema_version,
            data=self.model_dump(mode="json"),
            **kwargs,
        )


class UndecodableData(dict[str, Any]):
    """Stands in, empty, for stored data or metadata this process cannot decode (JSON nested
    deeper than Python's decoder follows; Postgres accepts about 14,000 levels). Decoding the
    event raises :class:`InvalidEvent` with :attr:`reason`, so the event is parked or halts its
    lane like any invalid event, and never crashes a reader."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason


def _validation_summary(exc: ValidationError, shown: int = 3) -> str:
    """At most ``shown`` of a validation error's problems, each bounded: an event with
    thousands of bad fields gives a short message, not one line per field."""
    problems = exc.errors(include_url=False, include_input=False)
    parts = []
    for problem in problems[:shown]:
        where = ".".join(str(p) for p in problem["loc"]) or "(data)"
        parts.append(f"{where[:80]}: {problem['msg'][:200]}")
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{len(problems)} problem(s): " + "; ".join(parts) + more


class RawEvent(BaseModel):
    """An envelope whose type the registry does not know: kept as it is, never a crash."""

    model_config = ConfigDict(frozen=True)

    event_type: str
    data: JSON


Upcaster = Callable[[JSON], JSON]


class EventRegistry:
    """Typed domain events by name, with upcasters from old schema versions to the current one.

    ``decode`` never raises for an unknown type: it returns a :class:`RawEvent`. It raises
    :class:`InvalidEvent` when a known type's data does not validate after upcasting.

    Lanes of one runner read the same envelope objects (:mod:`core.source`), so once a runner
    marks the registry ``shared``, ``decode`` remembers its last ``memo_size`` results by
    envelope identity: every lane of the registry after the first gets the same frozen event
    without validating it again.
    """

    memo_size = 10_000
    shared = False
    """Remember decoded events (set by a runner with two or more lanes of this registry)."""

    def __init__(self) -> None:
        self._types: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self._decoded: OrderedDict[int, tuple[EventEnvelope, DomainEvent | RawEvent]] = (
            OrderedDict()
        )

    def register(self, event_class: type[DomainEvent]) -> type[DomainEvent]:
        """Register a domain event class (usable as a class decorator)."""
        name = event_class.event_type
        if name in self._types and self._types[name] is not event_class:
            raise ConfigurationError(
                "event_type", name, "already registered to another class; names must be unique"
            )
        self._types[name] = event_class
        return event_class

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Register ``fn(data) -> data`` turning ``from_version`` data into the next version."""

        def decorate(fn: Upcaster) -> Upcaster:
            key = (event_type, from_version)
            if key in self._upcasters:
                raise ConfigurationError(
                    "upcaster", key, "one upcaster per (event_type, from_version)"
                )
            self._upcasters[key] = fn
            return fn

        return decorate

    def known(self, event_type: str) -> type[DomainEvent] | None:
        return self._types.get(event_type)

    def upcast(self, event_type: str, schema_version: int, data: Mapping[str, Any]) -> JSON:
        """Bring ``data`` from ``schema_version`` to the registered class's current version."""
        cls = self._types.get(event_type)
        current = cls.schema_version if cls else schema_version
        out = dict(data)
        version = schema_version
        while version < current:
            step = self._upcasters.get((event_type, version))
            if step is None:
                raise InvalidEvent(
                    f"event type {event_type!r} has data at schema version {version} and no "
                    f"upcaster from it to {version + 1}; register one with @registry.upcaster"
                )
            out = step(out)
            version += 1
        if version > current:
            raise InvalidEvent(
                f"event type {event_type!r} has schema version {version}, newer than this "
                f"code's {current}: deploy the newer code before running projections on it"
            )
        return out

    def decode(self, envelope: EventEnvelope) -> DomainEvent | RawEvent:
        """The typed event for ``envelope``, or a :class:`RawEvent` for an unknown type."""
        if not self.shared:
            return self._decode(envelope)
        memo = self._decoded
        found = memo.get(id(envelope))
        if found is not None and found[0] is envelope:
            return found[1]
        event = self._decode(envelope)
        if len(memo) >= self.memo_size:
            memo.popitem(last=False)  # the oldest
        memo[id(envelope)] = (envelope, event)  # held, so its id is not reused meanwhile
        return event

    def _decode(self, envelope: EventEnvelope) -> DomainEvent | RawEvent:
        cls = self._types.get(envelope.event_type)
        if cls is None:
            return RawEvent(event_type=envelope.event_type, data=envelope.data)
        what = (
            f"event {envelope.event_id} ({envelope.event_type[:200]} "
            f"v{envelope.schema_version}) of stream {envelope.stream_id[:200]!r}"
        )
        for part in (envelope.data, envelope.metadata):
            if isinstance(part, UndecodableData):
                raise InvalidEvent(f"{what}: its stored JSON {part.reason}; it cannot be projected")
        data = self.upcast(envelope.event_type, envelope.schema_version, envelope.data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise InvalidEvent(
                f"{what} does not match its class: {_validation_summary(exc)}"
            ) from None
        except ValueError as exc:
            raise InvalidEvent(f"{what} does not match its class: {str(exc)[:500]}") from None
