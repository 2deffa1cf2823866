"""The pure part of a lane: folding events into pending documents or rows.

A :class:`Pending` holds what a lane has folded since its last flush: the documents it touched
(with their stream versions), row operations, parked events, and the position it reached.
:func:`plan_gaps` finds, before anything is applied, which stream versions are missing
(per-stream inversions in fence order); the lane reads those from the store, then
:func:`apply_event` applies events one by one with the per-stream guard.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from core.deadletters import DeadLetter
from core.errors import HandlerFailed, InvalidEvent, PermanentError
from core.events import EventEnvelope, RawEvent
from core.operations import DeleteDocument, Operation, PutDocument
from core.position import Position
from core.projection import (
    DELETE,
    IGNORED,
    Context,
    DocumentProjection,
    LookupKey,
    Projection,
    RowProjection,
)

__all__ = (
    "SHARED_FOLDS",
    "DocState",
    "EventFailed",
    "Pending",
    "SharedFolds",
    "apply_event",
    "plan_gaps",
)


@dataclass(slots=True)
class DocState:
    """A document as the lane knows it: stored or folded since."""

    version: int
    document: dict[str, Any] | None
    dirty: bool = False


@dataclass
class Pending:
    """What a lane has folded since its last flush."""

    position: Position
    events: int = 0
    docs: dict[str, DocState] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    """Keys written since the last flush (a key's ``DocState.dirty`` has the final word)."""
    rows: dict[tuple[str, tuple[Any, ...]], Operation] = field(default_factory=dict)
    parked: list[DeadLetter] = field(default_factory=list)
    parked_ids: set[UUID] = field(default_factory=set)
    """The event ids of ``parked``."""
    resolved: list[UUID] = field(default_factory=list)
    started: float | None = None
    duplicates: int = 0
    ignored: int = 0
    gaps_repaired: int = 0

    def operations(self) -> tuple[Operation, ...]:
        ops: list[Operation] = []
        for key in self.dirty:
            state = self.docs[key]
            if not state.dirty:
                continue
            if state.document is None:
                ops.append(DeleteDocument(key, state.version))
            else:
                ops.append(PutDocument(key, state.version, state.document))
        ops.extend(self.rows.values())
        return tuple(ops)

    def flushed(self, keep_documents: int) -> Pending:
        """The pending state right after a successful flush: a clean cache of what is stored.

        The cache keeps every document while they number at most ``keep_documents``; past
        that, only documents this flush wrote (a stream being written now is the one most
        likely to get the next event), the newest streams first (a document's place in the
        cache is when the lane first met it), up to ``keep_documents``. Memory stays bounded
        by the batch being folded plus the bound, whatever the history's length.
        """
        for key in self.dirty:
            self.docs[key].dirty = False
        docs = self.docs
        if len(docs) > keep_documents:
            recent: dict[str, DocState] = {}
            if keep_documents > 0:
                for key in reversed(docs):
                    if key in self.dirty:
                        recent[key] = docs[key]
                        if len(recent) >= keep_documents:
                            break
            docs = recent
        return Pending(position=self.position, docs=docs)


class EventFailed(Exception):
    """One event could not be applied for good; carries the envelope and the cause."""

    def __init__(self, envelope: EventEnvelope, cause: PermanentError) -> None:
        super().__init__(str(cause))
        self.envelope = envelope
        self.cause = cause


def plan_gaps(
    projection: DocumentProjection, events: Iterable[EventEnvelope], pending: Pending
) -> list[tuple[str, int, int]]:
    """``(stream_id, from_version, to_version)`` ranges missing before events of this chunk.

    ``events`` are the chunk's envelopes that the projection accepts (the lane filters them
    once). Needs every key of the chunk present in ``pending.docs`` (loaded or new with
    version 0).
    """
    versions: dict[str, int] = {}
    gaps: list[tuple[str, int, int]] = []
    for envelope in events:
        key = projection.key(envelope)
        current = versions.get(key, pending.docs[key].version)
        if envelope.stream_version > current + 1:
            gaps.append((envelope.stream_id, current + 1, envelope.stream_version - 1))
        versions[key] = max(current, envelope.stream_version)
    return gaps


def lookups_needed(projection: Projection, decoded: Iterable[Any]) -> set[LookupKey]:
    """What the decoded events need looked up (events that failed to decode need nothing)."""
    needed: set[LookupKey] = set()
    for event in decoded:
        if not isinstance(event, RawEvent | EventFailed):
            needed.update(projection.lookups(event))
    return needed


@dataclass(slots=True)
class _Folded:
    envelope: EventEnvelope
    handler: Any
    before: dict[str, Any] | None
    used: dict[LookupKey, Any]
    result: Any


class SharedFolds:
    """The newest handler results of shared-fold projections (``fold_family``), so that the
    lanes of a runner fold each event once for all of them.

    A lane takes a result another lane computed only when it is certain to be the one its own
    handler would return: the same envelope object (lanes share them through
    :class:`core.source.SharedLog`), the same handler function, the very same document
    object before the event (documents are never mutated, and a lane that took the previous
    result holds that object), and the same values for every entity the handler looked up.
    Anything else is a miss and the lane folds for itself. Bounded: the newest ``size``
    results per family, by insertion order.
    """

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self.families: set[str] = set()
        """The families shared (a runner adds those with at least two lanes: for one lane
        the bookkeeping would cost without ever paying back)."""
        self._folded: OrderedDict[tuple[str, int], _Folded] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(
        self,
        family: str,
        handler: Any,
        envelope: EventEnvelope,
        before: dict[str, Any] | None,
        lookups: dict[LookupKey, Any],
    ) -> _Folded | None:
        found = self._folded.get((family, id(envelope)))
        if (
            found is None
            or found.envelope is not envelope
            or found.handler is not handler
            or found.before is not before
        ):
            self.misses += 1
            return None
        for key, value in found.used.items():
            held = lookups.get(key)
            if held is not value and held != value:  # lanes sharing a lookup cache hold one object
                self.misses += 1
                return None
        self.hits += 1
        return found

    def put(self, family: str, folded: _Folded) -> None:
        memo = self._folded
        if len(memo) >= self.size:
            memo.popitem(last=False)
        memo[(family, id(folded.envelope))] = folded  # held, so the id is not reused meanwhile


SHARED_FOLDS = SharedFolds()
"""The process's shared folds (every runner's lanes use it)."""


def _fold_document(
    projection: DocumentProjection,
    envelope: EventEnvelope,
    before: dict[str, Any] | None,
    decoded: Any,
    lookups: dict[LookupKey, Any],
) -> Any:
    """The handler's result for ``before`` and the event, shared with the other lanes of the
    projection's fold family when it has one (a lane that takes a shared result builds no
    :class:`Context`)."""
    handler = projection.handler_for(envelope.event_type)
    family = projection.fold_family
    if handler is None or family is None or family not in SHARED_FOLDS.families:
        ctx = Context(envelope, lookups)
        return _call_handler(projection, envelope, handler, (before, decoded, ctx))
    function = getattr(handler, "__func__", handler)
    found = SHARED_FOLDS.get(family, function, envelope, before, lookups)
    if found is not None:
        return found.result
    used: dict[LookupKey, Any] = {}
    ctx = Context(envelope, lookups, used)
    result = _call_handler(projection, envelope, handler, (before, decoded, ctx))
    SHARED_FOLDS.put(family, _Folded(envelope, function, before, used, result))
    return result


def _call_handler(
    projection: Projection,
    envelope: EventEnvelope,
    handler: Callable[..., Any] | None,
    args: tuple[Any, ...],
    rows: bool = False,
) -> Any:
    if handler is None:
        return IGNORED
    try:
        result = handler(*args)
        return list(result) if rows and result is not IGNORED else result
    except PermanentError as exc:
        raise EventFailed(envelope, exc) from exc
    except Exception as exc:  # a handler bug is the event's failure, not the runner's
        failure = HandlerFailed(
            f"{type(projection).__name__} failed on event {envelope.event_id} "
            f"({envelope.event_type}, stream {envelope.stream_id!r} v{envelope.stream_version}, "
            f"position {envelope.position}): {type(exc).__name__}: {exc}"
        )
        raise EventFailed(envelope, failure) from exc


def decode_or_fail(projection: Projection, envelope: EventEnvelope) -> Any:
    """The typed event; a failure of decoding (an upcaster's bug included) is the event's
    :class:`EventFailed`, which the lane's error policy handles, never the runner's crash."""
    try:
        return projection.decode(envelope)
    except InvalidEvent as exc:
        raise EventFailed(envelope, exc) from exc
    except Exception as exc:
        failure = InvalidEvent(
            f"decoding event {envelope.event_id} ({envelope.event_type} "
            f"v{envelope.schema_version}, stream {envelope.stream_id!r} "
            f"v{envelope.stream_version}, position {envelope.position}) failed in "
            f"{type(projection).__name__}'s registry (an upcaster?): "
            f"{type(exc).__name__}: {exc}"
        )
        raise EventFailed(envelope, failure) from exc


def apply_event(
    projection: Projection,
    envelope: EventEnvelope,
    decoded: Any,
    lookups: dict[LookupKey, Any],
    pending: Pending,
    skip: bool = False,
) -> str:
    """Apply one event to ``pending``; returns the outcome name.

    Outcomes: ``applied``, ``ignored``, ``duplicate``. ``skip`` applies the event as ignored
    (an operator skipped it: the document's version moves past it, nothing else changes).
    Raises :class:`EventFailed` for a permanent failure, leaving ``pending`` as it was.
    """
    if isinstance(projection, DocumentProjection):
        key = projection.key(envelope)
        state = pending.docs[key]
        if envelope.stream_version <= state.version:
            pending.duplicates += 1
            return "duplicate"
        if skip:
            result: Any = IGNORED
        elif isinstance(decoded, EventFailed):
            raise decoded
        else:
            result = _fold_document(projection, envelope, state.document, decoded, lookups)
        if result is IGNORED:
            pending.ignored += 1
            if state.document is not None:
                pending.docs[key] = DocState(envelope.stream_version, state.document, True)
                pending.dirty.add(key)
            else:
                pending.docs[key] = DocState(envelope.stream_version, None, state.dirty)
            return "ignored"
        if result is DELETE:
            pending.docs[key] = DocState(envelope.stream_version, None, True)
            pending.dirty.add(key)
            return "applied"
        if not isinstance(result, dict):
            raise EventFailed(
                envelope,
                HandlerFailed(
                    f"{type(projection).__name__} handler for {envelope.event_type} returned "
                    f"{type(result).__name__}; return a dict, DELETE or IGNORED"
                ),
            )
        pending.docs[key] = DocState(envelope.stream_version, result, True)
        pending.dirty.add(key)
        return "applied"
    assert isinstance(projection, RowProjection)
    if skip:
        pending.ignored += 1
        return "ignored"
    if isinstance(decoded, EventFailed):
        raise decoded
    handler = projection.handler_for(envelope.event_type)
    ctx = Context(envelope, lookups)
    result = _call_handler(projection, envelope, handler, (decoded, ctx), rows=True)
    if result is IGNORED:
        pending.ignored += 1
        return "ignored"
    for op in result:
        pending.rows[(op.table, op.key)] = op
    return "applied"
