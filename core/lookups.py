"""Enrichment lookups: the runner asks once per batch and source for every id it needs."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Mapping
from time import monotonic
from typing import Any

__all__ = ("CachedLookups", "LookupProvider", "NoLookups", "StaticLookups")


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


_ABSENT = object()


class CachedLookups(LookupProvider):
    """Another provider's answers, reused for ``seconds`` by every lane of a runner.

    At the head of the log each lane looks up the entities of every small batch: without a
    cache that is one round trip per source per batch per lane, the largest part of a lane's
    latency on a busy database. With it, an entity (or its absence) fetched less than
    ``seconds`` ago is not fetched again, so a fold may use a value up to ``seconds`` old:
    lookups already reflect the moment of the fold, not of the event. Lanes of one runner
    then also see the very same values, which lets them share folds (:mod:`core.fold`).
    At most ``size`` entities are kept (the oldest fetched go first). ``seconds <= 0`` passes
    every call through.
    """

    def __init__(self, inner: LookupProvider, seconds: float = 1.0, size: int = 100_000) -> None:
        self.inner = inner
        self.seconds = seconds
        self.size = size
        self._cache: OrderedDict[tuple[str, str], tuple[float, Any]] = OrderedDict()
        self.hits = 0
        self.fetched = 0

    async def fetch(self, source: str, ids: Collection[str]) -> Mapping[str, Any]:
        if self.seconds <= 0:
            return await self.inner.fetch(source, ids)
        now = monotonic()
        out: dict[str, Any] = {}
        missing: list[str] = []
        for entity_id in ids:
            cached = self._cache.get((source, entity_id))
            if cached is not None and now - cached[0] < self.seconds:
                if cached[1] is not _ABSENT:
                    out[entity_id] = cached[1]
            else:
                missing.append(entity_id)
        self.hits += len(ids) - len(missing)
        if missing:
            found = await self.inner.fetch(source, missing)
            self.fetched += len(missing)
            for entity_id in missing:  # stamped when the fetch began: never younger than it is
                key = (source, entity_id)
                self._cache.pop(key, None)
                self._cache[key] = (now, found.get(entity_id, _ABSENT))
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            out.update(found)
        return out
