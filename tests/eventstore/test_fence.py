"""The visibility fence against the real Postgres: a slow earlier writer, an unrelated open
transaction, the fence age, and a restored log.

A reader that trusted ``global_position`` alone would read B's events (committed first) and
move its checkpoint past A's lower positions, losing them for good when A commits. The fence
(``transaction_id < pg_snapshot_xmin(pg_current_snapshot())``) holds B back until A has ended.
"""

from __future__ import annotations

from contextlib import suppress
from time import monotonic
from uuid import uuid4

import anyio
import asyncpg
import pytest

from core.errors import EventLogRestored, PermanentError
from core.events import NewEvent
from core.eventstore import NO_STREAM
from core.eventstore.postgres import PostgresEventStore
from core.lane import Lane
from core.lookups import StaticLookups
from core.position import START
from core.runner import Runner
from core.testing import InMemorySink
from tests.eventstore.support import PgStoreFactory, event, events, read_all, read_until
from tests.support.tally import OWNERS, TallyProjection

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


class Abort(Exception):
    """Raised inside writer A's transaction to roll it back."""


async def _count(conn: asyncpg.Connection, schema: str, stream: str) -> int:
    value = await conn.fetchval(
        f'SELECT count(*) FROM "{schema}".events WHERE stream_id = $1', stream
    )
    return int(value)


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("held", [1, 1000])
async def test_slow_earlier_writer(
    pg_store_factory: PgStoreFactory,
    pg_conn: asyncpg.Connection,
    namespace: str,
    held: int,
    outcome: str,
) -> None:
    store = await pg_store_factory(poll_interval=60)  # wake-ups here come from NOTIFY only
    await store.append("before-1", [event()], NO_STREAM)
    (first,) = await read_until(store, 1)
    a_open, release = anyio.Event(), anyio.Event()

    async def writer_a() -> None:
        try:
            async with store.transaction() as tx:
                await tx.append("a-1", events(held), NO_STREAM)  # takes A's transaction id
                a_open.set()
                await release.wait()
                if outcome == "rollback":
                    raise Abort
        except Abort:
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer_a)
        await a_open.wait()
        await store.wait_for_new(0)  # listening from here on
        woke_after: list[float] = []

        async def reader_waits() -> None:
            started = monotonic()
            await store.wait_for_new(30)
            woke_after.append(monotonic() - started)

        tg.start_soon(reader_waits)
        await anyio.sleep(0.2)
        await store.append("b-1", events(3), NO_STREAM)  # B commits while A is open
        assert await _count(pg_conn, namespace, "b-1") == 3
        assert await _count(pg_conn, namespace, "a-1") == 0
        with anyio.fail_after(10):
            while not woke_after:  # B's NOTIFY wakes the reader...
                await anyio.sleep(0.01)
        assert await store.read(first.position, 5000) == []  # ...who still sees nothing
        assert await store.head() == first.position
        assert await store.count_between(START, first.position) == 1
        assert await store.fence_age() >= 0.2
        release.set()

    got = await read_until(store, held + 3 if outcome == "commit" else 3, after=first.position)
    expected = (["a-1"] * held if outcome == "commit" else []) + ["b-1"] * 3
    assert [e.stream_id for e in got] == expected
    assert [e.position for e in got] == sorted({e.position for e in got})
    if outcome == "commit":
        a_events, b_events = got[:held], got[held:]
        assert a_events[-1].position.transaction_id < b_events[0].position.transaction_id
        assert a_events[-1].position.global_position < b_events[0].position.global_position
        assert [e.stream_version for e in a_events] == list(range(1, held + 1))
    assert await read_all(store, got[-1].position) == []


async def test_earlier_id_with_later_rows_is_still_read_first(
    pg_store_factory: PgStoreFactory,
) -> None:
    """A takes its id first but writes its rows after B: A's global positions are the higher
    ones, yet A is read first (transaction id orders before global position)."""
    store = await pg_store_factory()
    a_has_id, b_done = anyio.Event(), anyio.Event()

    async def writer_a() -> None:
        async with store.transaction() as tx:
            await tx.append("a-2", [event(1)], NO_STREAM)
            a_has_id.set()
            await b_done.wait()
            await tx.append("a-3", events(2), NO_STREAM)  # rows after B's

    async with anyio.create_task_group() as tg:
        tg.start_soon(writer_a)
        await a_has_id.wait()
        await store.append("b-2", events(2), NO_STREAM)
        assert await store.read(START, 10) == []
        b_done.set()
    got = await read_until(store, 5)
    assert [e.stream_id for e in got] == ["a-2", "a-3", "a-3", "b-2", "b-2"]
    assert got[2].position.global_position > got[3].position.global_position


async def test_any_open_transaction_in_the_cluster_holds_the_fence(
    pg_store_factory: PgStoreFactory, postgres_dsn: str
) -> None:
    """A transaction with an id, on any table of any database, holds every reader back."""
    store = await pg_store_factory()
    other = await asyncpg.connect(postgres_dsn)
    try:
        unrelated = await _hold_the_fence(other)
        await store.append("x-1", events(2), NO_STREAM)
        await anyio.sleep(0.3)
        assert await store.read(START, 10) == []
        assert await store.head() is None
        assert await store.fence_age() >= 0.3
        await unrelated.rollback()
        assert len(await read_until(store, 2)) == 2
    finally:
        await other.close()


async def test_read_only_transactions_do_not_hold_the_fence(
    pg_store_factory: PgStoreFactory, postgres_dsn: str
) -> None:
    store = await pg_store_factory()
    other = await asyncpg.connect(postgres_dsn)
    try:
        reporting = other.transaction(isolation="repeatable_read", readonly=True)
        await reporting.start()
        await other.fetchval("SELECT count(*) FROM pg_class")
        await store.append("y-1", events(2), NO_STREAM)
        assert len(await read_until(store, 2)) == 2
        await reporting.rollback()
    finally:
        await other.close()


async def test_restored_log_is_refused_with_the_remedy(
    pg_store_factory: PgStoreFactory,
    pg_conn: asyncpg.Connection,
    postgres_dsn: str,
    namespace: str,
) -> None:
    """Rows whose transaction ids are at or above the server's next id came from another
    cluster (a logical restore): readers would never see them, so the store refuses to start."""
    store = await pg_store_factory()
    await store.append("old-1", events(2), NO_STREAM)
    xmax = int(
        await pg_conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
    )
    restored = xmax + 1_000_000
    await pg_conn.execute(
        f'INSERT INTO "{namespace}".events (transaction_id, event_id, stream_id, '
        "stream_version, event_type, data) VALUES ($1::text::xid8, $2, 'restored-1', 1, "
        "'Old', '{}')",
        str(restored),
        uuid4(),
    )
    assert [e.stream_id for e in await read_until(store, 2)] == ["old-1", "old-1"]
    await anyio.sleep(0.2)
    assert [e.stream_id for e in await read_all(store)] == ["old-1", "old-1"]  # hidden

    with pytest.raises(EventLogRestored) as caught:
        await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    message = str(caught.value)
    assert isinstance(caught.value, PermanentError)
    assert f"{namespace}.events" in message and str(restored) in message
    assert "pg_resetwal" in message and "docs/event-log.md" in message

    await pg_conn.execute(f"DELETE FROM \"{namespace}\".events WHERE stream_id = 'restored-1'")
    healthy = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
    await healthy.close()


async def test_a_prepared_transaction_holds_the_fence_and_its_age_is_reported(
    pg_store_factory: PgStoreFactory, postgres_dsn: str
) -> None:
    """A two-phase transaction left prepared holds every reader back, with no session open;
    ``fence_age`` reports it so an operator can find and end it."""
    store = await pg_store_factory()
    other = await asyncpg.connect(postgres_dsn)
    name = f"projectionist-test-{uuid4()}"
    try:
        allowed = int(await other.fetchval("SHOW max_prepared_transactions"))
        assert allowed > 0, "restart Postgres with `scripts/services down postgres && up`"
        await other.execute("BEGIN")
        await other.fetchval("SELECT pg_current_xact_id()")
        await other.execute(f"PREPARE TRANSACTION '{name}'")
        await store.append("x-1", events(2), NO_STREAM)
        await anyio.sleep(0.3)
        assert await store.read(START, 10) == []
        assert await store.fence_age() >= 0.3
        await other.execute(f"ROLLBACK PREPARED '{name}'")
        assert len(await read_until(store, 2)) == 2
    finally:
        with suppress(asyncpg.PostgresError):
            await other.execute(f"ROLLBACK PREPARED '{name}'")
        await other.close()


async def _hold_the_fence(conn: asyncpg.Connection) -> asyncpg.transaction.Transaction:
    """An open transaction with an id on an unrelated connection: it appends nothing, so its
    end sends no NOTIFY."""
    held = conn.transaction()
    await held.start()
    await conn.fetchval("SELECT pg_current_xact_id()")  # what any first write does
    return held


async def _notified(store: PostgresEventStore, before: int) -> None:
    with anyio.fail_after(10):
        while store.notifications <= before:
            await store.wait_for_new(0.05)


async def test_a_commit_the_fence_hid_is_read_soon_after_it_moves(
    pg_store_factory: PgStoreFactory, postgres_dsn: str
) -> None:
    """The reader is woken for B's commit while an unrelated transaction holds the fence, so
    its read finds nothing. That transaction's end sends no NOTIFY: before the wake-ups named
    their transaction, the reader slept until the next append or the poll interval (60 s
    here, 1 s by default; the p99 of the benchmark's freshness). Now it looks again, sooner at
    first and then less often, and reads B within moments of the fence moving."""
    store = await pg_store_factory(poll_interval=60)
    await store.wait_for_new(0)  # listening from here on
    other = await asyncpg.connect(postgres_dsn)
    try:
        held = await _hold_the_fence(other)
        seen = store.notifications
        await store.append("hidden-1", events(2), NO_STREAM)
        await _notified(store, seen)
        assert await store.read(START, 10) == []  # behind the fence
        wakes = 0

        async def release() -> None:
            await anyio.sleep(0.5)
            await held.rollback()

        async with anyio.create_task_group() as tg:
            tg.start_soon(release)
            with anyio.fail_after(20):
                while not (found := await store.read(START, 10)):
                    seen = store.notifications
                    await store.wait_for_new(60, seen, after=START)
                    wakes += 1
        assert [e.stream_id for e in found] == ["hidden-1", "hidden-1"]
        assert wakes <= 15, f"{wakes} reads in about 0.5 s: the recheck does not back off"
    finally:
        await other.close()


async def test_a_notification_with_nothing_to_read_costs_a_few_reads(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection, namespace: str
) -> None:
    """A notification naming a transaction that appended nothing (another tool's NOTIFY on
    the channel; appends that insert nothing no longer send one). A reader at the head looks
    again a few times, less and less often, then waits for the poll interval as before: it
    never spins."""
    store = await pg_store_factory(poll_interval=2)
    await store.wait_for_new(0)
    await store.append("dup-1", events(1), NO_STREAM)
    (only,) = await read_until(store, 1)
    seen = store.notifications
    await pg_conn.execute(f"SELECT pg_notify('{namespace}_events', pg_current_xact_id()::text)")
    await _notified(store, seen)
    seen = store.notifications
    wakes, started = 0, monotonic()
    while monotonic() - started < 1.5:
        await store.wait_for_new(60, seen, after=only.position)
        wakes += 1
        assert await store.read(only.position, 10) == []
    assert wakes <= 12, f"{wakes} wake-ups in 1.5 s with nothing to read"


async def test_lanes_at_the_head_read_a_hidden_commit_once_the_fence_moves(
    pg_store_factory: PgStoreFactory, postgres_dsn: str
) -> None:
    """The same through a runner: two lanes on the shared log, their wait passing where they
    have read to. Their poll (60 s) and idle poll (30 s) are far beyond the deadline, so only
    the recheck can bring the event in time."""
    store = await pg_store_factory(poll_interval=60)
    await store.append("tally-1", [NewEvent(event_type="Opened", data={"owner": "o1"})])
    sinks = [InMemorySink(f"fence_{i}") for i in range(2)]
    lanes = [
        Lane(TallyProjection(), s, store, lookups=StaticLookups(OWNERS), idle_poll=30)
        for s in sinks
    ]
    runner = Runner(store, lanes)
    other = await asyncpg.connect(postgres_dsn)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            head = await store.head()
            assert head is not None
            with anyio.fail_after(20):
                while any(ln.checkpoint != head for ln in lanes):
                    await anyio.sleep(0.01)
            held = await _hold_the_fence(other)
            seen = store.notifications
            await store.append(
                "tally-1", [NewEvent(event_type="Added", schema_version=2, data={"amount": 5})]
            )
            await _notified(store, seen)
            await anyio.sleep(0.3)  # the lanes were woken, read nothing, and wait
            assert all(ln.checkpoint == head for ln in lanes)
            await held.rollback()
            moved = monotonic()
            with anyio.fail_after(15):
                while any(ln.checkpoint == head for ln in lanes):
                    await anyio.sleep(0.01)
            took = monotonic() - moved
            tg.cancel_scope.cancel()
    finally:
        await other.close()
    for ln, sink in zip(lanes, sinks, strict=True):
        assert sink.state(ln.target).live_documents()["tally-1"]["total"] == 5
    assert took < 10, f"{took:.1f} s"
