"""Documents a sink refuses for good (:class:`~core.errors.DocumentRejected`): under the park
policy the events that built such a document are parked and the rest of the batch is written;
under the halt policy the rejection stops the lane with its checkpoint before the batch."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any
from uuid import UUID

from core.deadletters import DeadLetter, DeadLetterStore
from core.errors import DocumentRejected
from core.eventstore.base import EventStore
from core.fold import DocState, Pending
from core.operations import Batch, DeleteDocument, PutDocument
from core.sink import Sink, Target
from core.strategy import ErrorPolicy

if TYPE_CHECKING:
    from core.lane import LaneStats

__all__ = ("ParksRejectedDocuments",)

log = logging.getLogger("projectionist.lane")


class ParksRejectedDocuments:
    """The part of :class:`~core.lane.Lane` that writes a batch and parks what the sink
    rejects; it uses the lane's attributes declared here."""

    name: str
    sink: Sink
    store: EventStore
    target: Target
    policy: ErrorPolicy
    dead_letters: DeadLetterStore
    stats: LaneStats
    _blocked: dict[str, tuple[UUID, int]]
    """stream id -> (event id, version) of its first parked event"""

    async def _retrying(
        self, what: str, fn: Callable[[], Awaitable[Any]], *, shielded: bool = False
    ) -> Any:
        raise NotImplementedError

    async def _write(self, batch: Batch) -> None:
        raise NotImplementedError

    async def _write_parking_rejected(self, batch: Batch, pending: Pending) -> Batch:
        """Write ``batch``; returns the batch that was written.

        When the sink refuses one document for good (:class:`DocumentRejected`) under the park
        policy, the events that built it since its stored version are parked (the first with
        the reason, the others behind it), its key is blocked like any parked key, and the
        batch is written again without it. Under the halt policy the rejection propagates:
        the checkpoint stays before the batch.
        """
        current = batch
        while True:
            try:
                await self._retrying(
                    "writing a batch", partial(self._write, current), shielded=True
                )
                return current
            except DocumentRejected as rejected:
                if self.policy is not ErrorPolicy.PARK:
                    raise
                current = await self._park_rejected(current, pending, rejected)

    async def _park_rejected(
        self, batch: Batch, pending: Pending, rejected: DocumentRejected
    ) -> Batch:
        key = rejected.key
        mine = [
            op
            for op in batch.operations
            if isinstance(op, PutDocument | DeleteDocument) and op.key == key
        ]
        if not mine or key in self._blocked:
            raise rejected  # nothing of this batch to park: never drop silently
        found = await self._retrying(
            "loading a rejected document", lambda: self.sink.load(self.target, [key]), shielded=True
        )
        stored = found.get(key)
        top = max(op.version for op in mine)
        events = await self._retrying(
            f"reading stream {key} to park a rejected document",
            partial(self.store.read_stream, key, (stored.version if stored else 0) + 1, top),
            shielded=True,
        )
        if not events:
            raise rejected
        first = events[0].event_id
        reason = f"the sink rejected the document built up to here: {rejected.reason}"
        letters = [DeadLetter.of(self.name, events[0], reason)]
        held = f"held behind parked event {first}"
        letters += [DeadLetter.of(self.name, e, held, first) for e in events[1:]]
        await self._retrying(
            "parking events", lambda: self.dead_letters.park(letters), shielded=True
        )
        self._blocked[key] = (first, events[0].stream_version)
        self.stats.parked += len(letters)
        self.stats.last_error = str(rejected)
        pending.docs[key] = (
            DocState(stored.version, stored.document) if stored else DocState(0, None)
        )
        log.warning("lane %s parked %d events of %s: %s", self.name, len(letters), key, rejected)
        kept = tuple(op for op in batch.operations if not any(op is m for m in mine))
        return replace(batch, operations=kept)
