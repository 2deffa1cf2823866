"""Store-neutral write intent: what projections produce and sinks apply."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.position import Position

__all__ = ("Batch", "DeleteDocument", "DeleteRow", "Operation", "PutDocument", "UpsertRow")


@dataclass(frozen=True, slots=True)
class PutDocument:
    """Store the whole document for ``key`` unless the stored one has ``version >= version``."""

    key: str
    version: int
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteDocument:
    """Remove ``key``. Sinks that cannot guard a delete keep a tombstone with its version."""

    key: str
    version: int


@dataclass(frozen=True, slots=True)
class UpsertRow:
    """Insert or update one row of ``table`` by ``key`` unless its stored version is newer."""

    table: str
    key: tuple[Any, ...]
    version: int
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeleteRow:
    """Delete one row of ``table`` by ``key``."""

    table: str
    key: tuple[Any, ...]
    version: int


Operation = PutDocument | DeleteDocument | UpsertRow | DeleteRow


@dataclass(frozen=True, slots=True)
class Batch:
    """Operations and the checkpoint they bring the lane to, written together.

    ``expected_checkpoint`` is the checkpoint the writer believes is stored (``None``: none yet).
    A sink refuses the batch with :class:`core.errors.CheckpointConflict` if it finds another.
    """

    lane: str
    operations: tuple[Operation, ...]
    expected_checkpoint: Position | None
    checkpoint: Position
    events: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    catching_up: bool = False
    """More of the log was waiting when the lane cut this batch (a rebuild or a lane behind
    the head). A sink may then defer work that only readers need, such as publishing a
    snapshot; the data and the checkpoint are written all the same. The deferred work is due
    at the next batch without it, or at :meth:`core.sink.Sink.finish_deferred`, which the
    lane calls when a ``catching_up`` batch turned out to be its last for now (at the head, or
    halted)."""
