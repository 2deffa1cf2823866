"""The projection API's declarations, the shared tail and the near-real-time strategy."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from core.errors import ConfigurationError
from core.events import NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.projection import Context, DocumentProjection, handles
from core.strategy import Strategy
from core.testing import InMemorySink
from tests.support.tally import OWNERS, Added, TallyProjection, registry


def test_two_handlers_for_one_event_type_fail_at_class_creation() -> None:
    with pytest.raises(ConfigurationError, match="one handler per event type"):

        class Twice(DocumentProjection):
            name = "twice"
            registry = registry

            @handles(Added)
            def first(self, doc: Any, event: Added, ctx: Context) -> Any:
                return doc

            @handles("Added")
            def second(self, doc: Any, event: Added, ctx: Context) -> Any:
                return doc


@pytest.mark.parametrize("bad", ["Orders", "_orders", "a-b", "x; DROP TABLE y", "", "a" * 49])
def test_projection_names_become_identifiers_so_bad_ones_are_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="lower-case letter first"):
        type("Bad", (DocumentProjection,), {"name": bad, "registry": registry})


@pytest.mark.anyio
async def test_near_real_time_flushes_within_its_delay_not_per_event() -> None:
    store = InMemoryEventStore()
    sink = InMemorySink()
    lane = Lane(
        TallyProjection(),
        sink,
        store,
        lookups=StaticLookups(OWNERS),
        strategy=Strategy.near_real_time(max_delay=0.3, max_batch=10_000),
    )
    lane.idle_poll = 0.05
    async with anyio.create_task_group() as group:
        group.start_soon(lane.run)
        await anyio.sleep(0.1)
        for n in range(20):
            await store.append(f"tally-{n}", [NewEvent(event_type="Opened", data={"owner": "o1"})])
            await anyio.sleep(0.005)
        head = await store.head()
        assert head is not None
        assert await lane.wait_for(head, timeout=5)
        group.cancel_scope.cancel()
    assert lane.stats.batches <= 3  # batched, not one flush per event
