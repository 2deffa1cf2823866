"""Enrichment lookups: the runner asks once per batch and source for every id it needs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any

__all__ = ("LookupProvider", "NoLookups", "StaticLookups")


class LookupProvider(ABC):
    """Answers ``fetch(source, ids)`` with the entities found (missing ids are left out).

    A passing failure must raise :class:`core.errors.LookupUnavailable` (the batch is retried);
    a missing entity is not an error here: the handler's ``ctx.lookup`` turns it into a parked
    :class:`core.errors.LookupMissing`.
    """

    @abstractmethod
    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]: ...


class NoLookups(LookupProvider):
    """For projections that enrich nothing."""

    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]:
        return {}


class StaticLookups(LookupProvider):
    """Lookups from dicts, for tests: ``StaticLookups({"customer": {"c-1": {...}}})``."""

    def __init__(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        self.data = {k: dict(v) for k, v in data.items()}
        self.calls: list[tuple[str, int]] = []

    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]:
        self.calls.append((source, len(ids)))
        table = self.data.get(source, {})
        return {i: table[i] for i in ids if i in table}
