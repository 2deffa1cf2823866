"""Test doubles shipped with the core: an in-memory sink with the full contract, and a sink
that fails on a schedule, so recovery paths are tested deterministically. They stand in for
the core's own logic tests only; real sinks are tested against real services."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.errors import AmbiguousCommit, CheckpointConflict, StoreUnavailable
from core.operations import Batch, DeleteDocument, DeleteRow, PutDocument, UpsertRow
from core.position import Position
from core.sink import Sink, SinkCapabilities, StoredDocument, Target

__all__ = ("FlakySink", "InMemorySink", "MemoryTargetState")


@dataclass
class MemoryTargetState:
    documents: dict[str, StoredDocument] = field(default_factory=dict)
    rows: dict[str, dict[tuple[Any, ...], tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    checkpoint: Position | None = None
    writes: int = 0

    def live_documents(self) -> dict[str, dict[str, Any]]:
        return {k: v.document for k, v in self.documents.items() if v.document is not None}


class InMemorySink(Sink):
    """Documents and rows in dicts; checkpoint applied atomically with the data."""

    kind = "memory"
    capabilities = SinkCapabilities(transactional_checkpoint=True, supports_rows=True)

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name)
        self.targets: dict[tuple[str, int], MemoryTargetState] = {}

    def state(self, target: Target) -> MemoryTargetState:
        return self.targets.setdefault((target.lane, target.generation), MemoryTargetState())

    async def prepare(self, target: Target) -> None:
        self.state(target)

    async def read_checkpoint(self, target: Target) -> Position | None:
        return self.state(target).checkpoint

    async def load(self, target: Target, keys: Sequence[str]) -> dict[str, StoredDocument]:
        docs = self.state(target).documents
        return {k: copy.deepcopy(docs[k]) for k in keys if k in docs}

    def apply(self, target: Target, batch: Batch) -> None:
        """The data part of ``write``, without the checkpoint (for :class:`FlakySink`)."""
        state = self.state(target)
        for op in batch.operations:
            if isinstance(op, PutDocument | DeleteDocument):
                stored = state.documents.get(op.key)
                if stored is not None and stored.version >= op.version:
                    continue
                doc = copy.deepcopy(op.document) if isinstance(op, PutDocument) else None
                state.documents[op.key] = StoredDocument(op.version, doc)
            elif isinstance(op, UpsertRow):
                table = state.rows.setdefault(op.table, {})
                old = table.get(op.key)
                if old is None or old[0] < op.version:
                    table[op.key] = (op.version, copy.deepcopy(op.row))
            elif isinstance(op, DeleteRow):
                state.rows.setdefault(op.table, {}).pop(op.key, None)

    def check_checkpoint(self, target: Target, batch: Batch) -> None:
        found = self.state(target).checkpoint
        if found != batch.expected_checkpoint:
            raise CheckpointConflict(batch.lane, batch.expected_checkpoint, found)

    async def write(self, target: Target, batch: Batch) -> None:
        self.check_checkpoint(target, batch)
        self.apply(target, batch)
        state = self.state(target)
        state.checkpoint = batch.checkpoint
        state.writes += 1

    async def reset(self, target: Target) -> None:
        self.targets[(target.lane, target.generation)] = MemoryTargetState()


class FlakySink(InMemorySink):
    """An in-memory sink that fails the writes whose 1-based numbers are scheduled.

    ``fail_before``: raise :class:`StoreUnavailable` before anything is applied.
    ``fail_after_data``: apply the data, then raise before the checkpoint (a crash between
    write and checkpoint in a non-transactional store). ``ambiguous``: apply everything, then
    raise :class:`AmbiguousCommit` (the commit landed but its answer was lost).
    """

    capabilities = SinkCapabilities(transactional_checkpoint=False, supports_rows=True)

    def __init__(
        self,
        name: str | None = None,
        *,
        fail_before: Iterable[int] = (),
        fail_after_data: Iterable[int] = (),
        ambiguous: Iterable[int] = (),
    ) -> None:
        super().__init__(name)
        self.fail_before = set(fail_before)
        self.fail_after_data = set(fail_after_data)
        self.ambiguous = set(ambiguous)
        self.calls = 0

    async def write(self, target: Target, batch: Batch) -> None:
        self.calls += 1
        if self.calls in self.fail_before:
            raise StoreUnavailable(f"scheduled failure before write #{self.calls}")
        self.check_checkpoint(target, batch)
        if self.calls in self.fail_after_data:
            self.apply(target, batch)
            raise StoreUnavailable(f"scheduled failure after data of write #{self.calls}")
        await super().write(target, batch)
        if self.calls in self.ambiguous:
            raise AmbiguousCommit(f"scheduled ambiguous commit of write #{self.calls}")
