"""Dead letters: events a lane parked under its ``park`` policy, kept with what is needed to
retry or skip them. Later events of a parked document key are parked behind it
(``blocked_by``), so a document is never built over a hole."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from core.events import EventEnvelope
from core.position import Position

__all__ = ("DeadLetter", "DeadLetterStore", "InMemoryDeadLetters")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One parked event of one lane."""

    lane: str
    event_id: UUID
    position: Position
    stream_id: str
    stream_version: int
    event_type: str
    error: str
    payload: dict[str, Any]
    blocked_by: UUID | None = None
    status: str = "parked"
    parked_at: datetime | None = None

    @classmethod
    def of(
        cls, lane: str, envelope: EventEnvelope, error: str, blocked_by: UUID | None = None
    ) -> DeadLetter:
        return cls(
            lane=lane,
            event_id=envelope.event_id,
            position=envelope.position,
            stream_id=envelope.stream_id,
            stream_version=envelope.stream_version,
            event_type=envelope.event_type,
            error=error,
            payload={"data": envelope.data, "metadata": envelope.metadata},
            blocked_by=blocked_by,
            parked_at=datetime.now(UTC),
        )


class DeadLetterStore(ABC):
    """Where lanes park events.

    ``park`` is idempotent by ``(lane, event_id)``; parking an event marked ``retry`` parks it
    again (the retry failed). ``clear`` (a rebuild) keeps ``skipped`` letters: an operator's
    decision to skip an event outlives rebuilds. Statuses: ``parked`` (blocks its stream),
    ``retry`` (released: applied again when its stream is next folded), ``resolved`` (a retry
    succeeded), ``skipped`` (applied as ignored from then on).
    """

    @abstractmethod
    async def park(self, letters: list[DeadLetter]) -> None: ...

    @abstractmethod
    async def find(self, lane: str | None = None, status: str = "parked") -> list[DeadLetter]: ...

    @abstractmethod
    async def set_status(self, lane: str, event_ids: list[UUID], status: str) -> int: ...

    @abstractmethod
    async def clear(self, lane: str) -> None: ...

    async def blocked_keys(self, lane: str) -> set[str]:
        """Streams with a parked event: their later events are parked behind it."""
        return {d.stream_id for d in await self.find(lane, "parked")}

    async def count(self, lane: str) -> int:
        return len(await self.find(lane, "parked"))


class InMemoryDeadLetters(DeadLetterStore):
    def __init__(self) -> None:
        self.letters: dict[tuple[str, UUID], DeadLetter] = {}

    async def park(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            key = (letter.lane, letter.event_id)
            known = self.letters.get(key)
            if known is None or known.status == "retry":
                self.letters[key] = letter

    async def find(self, lane: str | None = None, status: str = "parked") -> list[DeadLetter]:
        found = [
            d
            for d in self.letters.values()
            if (lane is None or d.lane == lane) and (status == "any" or d.status == status)
        ]
        return sorted(found, key=lambda d: d.position)

    async def set_status(self, lane: str, event_ids: list[UUID], status: str) -> int:
        changed = 0
        for event_id in event_ids:
            letter = self.letters.get((lane, event_id))
            if letter is not None:
                self.letters[(lane, event_id)] = replace(letter, status=status)
                changed += 1
        return changed

    async def clear(self, lane: str) -> None:
        for key, letter in list(self.letters.items()):
            if key[0] == lane and letter.status != "skipped":
                del self.letters[key]
