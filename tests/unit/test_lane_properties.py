"""Property-based: random appends, batch sizes, crashes, redeliveries and rebuilds.

Invariant after every clean step: the read model equals a fresh fold of all events up to its
checkpoint. At the end: the incremental read model equals a rebuilt one.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.events import NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch
from core.position import START
from core.sink import Target
from core.strategy import Strategy
from core.testing import InMemorySink
from tests.support.tally import OWNERS, TallyProjection, oracle

pytestmark = pytest.mark.anyio


class Crash(BaseException):
    """The process died: nothing after it runs, nothing in memory survives."""


class CrashingSink(InMemorySink):
    """Crashes on the scheduled write: before it, after the data only, or after the commit."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at: tuple[int, str] | None = None
        self.calls = 0

    async def write(self, target: Target, batch: Batch) -> None:
        self.calls += 1
        mode = self.crash_at[1] if self.crash_at and self.crash_at[0] == self.calls else None
        if mode == "before":
            raise Crash
        if mode == "data_only":
            self.check_checkpoint(target, batch)
            self.apply(target, batch)
            raise Crash
        await super().write(target, batch)
        if mode == "after_commit":
            raise Crash


append = st.tuples(st.just("append"), st.integers(0, 5), st.integers(1, 4))
run = st.tuples(
    st.just("run"),
    st.integers(1, 12),
    st.one_of(
        st.none(),
        st.tuples(st.integers(1, 4), st.sampled_from(["before", "data_only", "after_commit"])),
    ),
)
redeliver = st.tuples(st.just("redeliver"), st.integers(0, 1000), st.just(0))
rebuild = st.tuples(st.just("rebuild"), st.just(0), st.just(0))
actions = st.lists(st.one_of(append, append, run, run, redeliver, rebuild), min_size=1, max_size=25)


async def _everything(store: InMemoryEventStore) -> list[Any]:
    return [e async for e in store.iterate(START)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions)
async def test_lane_invariants_under_random_faults(steps: list[tuple[str, Any, Any]]) -> None:
    store = InMemoryEventStore()
    sink = CrashingSink()
    opened: set[int] = set()
    checkpoints: list[Any] = []
    dirty = False

    def make_lane(batch: int) -> Lane:
        return Lane(
            TallyProjection(),
            sink,
            store,
            lookups=StaticLookups(OWNERS),
            strategy=Strategy.immediate(max_batch=batch, catch_up_batch=batch),
        )

    target = make_lane(1).target
    for kind, a, b in steps:
        if kind == "append":
            events = [] if a in opened else [NewEvent(event_type="Opened", data={"owner": "o1"})]
            opened.add(a)
            events += [
                NewEvent(event_type="Added", schema_version=2, data={"amount": a + i})
                for i in range(b)
            ]
            await store.append(f"tally-{a}", events)
        elif kind == "run":
            sink.calls, sink.crash_at = 0, b
            try:
                await make_lane(a).run(until_caught_up=True)
                dirty = False
            except Crash:
                dirty = dirty or b[1] == "data_only"
        elif kind == "redeliver" and checkpoints:
            sink.state(target).checkpoint = checkpoints[a % len(checkpoints)]
            dirty = True  # the data is ahead of the rewound checkpoint until the next run
        elif kind == "rebuild":
            lane = make_lane(5)
            await lane.reset()
            sink.crash_at = None
            await lane.run(until_caught_up=True)
            dirty = False
        state = sink.state(target)
        if state.checkpoint is not None:
            checkpoints.append(state.checkpoint)
        if not dirty:
            upto = [
                e
                for e in await _everything(store)
                if state.checkpoint and e.position <= state.checkpoint
            ]
            assert state.live_documents() == oracle(upto)
    sink.crash_at = None
    await make_lane(7).run(until_caught_up=True)
    incremental = sink.state(target).live_documents()
    assert incremental == oracle(await _everything(store))
    fresh = InMemorySink()
    rebuilt = Lane(TallyProjection(), fresh, store, lookups=StaticLookups(OWNERS))
    await rebuilt.run(until_caught_up=True)
    assert fresh.state(rebuilt.target).live_documents() == incremental
