"""Lanes of one fold family fold each event once for all of them (core.fold.SharedFolds), and
only where the shared result is the one each lane would compute itself."""

from __future__ import annotations

from typing import Any

import pytest

from core.events import NewEvent
from core.eventstore import InMemoryEventStore
from core.fold import SHARED_FOLDS
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START
from core.projection import Context, handles
from core.runner import Runner
from core.strategy import Strategy
from core.testing import InMemorySink
from tests.support.tally import OWNERS, Added, TallyProjection, oracle

pytestmark = pytest.mark.anyio


class SharedTally(TallyProjection):
    fold_family = "tests.tally"


class OtherSharedTally(SharedTally):
    name = "tally_other"


class DoublingTally(SharedTally):
    """Same family, but its own handler for Added: never given the others' results."""

    name = "tally_doubling"

    @handles(Added)
    def added(self, doc: dict[str, Any] | None, event: Added, ctx: Context) -> dict[str, Any]:
        assert doc is not None
        return {**doc, "total": doc["total"] + 2 * event.amount, "count": doc["count"] + 1}


RENAMED = {"owner": {k: {"name": f"Renamed {v['name']}"} for k, v in OWNERS["owner"].items()}}


async def fill(store: InMemoryEventStore, streams: int = 40, adds: int = 6) -> None:
    for s in range(streams):
        opened = NewEvent(event_type="Opened", data={"owner": f"o{s % 10}"})
        await store.append(f"tally-{s}", [opened])
    for a in range(adds):
        for s in range(streams):
            added = NewEvent(event_type="Added", schema_version=2, data={"amount": a + s})
            await store.append(f"tally-{s}", [added])


def lane(projection: TallyProjection, name: str, store: InMemoryEventStore, **kw: Any) -> Lane:
    return Lane(
        projection,
        InMemorySink(name),
        store,
        strategy=Strategy.immediate(max_batch=50, catch_up_batch=50),
        **{"lookups": StaticLookups(OWNERS), **kw},
    )


def documents(ln: Lane) -> dict[str, Any]:
    assert isinstance(ln.sink, InMemorySink)
    return ln.sink.state(ln.target).live_documents()


async def test_a_family_folds_each_event_once_and_every_lane_gets_its_own_oracle() -> None:
    store = InMemoryEventStore()
    await fill(store)
    plain = lane(SharedTally(), "a", store)
    other = lane(OtherSharedTally(), "b", store)
    renamed = lane(SharedTally(), "c", store, lookups=StaticLookups(RENAMED))
    doubling = lane(DoublingTally(), "d", store)
    hits = SHARED_FOLDS.hits
    await Runner(store, [plain, other, renamed, doubling]).run(until_caught_up=True)
    events = await store.read(START, 10_000)
    expected = oracle(events)
    assert documents(plain) == expected
    assert documents(other) == expected
    # The renamed lane never took a result computed with other owner names...
    renamed_owner = {k: {**v, "owner": f"Renamed {v['owner']}"} for k, v in expected.items()}
    assert documents(renamed) == renamed_owner
    # ...nor the doubling lane one computed by another handler.
    assert all(documents(doubling)[k]["total"] == 2 * v["total"] for k, v in expected.items())
    # The two plain lanes share everything: one of them folded each event, the other took it.
    assert SHARED_FOLDS.hits - hits >= len([e for e in events if e.stream_id.startswith("tally-")])


async def test_a_lane_without_a_family_folds_for_itself() -> None:
    store = InMemoryEventStore()
    await fill(store, streams=5, adds=2)
    hits = SHARED_FOLDS.hits
    lanes = [lane(TallyProjection(), name, store) for name in ("x", "y")]
    await Runner(store, lanes).run(until_caught_up=True)
    assert SHARED_FOLDS.hits == hits
    assert documents(lanes[0]) == documents(lanes[1]) == oracle(await store.read(START, 100))
