"""The core's lane logic against the in-memory store and sinks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from core.deadletters import DeadLetter, InMemoryDeadLetters
from core.errors import CheckpointAheadOfLog, StoreUnavailable
from core.events import NewEvent
from core.eventstore import InMemoryEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.operations import Batch
from core.position import START, Position
from core.retry import Backoff
from core.runner import Runner
from core.sink import Target
from core.strategy import ErrorPolicy, LaneState, Strategy
from core.testing import FlakySink, InMemorySink
from tests.support.tally import OWNERS, TallyProjection, oracle

pytestmark = pytest.mark.anyio


def opened(owner: str = "o1") -> NewEvent:
    return NewEvent(event_type="Opened", data={"owner": owner})


def added(n: int) -> NewEvent:
    return NewEvent(event_type="Added", schema_version=2, data={"amount": n})


async def fill(store: InMemoryEventStore, streams: int = 20, adds: int = 5) -> None:
    for s in range(streams):
        await store.append(f"tally-{s}", [opened(f"o{s % 10}")])
    for round_ in range(adds):
        for s in range(streams):
            await store.append(f"tally-{s}", [added(round_ + s)])
    await store.append("other-1", [NewEvent(event_type="Unrelated")])


def lane(store: InMemoryEventStore, sink: object, **kw: object) -> Lane:
    kw.setdefault("lookups", StaticLookups(OWNERS))
    return Lane(TallyProjection(), sink, store, **kw)  # type: ignore[arg-type]


class RecordingSink(InMemorySink):
    """Records whether each batch was catching up, and calls of ``finish_deferred``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def write(self, target: Target, batch: Batch) -> None:
        self.calls.append("catching up" if batch.catching_up else "at the head")
        await super().write(target, batch)

    async def finish_deferred(self, target: Target) -> None:
        self.calls.append("finish deferred")


async def everything(store: InMemoryEventStore) -> list[object]:
    return [e async for e in store.iterate(START)]


async def test_catch_up_equals_independent_fold() -> None:
    store = InMemoryEventStore()
    await fill(store)
    await store.append("tally-3", [NewEvent(event_type="Closed")])
    sink = InMemorySink()
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=7, catch_up_batch=7))
    await ln.run(until_caught_up=True)
    assert sink.state(ln.target).live_documents() == oracle(await everything(store))
    assert ln.checkpoint == await store.head()
    assert ln.stats.batches > 5


async def test_batches_cut_behind_the_head_say_they_are_catching_up() -> None:
    """A sink may defer reader-facing work on ``catching_up`` batches (DuckDB's snapshots), so
    the flag must be true only while more of the log waits, and false on the batch that
    reaches the head."""

    store = InMemoryEventStore()
    await fill(store)  # 121 events: 17 batches of 7, then 2 events at the head
    sink = RecordingSink()
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=7, catch_up_batch=7))
    await ln.run(until_caught_up=True)
    assert sink.calls == ["catching up"] * 17 + ["at the head"]
    await store.append("tally-1", [added(n) for n in range(5)])  # 126 events: 18 batches of 7
    sink.calls.clear()
    await ln.reset()
    await ln.run(until_caught_up=True)
    assert sink.calls == ["catching up"] * 18 + ["finish deferred"]


async def test_a_lane_halting_after_a_catching_up_batch_lets_the_sink_finish() -> None:
    store = InMemoryEventStore()
    await fill(store)
    await store.append("tally-1", [added(n) for n in range(5)])  # 126 events: 18 batches of 7
    await store.append("tally-2", [NewEvent(event_type="Poison"), added(1)])
    sink = RecordingSink()
    ln = lane(
        store, sink, policy=ErrorPolicy.HALT, strategy=Strategy.immediate(7, catch_up_batch=7)
    )
    await ln.run(until_caught_up=True)
    assert ln.state is LaneState.HALTED
    assert sink.calls == ["catching up"] * 18 + ["finish deferred"]


async def test_upcaster_applies_old_schema_versions() -> None:
    store = InMemoryEventStore()
    await store.append("tally-1", [opened(), NewEvent(event_type="Added", data={"n": 4})])
    sink = InMemorySink()
    ln = lane(store, sink)
    await ln.run(until_caught_up=True)
    assert sink.state(ln.target).live_documents()["tally-1"]["total"] == 4


async def test_halted_lane_does_not_hold_back_others() -> None:
    store = InMemoryEventStore()
    await fill(store, streams=5, adds=2)
    await store.append("tally-2", [NewEvent(event_type="Poison")])
    await store.append("tally-2", [added(100)])
    halting = lane(store, InMemorySink("halting"), policy=ErrorPolicy.HALT)
    others = [lane(store, InMemorySink(f"ok{i}"), policy=ErrorPolicy.PARK) for i in range(3)]
    runner = Runner(store, [halting, *others])
    with anyio.fail_after(10):
        await runner.run(until_caught_up=True)
    assert halting.state is LaneState.HALTED
    poison = [e for e in await everything(store) if e.event_type == "Poison"][0]
    assert halting.halted_at == poison.position
    assert halting.checkpoint is not None and halting.checkpoint < poison.position
    assert "poisoned on purpose" in (halting.stats.last_error or "")
    head = await store.head()
    for other in others:
        assert other.state is LaneState.IDLE
        assert other.checkpoint == head


async def test_parked_event_holds_its_keys_followers() -> None:
    store = InMemoryEventStore()
    await fill(store, streams=3, adds=1)
    await store.append("tally-1", [NewEvent(event_type="Poison")])
    await store.append("tally-1", [added(50)])
    await store.append("tally-2", [added(7)])
    sink = InMemorySink()
    ln = lane(store, sink, policy=ErrorPolicy.PARK)
    await ln.run(until_caught_up=True)
    parked = await ln.dead_letters.find(ln.name)
    assert [d.event_type for d in parked] == ["Poison", "Added"]
    assert parked[1].blocked_by == parked[0].event_id
    docs = sink.state(ln.target).live_documents()
    assert docs["tally-1"]["count"] == 1  # the Added(50) behind the poison is not applied
    assert docs["tally-2"]["count"] == 2
    assert ln.checkpoint == await store.head()


async def test_transient_failures_retry_to_success_without_doubling() -> None:
    store = InMemoryEventStore()
    await fill(store)
    sink = FlakySink(fail_before=[1, 2], fail_after_data=[4], ambiguous=[6])
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=10, catch_up_batch=10))
    ln.backoff = type(ln.backoff)(base=0.001, cap=0.01)
    await ln.run(until_caught_up=True)
    assert sink.state(ln.target).live_documents() == oracle(await everything(store))
    assert ln.stats.retries == 3  # the ambiguous commit had landed: no retry


async def test_replayed_batches_change_nothing() -> None:
    store = InMemoryEventStore()
    await fill(store)
    sink = InMemorySink()
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=9, catch_up_batch=9))
    await ln.run(until_caught_up=True)
    once = sink.state(ln.target).live_documents()
    stored = dict(sink.state(ln.target).documents)
    # A crash that lost every checkpoint: the same sink sees the whole log again, folded this
    # time with other lookups: a replayed write that got past the version guard would show.
    sink.state(ln.target).checkpoint = None
    renamed = {"owner": {k: {"name": f"Renamed {k}"} for k in OWNERS["owner"]}}
    again = Lane(
        TallyProjection(),
        sink,
        store,
        lookups=StaticLookups(renamed),
        strategy=Strategy.immediate(max_batch=13, catch_up_batch=13),
    )
    await again.run(until_caught_up=True)
    assert sink.state(ln.target).live_documents() == once
    assert sink.state(ln.target).documents == stored
    assert again.stats.events == len(await everything(store))
    assert again.checkpoint == await store.head()
    # Every stream starts in the replayed log, so nothing was loaded: the renamed documents
    # reached the sink, and its version guard alone kept what was stored.
    assert again.stats.duplicates == 0


async def test_inverted_stream_order_is_repaired_from_the_store() -> None:
    store = InMemoryEventStore()
    # B takes its transaction id first (writing another stream), then appends tally-1 v2
    # after A committed tally-1 v1: in fence order, v2 comes before v1.
    async with store.transaction() as b:
        await b.append("other-x", [NewEvent(event_type="Unrelated")])
        await store.append("tally-1", [opened()])
        await b.append("tally-1", [added(5)], expected_version=1)
    order = [(e.stream_id, e.stream_version) for e in await everything(store)]
    assert order.index(("tally-1", 2)) < order.index(("tally-1", 1))
    sink = InMemorySink()
    ln = lane(store, sink)
    await ln.run(until_caught_up=True)
    assert sink.state(ln.target).live_documents() == oracle(await everything(store))
    assert ln.stats.gaps_repaired == 1
    assert ln.stats.duplicates == 1


async def test_shutdown_mid_run_keeps_checkpoint_true() -> None:
    store = InMemoryEventStore()
    await fill(store, streams=50, adds=10)
    sink = InMemorySink()
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=5, catch_up_batch=5))
    with anyio.move_on_after(0):
        await ln.run()
    async with anyio.create_task_group() as group:
        group.start_soon(ln.run)
        await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    state = sink.state(ln.target)
    cp = state.checkpoint
    upto = [e async for e in store.iterate(START) if cp is not None and e.position <= cp]
    assert state.live_documents() == oracle(upto)
    resumed = lane(store, sink, strategy=Strategy.immediate(max_batch=50, catch_up_batch=50))
    await resumed.run(until_caught_up=True)
    assert state.live_documents() == oracle(await everything(store))


async def test_wait_for_read_your_writes() -> None:
    store = InMemoryEventStore()
    sink = InMemorySink()
    ln = lane(store, sink)
    ln.idle_poll = 0.05
    async with anyio.create_task_group() as group:
        group.start_soon(ln.run)
        await store.append("tally-9", [opened()])
        head = await store.head()
        assert head is not None
        assert await ln.wait_for(head, timeout=5)
        assert "tally-9" in sink.state(ln.target).live_documents()
        group.cancel_scope.cancel()


async def test_rebuild_equals_incremental() -> None:
    store = InMemoryEventStore()
    await fill(store)
    sink = InMemorySink()
    ln = lane(store, sink)
    runner = Runner(store, [ln])
    await runner.run(until_caught_up=True)
    incremental = sink.state(ln.target).live_documents()
    await runner.rebuild(ln.name)
    assert sink.state(ln.target).live_documents() == incremental


async def test_batch_strategy_flushes_on_request_only() -> None:
    store = InMemoryEventStore()
    await fill(store, streams=3, adds=1)
    sink = InMemorySink()
    ln = lane(store, sink, strategy=Strategy.batch(interval=3600))
    ln.idle_poll = 0.02
    async with anyio.create_task_group() as group:
        group.start_soon(ln.run)
        await anyio.sleep(0.2)
        assert sink.state(ln.target).checkpoint is None
        ln.request_flush()
        with anyio.fail_after(5):
            while sink.state(ln.target).checkpoint is None:
                await anyio.sleep(0.01)
        group.cancel_scope.cancel()
    assert sink.state(ln.target).live_documents() == oracle(await everything(store))


async def test_skipped_dead_letter_is_applied_as_ignored_and_outlives_rebuilds() -> None:
    store = InMemoryEventStore()
    await store.append("tally-1", [opened(), NewEvent(event_type="Poison"), added(5)])
    sink = InMemorySink()
    ln = lane(store, sink, policy=ErrorPolicy.PARK)
    await ln.run(until_caught_up=True)
    parked = await ln.dead_letters.find(ln.name)
    assert [d.event_type for d in parked] == ["Poison", "Added"]
    assert sink.state(ln.target).live_documents()["tally-1"]["count"] == 0

    # Retrying the poison parks it again: the handler still fails.
    await ln.dead_letters.set_status(ln.name, [parked[0].event_id], "retry")
    await ln.dead_letters.set_status(ln.name, [parked[1].event_id], "retry")
    await store.append("tally-1", [added(1)])
    again = lane(store, sink, policy=ErrorPolicy.PARK, dead_letters=ln.dead_letters)
    await again.run(until_caught_up=True)
    assert [d.status for d in await ln.dead_letters.find(ln.name, "any")] == [
        "parked",
        "parked",
        "parked",
    ]

    # Skipping it lets the stream go on: the held events are applied, in order.
    letters = await ln.dead_letters.find(ln.name)
    await ln.dead_letters.set_status(ln.name, [letters[0].event_id], "skipped")
    await ln.dead_letters.set_status(ln.name, [d.event_id for d in letters[1:]], "retry")
    await store.append("tally-1", [added(10)])
    third = lane(store, sink, policy=ErrorPolicy.PARK, dead_letters=ln.dead_letters)
    await third.run(until_caught_up=True)
    doc = sink.state(ln.target).live_documents()["tally-1"]
    assert (doc["count"], doc["total"]) == (3, 16)
    statuses = sorted(d.status for d in await ln.dead_letters.find(ln.name, "any"))
    assert statuses == ["resolved", "resolved", "skipped"]

    # A rebuild keeps the operator's decision.
    runner = Runner(store, [third])
    await runner.rebuild(third.name)
    assert sink.state(ln.target).live_documents()["tally-1"] == doc


async def test_landed_commit_whose_answer_and_reread_are_lost_is_not_a_conflict() -> None:
    from core.errors import StoreUnavailable

    class LostAnswers(FlakySink):
        reread_failures = 1

        async def read_checkpoint(self, target: object) -> object:  # type: ignore[override]
            if self.calls >= 2 and self.reread_failures:
                self.reread_failures -= 1
                raise StoreUnavailable("the re-read is lost too")
            return await super().read_checkpoint(target)  # type: ignore[arg-type]

    store = InMemoryEventStore()
    await fill(store)
    sink = LostAnswers(ambiguous=[2])
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=10, catch_up_batch=10))
    ln.backoff = type(ln.backoff)(base=0.001, cap=0.01)
    await ln.run(until_caught_up=True)
    assert ln.state is LaneState.IDLE
    assert sink.state(ln.target).live_documents() == oracle(await everything(store))


class DownSink(InMemorySink):
    """A store that stays down: every write fails transiently, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.delay = delay
        self.attempts = 0
        self.finished = 0

    async def write(self, target: object, batch: object) -> None:  # type: ignore[override]
        self.attempts += 1
        await anyio.sleep(self.delay)
        self.finished += 1
        raise StoreUnavailable("the store is down")


async def test_a_stop_is_not_held_up_by_a_store_that_stays_down() -> None:
    """Cancelled while retrying a flush, the lane stops between attempts, promptly; an attempt
    in flight when the stop comes is finished, never cut in the middle."""
    store = InMemoryEventStore()
    await fill(store)
    sink = DownSink(delay=0.3)
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=10))
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(ln.run)
            with anyio.fail_after(5):
                while sink.attempts < 3:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.1)  # an attempt is in flight
            stopped_at = anyio.current_time()
            group.cancel_scope.cancel()
    assert anyio.current_time() - stopped_at < 1.0
    assert sink.finished == sink.attempts  # the attempt in flight ran to its end
    assert sink.state(ln.target).checkpoint is None


async def test_a_stop_lets_a_healthy_flush_finish() -> None:
    """Cancelled during the write of a healthy store, the flush completes and the checkpoint
    moves with its data."""

    class SlowSink(InMemorySink):
        started = anyio.Event()

        async def write(self, target: object, batch: object) -> None:  # type: ignore[override]
            self.started.set()
            await anyio.sleep(0.3)
            await super().write(target, batch)  # type: ignore[arg-type]

    store = InMemoryEventStore()
    await fill(store)
    sink = SlowSink()
    ln = lane(store, sink, strategy=Strategy.immediate(max_batch=1000))
    async with anyio.create_task_group() as group:
        group.start_soon(ln.run)
        await sink.started.wait()
        group.cancel_scope.cancel()
    stored = sink.state(ln.target)
    assert stored.checkpoint == await store.head()
    assert stored.live_documents() == oracle(await everything(store))


async def test_a_lane_whose_checkpoint_is_ahead_of_the_log_refuses_to_start() -> None:
    """After a failover that lost commits, or a restore to an earlier point, the checkpoint
    lies beyond the log: reading on would skip every event appended below it."""
    store = InMemoryEventStore()
    await fill(store, streams=2, adds=1)
    sink = InMemorySink()
    ln = lane(store, sink)
    head = await store.head()
    assert head is not None
    sink.state(ln.target).checkpoint = Position(head.transaction_id + 50, 1)
    with pytest.raises(CheckpointAheadOfLog, match="rebuild"):
        await ln.run(until_caught_up=True)
    sink.state(ln.target).checkpoint = head  # the same lane at a reachable checkpoint runs
    await ln.run(until_caught_up=True)
    assert ln.checkpoint == head


def poison() -> NewEvent:
    return NewEvent(event_type="Poison")


async def test_a_stop_between_parking_and_writing_parks_no_earlier_event() -> None:
    """The dead letters commit before the sink's batch: a stop between the two replays the
    stream's earlier events with its parked event known. They are applied, not held behind
    it, and the parked event met again is not parked twice."""
    store = InMemoryEventStore()
    await store.append("tally-1", [opened(), added(5), poison(), added(7)])
    letters = InMemoryDeadLetters()
    down = FlakySink(fail_before=range(1, 10_000))
    first = lane(store, down, policy=ErrorPolicy.PARK, dead_letters=letters)
    first.backoff = Backoff(base=0.01, cap=0.02)
    async with anyio.create_task_group() as group:
        group.start_soon(first.run)
        with anyio.fail_after(5):
            while down.calls < 2:  # parked, then the write failed: stopped during its retries
                await anyio.sleep(0.005)
        group.cancel_scope.cancel()
    assert [d.stream_version for d in await letters.find(first.name)] == [3, 4]
    sink = InMemorySink()
    again = lane(store, sink, policy=ErrorPolicy.PARK, dead_letters=letters)
    await again.run(until_caught_up=True)
    doc = sink.state(again.target).live_documents()["tally-1"]
    assert (doc["count"], doc["total"]) == (1, 5)
    assert [(d.stream_version, d.status) for d in await letters.find(again.name, "any")] == [
        (3, "parked"),
        (4, "parked"),
    ]


class OneLetterAnEvent(InMemoryDeadLetters):
    """Refuses a call that parks one event twice, as the Postgres store's one statement does
    (an upsert may not touch a row twice)."""

    async def park(self, letters: list[DeadLetter]) -> None:
        ids = [d.event_id for d in letters]
        assert len(ids) == len(set(ids)), "one park() call parks an event twice"
        await super().park(letters)


async def test_a_poison_read_early_by_a_gap_repair_is_parked_once() -> None:
    """Fence order puts v3 before v2 (a transaction that took its id early); the gap repair
    reads v2, a poison, and parks it; v2's own turn in the log is then a no-op."""
    store = InMemoryEventStore()
    await store.append("tally-1", [opened()])
    async with store.transaction() as early:
        await early.append("other-x", [NewEvent(event_type="Unrelated")])
        await store.append("tally-1", [poison()])  # v2, committed first, a later id
        await early.append("tally-1", [added(5)], expected_version=2)  # v3, the earlier id
    letters = OneLetterAnEvent()
    ln = lane(store, InMemorySink(), policy=ErrorPolicy.PARK, dead_letters=letters)
    await ln.run(until_caught_up=True)
    assert sorted(d.stream_version for d in await letters.find(ln.name)) == [2, 3]
    assert ln.stats.parked == 2


async def test_an_upcaster_that_fails_is_the_events_failure_under_the_park_policy() -> None:
    """Not the runner's crash: the event is parked, naming itself, and other streams go on."""
    store = InMemoryEventStore()
    broken = NewEvent(event_type="Added", schema_version=1, data={"x": 3})  # no "n"
    await store.append("tally-1", [opened(), broken])
    await store.append("tally-2", [opened(), added(4)])
    sink = InMemorySink()
    ln = lane(store, sink, policy=ErrorPolicy.PARK)
    await Runner(store, [ln]).run(until_caught_up=True)
    assert ln.state is LaneState.IDLE
    assert sink.state(ln.target).live_documents()["tally-2"]["total"] == 4
    [letter] = await ln.dead_letters.find(ln.name)
    assert letter.stream_id == "tally-1" and "KeyError" in letter.error
    assert "upcaster" in letter.error and str(letter.event_id) in letter.error


async def test_the_rate_is_the_last_flushes_events_over_their_time() -> None:
    """Not every event since the start over the last 100 flushes' time (which grew without
    bound as the lane ran)."""
    store = InMemoryEventStore()
    await fill(store, streams=30, adds=10)  # 331 events
    ln = lane(store, InMemorySink(), strategy=Strategy.immediate(max_batch=2, catch_up_batch=2))
    await ln.run(until_caught_up=True)
    stats = ln.stats
    assert stats.batches > 100 and len(stats.batch_events) == 100
    expected = sum(stats.batch_events) / sum(stats.batch_seconds)
    assert stats.rate() == pytest.approx(expected)
    assert sum(stats.batch_events) <= 200 < stats.events


class BrokenLookups(StaticLookups):
    """A provider with a bug for one owner: the same call fails the same way every time."""

    def __init__(self, error: Exception) -> None:
        super().__init__(OWNERS)
        self.error = error
        self.calls = 0

    async def fetch(self, source: str, ids: Any) -> Any:
        self.calls += 1
        if "o7" in ids:
            raise self.error
        return await super().fetch(source, ids)


async def test_a_lookup_provider_bug_stops_the_lane_instead_of_looping() -> None:
    store = InMemoryEventStore()
    await store.append("tally-2", [opened("o7")])
    broken = BrokenLookups(TypeError("unhashable type: 'list'"))
    ln = lane(store, InMemorySink(), lookups=broken, policy=ErrorPolicy.PARK)
    ln.backoff = Backoff(base=0.001, cap=0.002)
    with anyio.fail_after(5):
        await Runner(store, [ln]).run(until_caught_up=True)
    assert ln.state is LaneState.HALTED and broken.calls == 1
    assert "TypeError" in (ln.stats.last_error or "") and "BrokenLookups" in (
        ln.stats.last_error or ""
    )


async def test_a_lookup_that_cannot_connect_is_retried() -> None:
    store = InMemoryEventStore()
    await store.append("tally-2", [opened("o7")])
    broken = BrokenLookups(ConnectionRefusedError("catalog down"))
    ln = lane(store, InMemorySink(), lookups=broken)
    ln.backoff = Backoff(base=0.001, cap=0.002)
    async with anyio.create_task_group() as group:
        group.start_soon(ln.run)
        with anyio.fail_after(5):
            while broken.calls < 3:
                await anyio.sleep(0.01)
        assert ln.state is LaneState.RETRYING
        group.cancel_scope.cancel()


async def test_skipping_the_blocker_releases_the_events_held_behind_it() -> None:
    """Through the dead-letter store alone (not the CLI): at the next start the letters held
    behind a skipped one are retried, and the stream's next event applies them."""
    store = InMemoryEventStore()
    await store.append("tally-1", [opened(), poison(), added(5)])
    letters = InMemoryDeadLetters()
    sink = InMemorySink()
    first = lane(store, sink, policy=ErrorPolicy.PARK, dead_letters=letters)
    await first.run(until_caught_up=True)
    (poisoned,) = [d for d in await letters.find(first.name) if d.blocked_by is None]
    await letters.set_status(first.name, [poisoned.event_id], "skipped")
    await store.append("tally-1", [added(7)])
    again = lane(store, sink, policy=ErrorPolicy.PARK, dead_letters=letters)
    await again.run(until_caught_up=True)
    doc = sink.state(again.target).live_documents()["tally-1"]
    assert (doc["count"], doc["total"]) == (2, 12)
    statuses = {d.stream_version: d.status for d in await letters.find(first.name, "any")}
    assert statuses == {2: "skipped", 3: "resolved"}


async def test_an_event_that_fails_itself_in_a_replay_is_held_behind_nothing() -> None:
    """A replay meets an earlier event of a stream whose later event is parked, and it fails
    on its own: its letter named the later one as its blocker, so skipping that one would
    have released the real poison."""
    store = InMemoryEventStore()
    await store.append("tally-1", [opened(), poison(), added(5), added(6)])
    envelopes = await everything(store)
    letters = InMemoryDeadLetters()
    ln = lane(store, InMemorySink(), policy=ErrorPolicy.PARK, dead_letters=letters)
    await letters.park([DeadLetter.of(ln.name, envelopes[3], "parked by an earlier run")])
    await ln.run(until_caught_up=True)
    by_version = {d.stream_version: d for d in await letters.find(ln.name, "any")}
    assert by_version[2].blocked_by is None and "poisoned" in by_version[2].error
    assert by_version[3].blocked_by == envelopes[1].event_id


async def test_a_rebuilding_lane_is_shown_rebuilding_while_it_works() -> None:
    """``Lane.run`` sets running and idle as it goes: status showed a rebuild as running."""
    store = InMemoryEventStore()
    await fill(store, streams=5, adds=2)
    seen: list[str] = []

    class Watching(InMemorySink):
        async def write(self, target: Target, batch: Batch) -> None:
            seen.append(ln.shown_state())
            await super().write(target, batch)

    ln = lane(store, Watching(), strategy=Strategy.immediate(max_batch=4, catch_up_batch=4))
    await Runner(store, [ln]).rebuild(ln.name)
    assert seen and set(seen) == {"rebuilding"}
    assert ln.shown_state() == "idle"  # the rebuild is over
