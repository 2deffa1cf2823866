"""The runner's lookup cache: an entity is fetched once per ``seconds`` for every lane."""

from __future__ import annotations

import anyio
import pytest

from core.lookups import CachedLookups, StaticLookups

pytestmark = pytest.mark.anyio

CATALOG = {"customer": {"c1": {"name": "Ada"}, "c2": {"name": "Bo"}}}


async def test_fetched_once_within_the_window_and_again_after_it() -> None:
    inner = StaticLookups(CATALOG)
    cached = CachedLookups(inner, seconds=0.3)
    assert await cached.fetch("customer", {"c1", "c9"}) == {"c1": {"name": "Ada"}}
    # c1 and the absent c9 come from the cache; only c2 is fetched.
    assert await cached.fetch("customer", {"c1", "c2", "c9"}) == dict(CATALOG["customer"])
    assert inner.calls == [("customer", 2), ("customer", 1)]
    inner.data["customer"]["c1"] = {"name": "Ada Renamed"}
    inner.data["customer"]["c9"] = {"name": "Cy"}
    assert (await cached.fetch("customer", {"c1"}))["c1"] == {"name": "Ada"}  # still fresh
    await anyio.sleep(0.35)
    found = await cached.fetch("customer", {"c1", "c9"})
    assert found == {"c1": {"name": "Ada Renamed"}, "c9": {"name": "Cy"}}


async def test_zero_seconds_passes_every_call_through_and_the_size_is_bounded() -> None:
    inner = StaticLookups(CATALOG)
    uncached = CachedLookups(inner, seconds=0)
    for _ in range(3):
        await uncached.fetch("customer", {"c1"})
    assert len(inner.calls) == 3
    small = CachedLookups(StaticLookups(CATALOG), seconds=60, size=1)
    await small.fetch("customer", {"c1"})
    await small.fetch("customer", {"c2"})
    assert len(small._cache) == 1
