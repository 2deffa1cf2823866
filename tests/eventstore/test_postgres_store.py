"""What only the Postgres store has: its schema, the jsonb encoding, its connection handling,
the NOTIFY listener and its polling fallback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from time import monotonic
from typing import Any

import anyio
import asyncpg
import pytest

from core.deadletters import DeadLetter
from core.deadletters_pg import PostgresDeadLetters
from core.errors import (
    AmbiguousCommit,
    CheckpointAheadOfLog,
    ConcurrencyError,
    ConfigurationError,
    InvalidEvent,
    StoreUnavailable,
)
from core.events import NewEvent
from core.eventstore import ANY, NO_STREAM
from core.eventstore.postgres import PostgresEventStore
from core.position import START, Position
from tests.eventstore.support import PgStoreFactory, event, events, read_until

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


async def test_data_and_metadata_are_stored_as_json_objects(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection, namespace: str
) -> None:
    store = await pg_store_factory()
    await store.append("json-1", [event(7, tags=["a"], price="12.50")], NO_STREAM)
    row = await pg_conn.fetchrow(
        f"SELECT jsonb_typeof(data) AS d, jsonb_typeof(metadata) AS m, data->>'price' AS p "
        f'FROM "{namespace}".events'
    )
    assert row is not None
    assert (row["d"], row["m"], row["p"]) == ("object", "object", "12.50")


@asynccontextmanager
async def held_open(
    store: PostgresEventStore, stream_id: str, events: list[NewEvent]
) -> AsyncIterator[None]:
    """A transaction that has appended ``events`` to the new stream ``stream_id`` and stays
    open, holding their keys, until the block ends; then it commits."""
    holding, release = anyio.Event(), anyio.Event()

    async def hold() -> None:
        async with store.transaction() as tx:
            await tx.append(stream_id, events, NO_STREAM)
            holding.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold)
        await holding.wait()
        try:
            yield
        finally:
            release.set()


@pytest.mark.parametrize("expected", [NO_STREAM, ANY], ids=["no-stream", "any"])
async def test_losing_a_race_raises_even_when_the_pool_is_exhausted(
    pg_store_factory: PgStoreFactory, expected: int | None
) -> None:
    """The loser's transaction is aborted while it holds the pool's only connection; reading
    the stream's actual version must not wait for that pool."""
    winner = await pg_store_factory()
    loser = await pg_store_factory(pool_size=1)
    outcome: list[ConcurrencyError] = []

    async def lose() -> None:
        try:
            await loser.append("race-1", [event(2)], expected)
        except ConcurrencyError as exc:
            outcome.append(exc)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg, held_open(winner, "race-1", [event(1)]):
            tg.start_soon(lose)
            await anyio.sleep(0.3)  # the loser now waits on the (stream, version) key
            assert outcome == []
    assert [(e.stream_id, e.expected, e.actual) for e in outcome] == [("race-1", expected, 1)]
    assert [e.data["n"] for e in await loser.read_stream("race-1")] == [1]


async def test_schema_name_is_validated(postgres_dsn: str) -> None:
    with pytest.raises(ConfigurationError, match=r"event_store\.schema"):
        await PostgresEventStore.connect(postgres_dsn, schema='x"; DROP TABLE y; --')


async def test_unreachable_server_is_store_unavailable_without_the_password() -> None:
    with pytest.raises(StoreUnavailable) as caught:
        await PostgresEventStore.connect(
            "postgresql://app:s3cret-pw@127.0.0.1:1/nowhere", schema="nowhere"
        )
    assert "s3cret-pw" not in str(caught.value)


async def test_migration_is_idempotent_and_safe_concurrently(
    pg_store_factory: PgStoreFactory,
) -> None:
    async def start() -> None:
        await pg_store_factory()

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(start)
    store = await pg_store_factory()
    await store.migrate()
    await store.append("mig-1", events(2), NO_STREAM)
    await store.migrate()
    assert len(await read_until(store, 2)) == 2


async def test_a_changed_schema_is_migrated_at_the_next_start(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection, namespace: str
) -> None:
    """The DDL runs again when its stamp (the schema's comment) differs from the code's."""
    await pg_store_factory()
    await pg_conn.execute(f'DROP INDEX "{namespace}".events_position_idx')
    await pg_store_factory()  # stamp unchanged: nothing runs
    exists = f"SELECT to_regclass('\"{namespace}\".events_position_idx') IS NOT NULL"
    assert await pg_conn.fetchval(exists) is False
    await pg_conn.execute(f"COMMENT ON SCHEMA \"{namespace}\" IS 'from an older version'")
    await pg_store_factory()
    assert await pg_conn.fetchval(exists) is True


async def test_wait_for_new_polls_when_the_listener_cannot_connect(
    pg_store_factory: PgStoreFactory, namespace: str
) -> None:
    """No NOTIFY arrives (the listener's server is unreachable): the poll still wakes readers."""
    store = await pg_store_factory()
    deaf = PostgresEventStore(
        store.pool, "postgresql://postgres@127.0.0.1:1/none", namespace, poll_interval=0.3
    )
    await store.append("poll-1", [event()], NO_STREAM)
    started = monotonic()
    await deaf.wait_for_new(30)
    assert 0.25 < monotonic() - started < 5.0
    assert len(await read_until(deaf, 1)) == 1


async def test_starting_a_store_does_not_lock_out_open_writers(
    pg_store_factory: PgStoreFactory, postgres_dsn: str, namespace: str
) -> None:
    """A runner (re)starting while an application transaction is appending must neither wait
    for it nor make later appends and reads queue behind a table lock."""
    store = await pg_store_factory()
    async with store.transaction() as tx:
        await tx.append("open-1", [event()], NO_STREAM)
        with anyio.fail_after(5):
            again = await PostgresEventStore.connect(postgres_dsn, schema=namespace)
            await again.append("open-2", [event()], NO_STREAM)
            await again.read(START, 10)
            await again.close()


async def _waiting_on_a_key(conn: asyncpg.Connection, since: float) -> int:
    """The pid of the one backend waiting on a lock (a unique key), once there is one."""
    while True:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database() LIMIT 1"
        )
        if pid is not None:
            return int(pid)
        assert monotonic() - since < 10, "no append ever waited on the held key"
        await anyio.sleep(0.02)


@pytest.mark.parametrize("case", ["same-batch", "overlapping-batch", "id-in-another-stream"])
async def test_an_append_alone_meeting_its_own_ids_committed_meanwhile_writes_nothing(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection, case: str
) -> None:
    """``append`` is one statement that commits itself, so it must never write part of a
    batch: when another transaction commits some of its ids while it waits, it writes none
    and reports the batch as already there (the same batch) or refuses it (another one, or an
    id already used by another stream: an insert that skipped that one row would have
    committed the rest at the wrong versions)."""
    store = await pg_store_factory()
    batch = events(3)
    first = batch if case == "same-batch" else [batch[0], event(9)]
    held_stream = "elsewhere-1" if case == "id-in-another-stream" else "alone-1"
    outcome: list[object] = []

    async def append() -> None:
        try:
            outcome.append(await store.append("alone-1", batch, ANY))
        except InvalidEvent as exc:
            outcome.append(exc)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg, held_open(store, held_stream, first):
            tg.start_soon(append)
            await _waiting_on_a_key(pg_conn, monotonic())
    stored = [e.event_id for e in await store.read_stream("alone-1")]
    expected = [] if case == "id-in-another-stream" else [e.event_id for e in first]
    assert stored == expected  # nothing of the waiting batch
    if case == "same-batch":
        assert [(r.written, r.next_expected_version) for r in outcome] == [(0, 3)]  # type: ignore[union-attr]
    else:
        assert len(outcome) == 1 and isinstance(outcome[0], InvalidEvent)


async def test_an_append_alone_cut_off_mid_statement_is_an_ambiguous_commit(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection
) -> None:
    """The statement is its own commit: a backend lost while it runs may or may not have
    committed, and the caller is told so (it re-reads, or re-appends: appends are
    idempotent)."""
    store = await pg_store_factory()
    outcome: list[BaseException] = []

    async def append() -> None:
        try:
            await store.append("cut-1", [event(2)], NO_STREAM)
        except (AmbiguousCommit, ConcurrencyError) as exc:
            outcome.append(exc)

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg, held_open(store, "cut-1", [event(1)]):
            tg.start_soon(append)
            pid = await _waiting_on_a_key(pg_conn, monotonic())
            assert await pg_conn.fetchval("SELECT pg_terminate_backend($1)", pid)
            while not outcome:
                await anyio.sleep(0.02)
    assert [type(e) for e in outcome] == [AmbiguousCommit]
    assert [e.data["n"] for e in await store.read_stream("cut-1")] == [1]
    # Retried as the caller is told to: it finds the stream moved on, nothing doubled.
    with pytest.raises(ConcurrencyError):
        await store.append("cut-1", [event(2)], NO_STREAM)


async def test_a_released_connection_goes_back_without_a_reset_round_trip(
    pg_store_factory: PgStoreFactory,
) -> None:
    """core.pgpool: the pool sends no reset query on release (it doubled the round trips of
    every one-statement use). Seen from a session setting that survives the release, which is
    why nothing may leave session state on a pooled connection."""
    store = await pg_store_factory(pool_size=1)
    async with store.pool.acquire() as conn:
        await conn.execute("SET application_name = 'left-behind'")
    assert await store.pool.fetchval("SHOW application_name") == "left-behind"


async def test_a_transaction_left_open_is_still_rolled_back_on_release(
    pg_store_factory: PgStoreFactory, namespace: str
) -> None:
    store = await pg_store_factory(pool_size=1)
    async with store.pool.acquire() as conn:
        await conn.execute("BEGIN")  # not a managed transaction: asyncpg rolls it back
        await conn.execute(
            f'INSERT INTO "{namespace}".lane_status (lane, state, owner) VALUES ($1, $2, $3)',
            "orphan",
            "running",
            "test",
        )
    async with store.pool.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval(f'SELECT count(*) FROM "{namespace}".lane_status') == 0
    await store.append("after-1", [event()], NO_STREAM)  # the connection still works


async def test_a_reader_that_reconnects_to_a_server_behind_it_stops_reading(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection
) -> None:
    """A failover that lost the last commits: the new server hands out transaction ids that
    this store has already read past. Simulated by what the store remembers having read (the
    one thing a real failover changes the other side of); the listener's connection is cut,
    as a failover cuts it. Every read then refuses, naming the remedy, instead of waiting for
    good behind positions the server will hand out again."""
    store = await pg_store_factory(poll_interval=0.2)
    await store.append("fo-1", [event()], NO_STREAM)
    assert len(await read_until(store, 1)) == 1
    await store.wait_for_new(0.01)  # the listener is connected
    assert store._listener is not None
    pid = store._listener.get_server_pid()
    store._highest_read = 1 << 40  # as if read from a server whose ids ran further
    assert await pg_conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    with anyio.fail_after(10):
        while store._listener is not None and not store._listener.is_closed():
            await anyio.sleep(0.02)
        await store.wait_for_new(0.01)  # reconnects, and compares
    with pytest.raises(CheckpointAheadOfLog, match="projectionist rebuild"):
        await store.read(START, 10)


async def test_a_reader_that_reconnects_to_the_same_server_reads_on(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection
) -> None:
    """The check above does not refuse a plain reconnect (the server restarted or the
    connection was cut): the counter is where it was."""
    store = await pg_store_factory(poll_interval=0.2)
    await store.append("rc-1", [event()], NO_STREAM)
    first = await read_until(store, 1)
    await store.wait_for_new(0.01)
    assert store._listener is not None
    assert await pg_conn.fetchval(
        "SELECT pg_terminate_backend($1)", store._listener.get_server_pid()
    )
    with anyio.fail_after(10):
        while store._listener is not None and not store._listener.is_closed():
            await anyio.sleep(0.02)
        await store.wait_for_new(0.01)
    await store.append("rc-1", [event(2)], ANY)
    assert len(await read_until(store, 1, after=first[-1].position)) == 1
    await store.check_reachable(first[-1].position, "lane")
    with pytest.raises(CheckpointAheadOfLog):
        await store.check_reachable(Position(1 << 40, 1), "lane")


async def test_parking_one_event_twice_in_one_call_keeps_one_letter(
    pg_store_factory: PgStoreFactory, namespace: str
) -> None:
    """One upsert statement may not touch a row twice (SQLSTATE 21000): a lane that met one
    poisoned event twice in a batch must not halt on its own dead letters."""
    store = await pg_store_factory()
    await store.append("dl-1", [event()], NO_STREAM)
    [envelope] = await read_until(store, 1)
    letters = PostgresDeadLetters(store.pool, namespace)
    letter = DeadLetter.of("tally@memory", envelope, "poisoned")
    await letters.park([letter, letter])
    assert [d.event_id for d in await letters.find("tally@memory")] == [envelope.event_id]


async def test_an_append_that_writes_nothing_wakes_no_reader(
    pg_store_factory: PgStoreFactory, pg_conn: asyncpg.Connection, namespace: str
) -> None:
    """A losing append (ConcurrencyError) and an idempotent one insert no row: no NOTIFY (it
    woke every reader for nothing) and no transaction id taken for it."""
    store = await pg_store_factory(poll_interval=0.2)
    batch = [event(1)]
    await store.append("quiet-1", batch, NO_STREAM)
    await store.wait_for_new(0.01)  # listening
    await pg_conn.execute(f'LISTEN "{namespace}_events"')
    heard: list[str] = []
    await pg_conn.add_listener(f"{namespace}_events", lambda *args: heard.append(args[-1]))
    before = await pg_conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
    with pytest.raises(ConcurrencyError):
        await store.append("quiet-1", [event(2)], NO_STREAM)
    assert (await store.append("quiet-1", batch, NO_STREAM)).written == 0
    async with store.transaction() as tx:
        assert (await tx.append("quiet-1", batch, NO_STREAM)).written == 0
    await anyio.sleep(0.3)
    after = await pg_conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
    assert heard == [] and after == before
    await store.append("quiet-2", [event(3)], NO_STREAM)
    with anyio.fail_after(5):
        while not heard:
            await anyio.sleep(0.02)


async def test_a_role_that_sees_other_roles_is_not_warned(
    pg_store_factory: PgStoreFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The services script grants pg_monitor (which holds pg_read_all_stats): no warning. A
    role without it is warned at connect that the fence age is blind to other roles (this
    test's role cannot create one to show it)."""
    with caplog.at_level("WARNING", logger="projectionist.eventstore"):
        await pg_store_factory()
    assert "pg_read_all_stats" not in caplog.text


async def test_reads_during_the_listeners_reconnect_do_not_look_lost(
    pg_store_factory: PgStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other lanes read on while the listener reconnects: a commit after the listener's
    snapshot, read before the comparison, made a live server look behind (the chaos test's
    runners halted, "read up to 5675, next transaction id 5673")."""
    store = await pg_store_factory(poll_interval=5)
    await store.append("race-l", [event(1)], NO_STREAM)
    await read_until(store, 1)
    listen = asyncpg.Connection.add_listener

    async def read_on_then_listen(conn: asyncpg.Connection, *args: Any) -> None:
        # after the listener's snapshot, before the comparison
        await store.append("race-l", [event(2)], ANY)
        await read_until(store, 2)
        await listen(conn, *args)

    monkeypatch.setattr(asyncpg.Connection, "add_listener", read_on_then_listen)
    await store.wait_for_new(0.01)
    monkeypatch.undo()
    assert len(await store.read(START, 10)) == 2  # no CheckpointAheadOfLog
