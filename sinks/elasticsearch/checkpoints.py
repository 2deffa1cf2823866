"""Lane checkpoints as documents of the checkpoint index, one per (lane, generation), moved by
compare-and-set on ``if_seq_no`` / ``if_primary_term``.

Elasticsearch has no transaction spanning the data and the checkpoint, so the sink writes the
checkpoint only after every item of the batch is resolved; the data writes are idempotent
(external versions), so a crash in between replays the batch harmlessly. Reads are realtime
``GET``s: they see the last write without waiting for a refresh.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ConflictError

from core.errors import AmbiguousCommit, CheckpointConflict, TransientError
from core.position import Position
from core.sink import Target
from sinks.elasticsearch.client import MISSING, Cluster
from sinks.elasticsearch.errors import DRIVER_ERRORS, translate

__all__ = ("CheckpointStore", "StoredCheckpoint")


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    """A checkpoint as read or written, with what the next compare-and-set needs."""

    position: Position | None
    seq_no: int | None = None
    primary_term: int | None = None


ABSENT = StoredCheckpoint(None)


def doc_id(target: Target) -> str:
    return f"{target.lane}@g{target.generation}"


class CheckpointStore:
    """Reads and moves checkpoints; remembers the last one seen per (lane, generation)."""

    def __init__(self, cluster: Cluster, index: str) -> None:
        self.cluster = cluster
        self.index = index
        self._known: dict[str, StoredCheckpoint] = {}
        self._in_doubt: dict[str, Position] = {}
        """Per checkpoint document: the position a move was sent for whose answer was lost."""

    def forget(self, target: Target) -> None:
        self._known.pop(doc_id(target), None)

    async def read(self, target: Target) -> StoredCheckpoint:
        key = doc_id(target)
        found = await self.cluster.body(
            f"reading the checkpoint of {target.lane}",
            lambda c: c.get(index=self.index, id=key, realtime=True),
            missing_ok=True,
        )
        if found is MISSING or not found.get("found"):
            stored = ABSENT
        else:
            stored = StoredCheckpoint(
                Position.parse(found["_source"]["position"]),
                int(found["_seq_no"]),
                int(found["_primary_term"]),
            )
        self._known[key] = stored
        return stored

    async def current(self, target: Target) -> StoredCheckpoint:
        """The last checkpoint this sink saw for the target, read once if never seen."""
        known = self._known.get(doc_id(target))
        return known if known is not None else await self.read(target)

    async def check(
        self, target: Target, lane: str, expected: Position | None, new: Position
    ) -> bool:
        """Before any data is sent: True if the checkpoint must still move to ``new``, False
        if it is already there because this sink's own earlier move to ``new`` landed and its
        answer was lost (the data writes are repeated harmlessly). Raises
        :class:`CheckpointConflict` when the stored checkpoint is not ``expected``, including
        when it is ``new`` but another writer put it there: a second runner flushing the very
        same batch is told, not taken for a resend."""
        key = doc_id(target)
        stored = await self.current(target)
        if stored.position not in (expected, new):
            stored = await self.read(target)
        if stored.position == expected:
            return True
        if stored.position == new and self._in_doubt.get(key) == new:
            del self._in_doubt[key]
            return False
        raise CheckpointConflict(lane, expected, stored.position)

    async def move(self, target: Target, lane: str, new: Position) -> None:
        """Compare-and-set from the checkpoint last seen to ``new``.

        Raises :class:`CheckpointConflict` if another writer moved it in between, and
        :class:`~core.errors.AmbiguousCommit` if the answer was lost (the lane re-reads).
        """
        key = doc_id(target)
        stored = await self.current(target)
        document: dict[str, Any] = {
            "lane": target.lane,
            "projection": target.projection,
            "generation": target.generation,
            "position": str(new),
            "transaction_id": new.transaction_id,
            "global_position": new.global_position,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        what = f"moving the checkpoint of {lane} to {new}"
        try:
            if stored.seq_no is None:
                answer = await self.cluster.client.create(
                    index=self.index, id=key, document=document, refresh=False
                )
            else:
                answer = await self.cluster.client.index(
                    index=self.index,
                    id=key,
                    document=document,
                    if_seq_no=stored.seq_no,
                    if_primary_term=stored.primary_term,
                    refresh=False,
                )
        except ConflictError:
            self.forget(target)
            found = await self.read(target)
            raise CheckpointConflict(lane, stored.position, found.position) from None
        except DRIVER_ERRORS as exc:
            self.forget(target)
            error = translate(exc, what, self.cluster.settings.secrets(), in_commit=True)
            if isinstance(error, TransientError):
                # Whatever failed, the write may have landed: the lane must re-read.
                self._in_doubt[key] = new
                raise AmbiguousCommit(str(error)) from None
            raise error from None
        self._in_doubt.pop(key, None)
        self._known[key] = StoredCheckpoint(
            new, int(answer["_seq_no"]), int(answer["_primary_term"])
        )

    async def delete(self, target: Target) -> None:
        self.forget(target)
        await self.cluster.call(
            f"deleting the checkpoint of {target.lane}",
            lambda c: c.delete(index=self.index, id=doc_id(target), refresh=False),
            missing_ok=True,
        )
